"""Where the built kernel libraries are, and loading them (each once per process).

``kernels/build.sh`` writes, for the fused partitioned linear, ``build/kernels/host/libdcx_spl_aten.so``
(the PyTorch ops) and ``libdcx_spl_executorch.so`` (the ExecuTorch kernels), and, for the training
kernels, ``libdcx_train_aten.so`` and ``libdcx_train_executorch.so``; the aarch64 cross build goes
to ``build/kernels/aarch64/``. ``DCX_KERNELS_BUILD_DIR`` overrides ``build/kernels``.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from dcx.errors import DcxError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "kernels" / "build.sh"

_LIBRARIES = {  # kind -> file
    "aten": "libdcx_spl_aten.so",
    "executorch": "libdcx_spl_executorch.so",
    "train_aten": "libdcx_train_aten.so",
    "train_executorch": "libdcx_train_executorch.so",
}
# The ExecuTorch kernel libraries by the name a manifest's ``requires.kernel_libraries`` gives them.
SPL_LIBRARY, TRAINING_LIBRARY = "dcx_spl_executorch", "dcx_train_executorch"
EXECUTORCH_LIBRARIES = {SPL_LIBRARY: "executorch", TRAINING_LIBRARY: "train_executorch"}

_lock = threading.Lock()
_aten_state: dict[str, object] = {"loaded": False, "error": None}
_training_state: dict[str, object] = {"loaded": False, "error": None}
_executorch_loaded: dict[str, str] = {}  # file name -> the path it was loaded from


def build_dir(arch: str = "host") -> Path:
    """build/kernels/<arch> (arch: "host" or "aarch64")."""
    base = Path(os.environ.get("DCX_KERNELS_BUILD_DIR", REPO_ROOT / "build" / "kernels"))
    return base / arch


def library_path(kind: str = "aten", arch: str = "host") -> Path:
    """Path of a kernel library: kind "aten" / "executorch" (the fused partitioned linear: PyTorch
    ops, host only / ExecuTorch kernels) or "train_aten" / "train_executorch" (the training kernels)."""
    if kind not in _LIBRARIES:
        raise DcxError(f"kernel library kind must be one of {sorted(_LIBRARIES)}, got {kind!r}")
    return build_dir(arch) / _LIBRARIES[kind]


def not_built_message(path: Path) -> str:
    return f"dcx kernels are not built ({path} is missing): run `bash {BUILD_SCRIPT.relative_to(REPO_ROOT)}`"


def _load_torch_library(kind: str, state: dict, fake_module: str) -> bool:
    """Load one PyTorch op library and register its fake kernels (importing ``fake_module``)."""
    if state["loaded"]:
        return True
    with _lock:
        if state["loaded"]:
            return True
        path = library_path(kind)
        if not path.is_file():
            state["error"] = not_built_message(path)
            return False
        import importlib

        import torch

        try:
            torch.ops.load_library(str(path))
        except (OSError, RuntimeError) as e:  # a stale or broken build
            state["error"] = f"cannot load {path}: {e}; rebuild with `bash kernels/build.sh`"
            return False
        importlib.import_module(fake_module)
        state["loaded"] = True
        return True


def load_aten_ops() -> bool:
    """Load the fused partitioned linear's PyTorch op library once; True when ``torch.ops.dcx`` is usable."""
    return _load_torch_library("aten", _aten_state, "dcx.kernels._fake")


def load_training_ops() -> bool:
    """Load the training ops' PyTorch library once (after the library that defines the dcx namespace);
    True when ``torch.ops.dcx.linear`` and the other training ops are usable."""
    if not load_aten_ops():
        _training_state["error"] = _aten_state["error"]
        return False
    return _load_torch_library("train_aten", _training_state, "dcx.kernels._training_fake")


def training_load_error() -> str | None:
    return _training_state["error"]  # type: ignore[return-value]


def aten_load_error() -> str | None:
    return _aten_state["error"]  # type: ignore[return-value]


def load_executorch_kernels(path: str | os.PathLike | None = None) -> str:
    """Register the fused partitioned linear's ExecuTorch kernels in this process (see
    ``load_executorch_library``); ``path`` overrides where the library is. Returns the path loaded."""
    return _load_executorch(Path(path) if path is not None else library_path("executorch"))


def load_executorch_library(name: str, path: str | os.PathLike | None = None) -> str:
    """Register the dcx ExecuTorch kernel library a manifest names (``dcx_spl_executorch``,
    ``dcx_train_executorch``) in this process, once. Returns the path loaded."""
    if name not in EXECUTORCH_LIBRARIES:
        raise DcxError(f"unknown dcx kernel library {name!r}; dcx provides {sorted(EXECUTORCH_LIBRARIES)}")
    return _load_executorch(Path(path) if path is not None else library_path(EXECUTORCH_LIBRARIES[name]))


def _load_executorch(target: Path) -> str:
    """``ctypes.CDLL(path, RTLD_GLOBAL)``: the library shares the kernel registry of the executorch
    pybindings (both use the wheel's ``libexecutorch.so``). Idempotent per library file; the same
    file from a second place would register the same ops twice (ExecuTorch aborts): refused."""
    with _lock:
        loaded = _executorch_loaded.get(target.name)
        if loaded is not None:
            if Path(loaded).resolve() != target.resolve():
                raise DcxError(
                    f"the dcx ExecuTorch kernels {target.name} are already loaded from {loaded}; loading {target} too "
                    "would register the same ops twice (ExecuTorch aborts): use one library per process"
                )
            return loaded
        if not target.is_file():
            raise DcxError(not_built_message(target))
        import executorch  # noqa: F401  (make sure the wheel's libexecutorch.so is the one in use)

        ctypes.CDLL(str(target), mode=ctypes.RTLD_GLOBAL)
        _executorch_loaded[target.name] = str(target)
        return str(target)


def executorch_library_for(op: str) -> str | None:
    """The dcx ExecuTorch kernel library that registers ``op`` ("dcx::linear.out"), or None for other ops."""
    if not op.startswith("dcx::"):
        return None
    from dcx.kernels.training_reference import REFERENCES

    base = op.removeprefix("dcx::").split(".")[0]
    return TRAINING_LIBRARY if base in REFERENCES else SPL_LIBRARY


def require_executorch_libraries(operators, artifact: str) -> None:
    """Refuse, in one line naming the library, a program whose dcx operators no loaded library registers
    (ExecuTorch itself would fail at the first call with an error code)."""
    loaded = {Path(p).name for p in _executorch_loaded.values()}
    for op in sorted(set(operators)):
        name = executorch_library_for(op)
        if name and library_path(EXECUTORCH_LIBRARIES[name]).name not in loaded:
            raise DcxError(f"{artifact} needs the dcx kernel library lib{name}.so (it calls {op}), which is not loaded: "
                           f"call dcx.kernels.load_executorch_library({name!r}) first, or pass --kernel-lib lib{name}.so "
                           "to dcx_runner; build it with `bash kernels/build.sh`")

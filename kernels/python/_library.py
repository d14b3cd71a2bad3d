"""Where the built kernel libraries are, and loading them (each once per process).

``kernels/build.sh`` writes ``build/kernels/host/libdcx_spl_aten.so`` (the PyTorch ops) and
``build/kernels/host/libdcx_spl_executorch.so`` (the ExecuTorch kernels); the aarch64 cross build
goes to ``build/kernels/aarch64/``. ``DCX_KERNELS_BUILD_DIR`` overrides ``build/kernels``.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from dcx.errors import DcxError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "kernels" / "build.sh"

_ATEN_LIB = "libdcx_spl_aten.so"
_EXECUTORCH_LIB = "libdcx_spl_executorch.so"

_lock = threading.Lock()
_aten_state: dict[str, object] = {"loaded": False, "error": None}
_executorch_loaded: dict[str, str] = {}


def build_dir(arch: str = "host") -> Path:
    """build/kernels/<arch> (arch: "host" or "aarch64")."""
    base = Path(os.environ.get("DCX_KERNELS_BUILD_DIR", REPO_ROOT / "build" / "kernels"))
    return base / arch


def library_path(kind: str = "aten", arch: str = "host") -> Path:
    """Path of a kernel library: kind "aten" (PyTorch ops, host only) or "executorch"."""
    names = {"aten": _ATEN_LIB, "executorch": _EXECUTORCH_LIB}
    if kind not in names:
        raise DcxError(f"kernel library kind must be 'aten' or 'executorch', got {kind!r}")
    return build_dir(arch) / names[kind]


def not_built_message(path: Path) -> str:
    return f"dcx fused kernels are not built ({path} is missing): run `bash {BUILD_SCRIPT.relative_to(REPO_ROOT)}`"


def load_aten_ops() -> bool:
    """Load the PyTorch op library once; True when ``torch.ops.dcx`` is usable."""
    if _aten_state["loaded"]:
        return True
    with _lock:
        if _aten_state["loaded"]:
            return True
        path = library_path("aten")
        if not path.is_file():
            _aten_state["error"] = not_built_message(path)
            return False
        import torch

        try:
            torch.ops.load_library(str(path))
        except (OSError, RuntimeError) as e:  # a stale or broken build
            _aten_state["error"] = f"cannot load {path}: {e}; rebuild with `bash kernels/build.sh`"
            return False
        from dcx.kernels import _fake  # noqa: F401  (registers the fake kernels)

        _aten_state["loaded"] = True
        return True


def aten_load_error() -> str | None:
    return _aten_state["error"]  # type: ignore[return-value]


def load_executorch_kernels(path: str | os.PathLike | None = None) -> str:
    """Register the dcx ExecuTorch kernels with the ExecuTorch runtime in this process.

    Loads the kernel library with ``ctypes.CDLL(path, RTLD_GLOBAL)`` so that it shares the kernel
    registry of the executorch pybindings (both use the wheel's ``libexecutorch.so``). Idempotent:
    a second call returns the path already loaded; a second *different* library registering the
    same ops would abort the process, so that is refused. Returns the library path.
    """
    target = Path(path) if path is not None else library_path("executorch")
    with _lock:
        if _executorch_loaded:
            loaded = _executorch_loaded["path"]
            if Path(loaded).resolve() != target.resolve():
                raise DcxError(
                    f"the dcx ExecuTorch kernels are already loaded from {loaded}; loading {target} too "
                    "would register the same ops twice (ExecuTorch aborts): use one library per process"
                )
            return loaded
        if not target.is_file():
            raise DcxError(not_built_message(target))
        import executorch  # noqa: F401  (make sure the wheel's libexecutorch.so is the one in use)

        ctypes.CDLL(str(target), mode=ctypes.RTLD_GLOBAL)
        _executorch_loaded["path"] = str(target)
        return str(target)

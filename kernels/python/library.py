"""Where the built kernel libraries are, and loading them (each once per process).

A kernel library (``training``, ``partitioned_linear``: the ``library`` column of kernels/ops.def) is
built by ``kernels/build.sh`` as ``libdcx_<library>_aten.so`` (its PyTorch ops, host only) and
``libdcx_<library>_executorch.so`` (its ExecuTorch kernels) into ``build/kernels/host``, and for
aarch64 into ``build/kernels/aarch64``; ``DCX_KERNELS_BUILD_DIR`` overrides ``build/kernels``. An
installed wheel carries its host build inside itself (``dcx/_native/build/kernels/host``, with the C
sources beside it), and ``dcx build aarch64`` puts the aarch64 build under ``build_root()``. A
manifest's ``requires.kernel_libraries`` names an ExecuTorch library ``dcx_<library>_executorch``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from pathlib import Path

from dcx.kernels.errors import KernelError, KernelsNotBuilt

REPO_ROOT = Path(__file__).resolve().parents[2]  # kernels/python/library.py -> the repository root (dcx.paths uses it)
BUILD_SCRIPT = REPO_ROOT / "kernels" / "build.sh"
CHECKOUT = BUILD_SCRIPT.is_file()  # running from a development checkout (an editable install included)
# The repository root of the native code: the checkout, or the miniature of it an installed wheel carries
# (kernels/, runtimes/native/ and the host part of build/).
SOURCE_ROOT = REPO_ROOT if CHECKOUT else Path(__file__).resolve().parents[1] / "_native"
LIBRARIES = ("partitioned_linear", "training")
KINDS = ("aten", "executorch")

_lock = threading.Lock()
_aten_errors: dict[str, str | None] = {}  # library -> None once loaded, else why it did not load
_executorch_loaded: dict[str, str] = {}  # file name -> the path it was loaded from


def build_root() -> Path:
    """Where native builds go: the checkout's ``build/``; for an installed package, whose folder may be
    read-only, ``$XDG_CACHE_HOME/dcx/<version>/build`` (what ``dcx build aarch64`` writes)."""
    if CHECKOUT:
        return REPO_ROOT / "build"
    from importlib.metadata import version

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dcx" / version("dcx") / "build"


def build_dir(arch: str = "host") -> Path:
    """build/kernels/<arch> (arch: "host" or "aarch64"); an installed package's host build is inside it."""
    override = os.environ.get("DCX_KERNELS_BUILD_DIR")
    if override:
        return Path(override) / arch
    if arch == "host" and not CHECKOUT:
        return SOURCE_ROOT / "build" / "kernels" / "host"
    return build_root() / "kernels" / arch


def build_hint(arch: str = "host") -> str:
    """How to get the kernel libraries for ``arch`` here, as the end of a message."""
    if CHECKOUT:
        return f"run `bash {BUILD_SCRIPT.relative_to(REPO_ROOT)}`"
    return "run `dcx build aarch64`" if arch != "host" else "reinstall dcx: its wheel carries them"


def executorch_library_name(library: str) -> str:
    """The name a manifest gives the ExecuTorch kernel library of ``library``."""
    return f"dcx_{library}_executorch"


def library_path(library: str, kind: str = "aten", arch: str = "host") -> Path:
    """libdcx_<library>_<kind>.so of the build for ``arch``."""
    if library not in LIBRARIES or kind not in KINDS:
        raise KernelError(f"dcx kernel libraries are {list(LIBRARIES)} of kinds {list(KINDS)}, got {library!r}, {kind!r}")
    return build_dir(arch) / f"libdcx_{library}_{kind}.so"


def not_built_message(path: Path, arch: str = "host") -> str:
    return f"dcx kernels are not built ({path} is missing): {build_hint(arch)}"


def load_aten(library: str) -> bool:
    """Load ``libdcx_<library>_aten.so`` once and register its ops' fake kernels (``dcx.kernels.ops``);
    True when ``torch.ops.dcx`` has its ops, else ``load_error(library)`` says why."""
    if _aten_errors.get(library, "") is None:
        return True
    with _lock:
        if library not in _aten_errors:
            _aten_errors[library] = _load_aten(library)
    return _aten_errors[library] is None


def _load_aten(library: str) -> str | None:
    path = library_path(library)
    if not path.is_file():
        return not_built_message(path)
    import torch

    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as e:  # a stale or broken build
        return f"cannot load {path}: {e}; {build_hint()}"
    from dcx.kernels.ops import register_fakes

    register_fakes(library)
    return None


def load_error(library: str) -> str | None:
    """Why ``load_aten(library)`` failed (None when it did not, or was not tried)."""
    return _aten_errors.get(library)


@functools.cache
def native(library: str) -> ctypes.CDLL:
    """The C functions ``libdcx_<library>_aten.so`` exports (base/status.h's DCX_API: the ISA choice,
    the kernels' eligibility), once the library is loaded; ``KernelsNotBuilt`` otherwise."""
    if not load_aten(library):
        raise KernelsNotBuilt(load_error(library))
    return ctypes.CDLL(str(library_path(library)))  # the library torch.ops.load_library opened


def kernel_isa(library: str, name: str | None = None) -> str:
    """The implementation ``library``'s kernels run (portable, x86-64-v3, neon); a name forces one."""
    lib = native(library)
    lib.dcx_isa_name.restype = ctypes.c_char_p
    if name:
        isa = 0 if name == "auto" else lib.dcx_isa_from_name(name.encode())  # 0: DCX_ISA_AUTO
        if isa < 0:
            raise KernelError(f"unknown implementation {name!r} of the dcx kernels; use auto, portable, x86-64-v3 or neon")
        if lib.dcx_set_isa(isa) != 0:
            raise KernelError(f"kernel implementation {name!r} is not available on this build or CPU")
    return lib.dcx_isa_name(lib.dcx_active_isa()).decode()


def load_executorch_library(name: str, path: str | os.PathLike | None = None) -> str:
    """Register the ExecuTorch kernel library a manifest names (``dcx_training_executorch``,
    ``dcx_partitioned_linear_executorch``) in this process, once; ``path`` overrides where it is.
    Returns the path loaded."""
    libraries = {executorch_library_name(lib): lib for lib in LIBRARIES}
    if name not in libraries:
        raise KernelError(f"unknown dcx kernel library {name!r}; dcx provides {sorted(libraries)}")
    return _load_executorch(Path(path) if path is not None else library_path(libraries[name], "executorch"))


def _load_executorch(target: Path) -> str:
    """``ctypes.CDLL(path, RTLD_GLOBAL)``: the library shares the kernel registry of the executorch
    pybindings (both use the wheel's ``libexecutorch.so``). Idempotent per library file; the same
    file from a second place would register the same ops twice (ExecuTorch aborts): refused."""
    with _lock:
        loaded = _executorch_loaded.get(target.name)
        if loaded is not None:
            if Path(loaded).resolve() != target.resolve():
                raise KernelError(
                    f"the dcx ExecuTorch kernels {target.name} are already loaded from {loaded}; loading {target} too "
                    "would register the same ops twice (ExecuTorch aborts): use one library per process"
                )
            return loaded
        if not target.is_file():
            raise KernelsNotBuilt(not_built_message(target))
        import executorch  # noqa: F401  (make sure the wheel's libexecutorch.so is the one in use)

        ctypes.CDLL(str(target), mode=ctypes.RTLD_GLOBAL)
        _executorch_loaded[target.name] = str(target)
        return str(target)


def executorch_library_for(op: str) -> str | None:
    """The ExecuTorch kernel library (its manifest name) that registers ``op`` ("dcx::linear.out"), or
    None for an op that is not dcx's."""
    from dcx.kernels.ops import OPS

    row = OPS.get(op.removeprefix("dcx::").split(".")[0]) if op.startswith("dcx::") else None
    return executorch_library_name(row.library) if row else None


def require_executorch_libraries(operators, artifact: str) -> None:
    """Refuse, in one line naming the library, a program whose dcx operators no loaded library registers
    (ExecuTorch itself would fail at the first call with an error code)."""
    loaded = set(_executorch_loaded)
    for op in sorted(set(operators)):
        name = executorch_library_for(op)
        if name and f"lib{name}.so" not in loaded:
            raise KernelError(f"{artifact} needs the dcx kernel library lib{name}.so (it calls {op}), which is not "
                              f"loaded: call dcx.kernels.load_executorch_library({name!r}) first, or pass --kernel-lib "
                              f"lib{name}.so to dcx_runner; {build_hint()}")

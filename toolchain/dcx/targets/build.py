"""Building the native code targets run: the dcx kernels (kernels/) and the runner (runtimes/native/).

Two builds use it. The wheel's build step (build_backend/) compiles the host kernel libraries and the host
runner into the package (``build_host``); ``dcx build aarch64`` (``dcx.android.build``, above the targets)
cross-compiles both for aarch64 with ``cmake_build`` and assembles the bundle the qemu and adb targets push.
Both drive the two CMake projects as kernels/build.sh does (``cmake -S kernels -B DIR``,
``cmake -S runtimes/native -B DIR``), into a build root laid out like a checkout's ``build/``:
``kernels/<arch>``, ``native/<arch>``, ``native/bundle``.

Standard library only at import: the build backend loads this file by path, before dcx is installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

# An installed wheel keeps its binaries at dcx/_native/build/<project>/host; $ORIGIN climbs to site-packages,
# where pip installed torch and executorch beside dcx.
SITE_PACKAGES_FROM_BINARY = "$ORIGIN/../../../../.."  # host -> <project> -> build -> _native -> dcx -> site-packages
CONFIGURE_STAMP = ".dcx-configure-args"  # kernels/build.sh's: the same arguments reuse its folders


class BuildError(Exception):
    """A native build that cannot start or failed: one line naming what is missing, or the log."""


def jobs() -> int:
    return int(os.environ.get("DCX_BUILD_JOBS", "2"))


def package_dir(name: str) -> Path | None:
    """An installed package's folder, found without importing it (importing torch takes seconds)."""
    spec = importlib.util.find_spec(name)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def cmake_build(source: Path, build: Path, args: list[str]) -> None:
    """Configure ``source`` into ``build`` when the folder is new or its arguments changed, then build.
    A changed configuration starts from a fresh cache (a cached path into a deleted build environment would
    stick); object files whose flags did not change are kept. Logs: ``build.configure.log``, ``build.build.log``."""
    build.mkdir(parents=True, exist_ok=True)
    stamp, wanted = build / CONFIGURE_STAMP, " ".join(args)
    if not (build / "CMakeCache.txt").is_file() or not stamp.is_file() or stamp.read_text().strip() != wanted:
        (build / "CMakeCache.txt").unlink(missing_ok=True)
        _run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *args],
             build.with_name(build.name + ".configure.log"), f"cmake configure of {build}")
        stamp.write_text(wanted + "\n")
    _run(["cmake", "--build", str(build), "-j", str(jobs())], build.with_name(build.name + ".build.log"),
         f"build of {build}")


def _run(argv: list[str], log: Path, what: str) -> None:
    with open(log, "w") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise BuildError(f"{what} failed ({tail[0][:200]}): the log is {log}")


def require_tools(tools: dict[str, str]) -> None:
    """Every program on PATH, else one line naming the Debian packages that bring the missing ones."""
    missing = [pkg for tool, pkg in tools.items() if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"{', '.join(t for t, p in tools.items() if p in missing)} not found: "
                         f"apt-get install {' '.join(dict.fromkeys(missing))}")


def build_host(source_root: Path, out: Path) -> dict[str, list[Path]]:
    """The host kernel libraries (their PyTorch ops and ExecuTorch kernels) and the host runner with the qemu
    instruction-count plugin, as a wheel installs them: no test drivers, and RUNPATHs relative to the
    installed library (``$ORIGIN`` up to site-packages, then torch/lib and executorch/lib), never a path into
    the build environment. Torch and executorch are those of this Python (the build requirements).
    Returns the files to install, per project folder (``kernels/host``, ``native/host``)."""
    require_tools({"cmake": "cmake", "make": "make", "gcc": "gcc", "g++": "g++"})
    torch, executorch = package_dir("torch"), package_dir("executorch")
    if torch is None or executorch is None:
        raise BuildError("the native build needs torch and executorch importable: pip install torch==2.13.0 "
                         "executorch==1.5.1 (the build requirements), or build with build isolation")
    site = SITE_PACKAGES_FROM_BINARY
    cmake_build(source_root / "kernels", out / "kernels" / "host", [
        f"-DCMAKE_PREFIX_PATH={torch / 'share' / 'cmake'}", f"-DDCX_EXECUTORCH_ROOT={executorch}",
        "-DDCX_BUILD_TESTS=OFF", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
        f"-DCMAKE_INSTALL_RPATH={site}/torch/lib;{site}/executorch/lib"])
    cmake_build(source_root / "runtimes" / "native", out / "native" / "host", [
        f"-DDCX_EXECUTORCH_ROOT={executorch}", f"-DDCX_RUNNER_RPATH={site}/executorch/lib"])
    kernels = sorted((out / "kernels" / "host").glob("libdcx_*_*.so"))
    native = [out / "native" / "host" / "dcx_runner", out / "native" / "host" / "libdcx_qemu_insn_count.so"]
    return {"kernels/host": kernels, "native/host": native}

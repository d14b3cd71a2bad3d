"""``dcx build aarch64``: the aarch64 kernel libraries, runner and bundle, cross-compiled on this machine.

The same two CMake projects kernels/build.sh and runtimes/native/build.sh build, driven by
``dcx.targets.build.cmake_build`` from a source root (a checkout, or the miniature of it an installed wheel
carries in ``dcx/_native``) into a build root laid out like a checkout's ``build/``: ``kernels/aarch64``
(what ``dcx.kernels.build_dir("aarch64")`` loads for the qemu and adb targets), ``native/aarch64`` and
``native/bundle`` (what ``native_build_dir()/bundle`` pushes). The aarch64 executorch wheel of the installed
executorch's version is downloaded once with pip, as kernels/build.sh does.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

from dcx.targets.build import BuildError, cmake_build, require_tools

from .bundle import assemble

CROSS_PACKAGES = "gcc-aarch64-linux-gnu g++-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross"
CROSS_SYSROOT = Path("/usr/aarch64-linux-gnu")
TOOLCHAIN_FILE = Path("kernels") / "cmake" / "aarch64-linux-gnu.cmake"  # inside a source root


def require_cross_tools() -> None:
    """The aarch64 cross compilers and C library, else one line naming the Debian packages."""
    tools = ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++", "aarch64-linux-gnu-readelf")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing or not (CROSS_SYSROOT / "lib" / "crt1.o").is_file():
        what = ", ".join(missing) if missing else f"{CROSS_SYSROOT}/lib/crt1.o"
        raise BuildError(f"the aarch64 build needs the cross compilers ({what} not found): apt-get install "
                         f"{CROSS_PACKAGES} (and qemu-user for the qemu target)")
    require_tools({"cmake": "cmake", "make": "make"})


def aarch64_executorch(out: Path, python: str = sys.executable) -> Path:
    """include/ and lib/*.so of the aarch64 executorch wheel of the installed executorch's version, at
    ``out/kernels/aarch64-executorch`` (where kernels/build.sh keeps it; downloaded once with pip)."""
    try:
        version = importlib.metadata.version("executorch")
    except importlib.metadata.PackageNotFoundError:
        raise BuildError("executorch is not installed: pip install 'dcx[executorch]'") from None
    root = out / "kernels" / "aarch64-executorch"
    wheels = root / "wheels"
    found = sorted(wheels.glob(f"executorch-{version}-*aarch64*.whl"))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([python, "-m", "pip", "download", "--quiet", "--only-binary", ":all:", "--no-deps",
                               "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11",
                               f"executorch=={version}", "-d", str(wheels)], capture_output=True, text=True)
        found = sorted(wheels.glob(f"executorch-{version}-*aarch64*.whl"))
        if proc.returncode != 0 or not found:
            raise BuildError(f"could not download the aarch64 executorch=={version} wheel with pip "
                             f"({(proc.stderr.strip().splitlines() or ['no wheel'])[-1][:160]}): it needs PyPI")
    marker = root / ".wheel"  # a full extraction of this wheel (kernels/build.sh takes only libexecutorch.so)
    if not marker.is_file() or marker.read_text().strip() != found[0].name:
        with zipfile.ZipFile(found[0]) as z:  # executorch/{include/**, lib/*.so} -> root/{include, lib}
            for name in z.namelist():
                keep = name.startswith("executorch/include/") or (name.startswith("executorch/lib/")
                                                                  and name.endswith(".so"))
                if keep and not name.endswith("/"):
                    target = root / name[len("executorch/"):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(name) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        marker.write_text(found[0].name + "\n")
    return root


def build_aarch64(source_root: Path, out: Path, python: str = sys.executable,
                  progress: Callable[[str], None] = print) -> dict:
    """The aarch64 kernels (``out/kernels/aarch64``), runner (``out/native/aarch64``) and bundle
    (``out/native/bundle``) from the sources under ``source_root``; returns the bundle's manifest.
    Raises ``BuildError`` (one line) when the cross tools are missing or a build fails."""
    require_cross_tools()
    et = aarch64_executorch(out, python)
    toolchain = source_root / TOOLCHAIN_FILE
    progress(f"kernels for aarch64 -> {out / 'kernels' / 'aarch64'}")
    cmake_build(source_root / "kernels", out / "kernels" / "aarch64",
                [f"-DCMAKE_TOOLCHAIN_FILE={toolchain}", "-DDCX_BUILD_ATEN=OFF", f"-DDCX_EXECUTORCH_ROOT={et}"])
    progress(f"runner for aarch64 -> {out / 'native' / 'aarch64'}")
    cmake_build(source_root / "runtimes" / "native", out / "native" / "aarch64",
                [f"-DCMAKE_TOOLCHAIN_FILE={toolchain}", f"-DDCX_EXECUTORCH_ROOT={et}", "-DDCX_RUNNER_RPATH=$ORIGIN"])
    try:
        return assemble(out / "native" / "aarch64" / "dcx_runner", out / "native" / "bundle",
                        [et / "lib", CROSS_SYSROOT / "lib"])
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        raise BuildError(f"assembling the aarch64 bundle failed: {e}") from None

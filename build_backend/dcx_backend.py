"""dcx's build backend: setuptools, with a build step that compiles the native code into the wheel.

A wheel gets ``dcx/_native``: a miniature of the checkout with the C sources ``dcx build aarch64``
compiles (``kernels/``, ``runtimes/native/``) and the host part of ``build/`` (the kernel libraries and
the runner with the qemu plugin), compiled against the torch and executorch of the build environment,
which are the versions dcx pins. An editable install compiles nothing: a checkout uses its own ``build/``
(``kernels/build.sh``, ``runtimes/native/build.sh``), so ``make setup`` does not pay for a build
environment with torch and executorch.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (the hooks not redefined here)
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parents[1]
# What compiling against torch's and executorch's headers and libraries needs: the pins of [project].
NATIVE_BUILD_REQUIRES = ["torch==2.13.0", "executorch==1.5.1", "cmake>=3.20"]
SOURCES = ("kernels", "runtimes/native")  # the CMake projects, as `cmake -S` takes them
NOT_SOURCES = shutil.ignore_patterns("python", "__pycache__", "*.sh", "*.md")  # kernels/python is dcx.kernels


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + NATIVE_BUILD_REQUIRES


def _native_build():
    """toolchain/dcx/targets/build.py, loaded by path: dcx itself is not installed while it builds."""
    spec = importlib.util.spec_from_file_location("dcx_native_build", ROOT / "toolchain/dcx/targets/build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPy(build_py):
    """The Python packages, then (for a wheel) dcx/_native: the C sources and the host build."""

    def run(self):
        if not self.editable_mode:  # build_py copies into build/lib.* and never removes: a module deleted or
            shutil.rmtree(Path(self.build_lib) / "dcx", ignore_errors=True)  # moved since would ship stale
        super().run()
        if self.editable_mode:
            return
        native = Path(self.build_lib) / "dcx" / "_native"
        shutil.rmtree(native, ignore_errors=True)  # only what this build puts there
        for project in SOURCES:
            shutil.copytree(ROOT / project, native / project, ignore=NOT_SOURCES)
        build = _native_build()
        # kept between builds under setuptools' build/temp.*, so a rebuild only compiles what changed
        cmake_root = Path(self.get_finalized_command("build").build_temp) / "native"
        try:
            built = build.build_host(ROOT, cmake_root.resolve())
        except build.BuildError as e:
            raise SystemExit(f"dcx native build: {e}") from None
        for folder, files in built.items():
            (native / "build" / folder).mkdir(parents=True)
            for f in files:
                shutil.copy2(f, native / "build" / folder / f.name)


class BdistWheel(bdist_wheel):
    """A wheel for this platform: it holds binaries, so it is laid out and tagged as one with extensions."""

    def finalize_options(self):
        self.distribution.has_ext_modules = lambda: True
        super().finalize_options()

"""The package builds what it needs: the wheel, installed into a fresh virtual environment outside the checkout, gives
a ``dcx`` whose export (every format, fast training included), verify and ``profile --target host`` work from a folder
outside the checkout, with the kernel libraries and the host runner compiled into the wheel.

The wheel is built as CI can afford it: ``pip wheel --no-build-isolation --no-deps`` from the project's venv (which
has the build requirements torch, executorch and cmake); the fresh venv gets it with the extras the checked commands
need (executorch, tflite, coreml, onnx) from the package index, without byte-compiling (``--no-compile``). Nothing of
the checkout is on the fresh venv's path: no ``--system-site-packages``, no PYTHONPATH, and every command runs in a
folder under the test's temporary directory. Measured on this 2-core machine, otherwise idle: building the wheel 70 s
from scratch (up to 3 minutes under load; seconds when the checkout's build/temp.* is warm), installing it 50 s,
export 46 s, verify 29 s, profile 4 s: 3.7 minutes in all, and the installed package's ``dcx build aarch64`` with a
qemu profile about 1.5 minutes more. ``pytest -m "not packaging"`` leaves it out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.packaging

EXTRAS = "executorch,tflite,coreml,onnx"  # what export --format all, verify and profile run on
PACKAGE_ROOTS = {"dcx": REPO / "toolchain" / "dcx", "dcx/kernels": REPO / "kernels" / "python",
                 "dcx/android": REPO / "android_harness"}
TIMES: dict[str, float] = {}


def _run(argv: list[str], what: str, timeout: float, **kw) -> subprocess.CompletedProcess:
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    TIMES[what] = time.monotonic() - start
    print(f"{what}: {TIMES[what]:.0f} s")
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-cache-dir", "-q",
          "-w", str(out), str(REPO)], "pip wheel", timeout=1200)
    (found,) = out.glob("dcx-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv outside the checkout with the wheel installed; the environment and folder to run dcx in."""
    root = tmp_path_factory.mktemp("installed")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], "venv", timeout=120)
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("DCX_")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *(p for p in env.get("PATH", "").split(os.pathsep)
                                                       if p and not Path(p).resolve().is_relative_to(REPO))])
    # pip keeps its cache of downloaded wheels; build_root() of the installed package is under the test's folder
    env.setdefault("PIP_CACHE_DIR", str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pip"))
    env["XDG_CACHE_HOME"] = str(root / "cache")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", f"{wheel}[{EXTRAS}]"],
         "pip install", timeout=1200, env=env)
    work = root / "work"
    work.mkdir()
    return {"venv": venv, "env": env, "cwd": work, "root": root}


def dcx(installed: dict, *args: str, what: str, timeout: float = 900, check: bool = True):
    argv = [str(installed["venv"] / "bin" / "dcx"), *args]
    if check:
        return _run(argv, what, timeout, env=installed["env"], cwd=installed["cwd"])
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=installed["env"],
                          cwd=installed["cwd"])


def test_the_wheel_carries_every_package_and_the_host_build(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for prefix, folder in PACKAGE_ROOTS.items():  # every package folder of the tree, none forgotten in pyproject
        for init in folder.rglob("__init__.py"):
            rel = init.relative_to(folder).as_posix()
            if "__pycache__" not in rel:
                assert f"{prefix}/{rel}" in names, f"{prefix}/{rel} is not in the wheel: add its package to pyproject"
    for lib in ("training", "partitioned_linear"):
        for kind in ("aten", "executorch"):
            assert f"dcx/_native/build/kernels/host/libdcx_{lib}_{kind}.so" in names
    assert {"dcx/_native/build/native/host/dcx_runner", "dcx/_native/build/native/host/libdcx_qemu_insn_count.so",
            "dcx/_native/kernels/CMakeLists.txt", "dcx/_native/runtimes/native/CMakeLists.txt",
            "dcx/_native/kernels/cmake/aarch64-linux-gnu.cmake"} <= names
    assert not any(n.endswith((".pyc", "CMakeCache.txt")) or "/__pycache__/" in n for n in names)


def test_export_verify_profile_from_an_installed_wheel(installed):
    py = str(installed["venv"] / "bin" / "python")
    where = _run([py, "-c", "import dcx, dcx.kernels.library as L; print(dcx.__file__); print(L.CHECKOUT)"],
                 "import", timeout=120, env=installed["env"], cwd=installed["cwd"]).stdout.split()
    assert Path(where[0]).is_relative_to(installed["venv"]) and where[1] == "False", where
    # the binaries find torch's and executorch's libraries beside dcx in site-packages (their RUNPATH), on their own
    binaries = [*(Path(where[0]).parent / "_native" / "build").glob("*/host/*.so"),
                Path(where[0]).parent / "_native" / "build" / "native" / "host" / "dcx_runner"]
    assert len(binaries) == 6, binaries
    for binary in binaries:
        ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        assert ldd.returncode == 0 and "not found" not in ldd.stdout, f"{binary}:\n{ldd.stdout}"

    out = installed["cwd"] / "artifacts"
    dcx(installed, "export", "--recipe", "dcccl", "--out", str(out), what="dcx export")
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["failures"], manifest["failures"]
    assert {a["format"] for a in manifest["artifacts"]} == {"executorch", "tflite", "coreml", "onnx"}
    (fast,) = [a for a in manifest["artifacts"] if a["program"] == "dcccl.train" and a["format"] == "executorch"]
    assert "fast_training" in [p["name"] for p in fast["passes"]]  # written with the pass, not skipped
    assert fast["requires"]["kernel_libraries"] == ["dcx_training_executorch"], fast["requires"]
    assert any(op.startswith("dcx::") for op in fast["requires"]["custom_ops"]), fast["requires"]

    verified = dcx(installed, "verify", str(out), "--json", "verify.json", what="dcx verify")
    rows = json.loads((installed["cwd"] / "verify.json").read_text())
    assert rows and not [r for r in rows if r["verdict"] == "FAIL"], verified.stdout
    assert any(r["verdict"] == "pass" and r["artifact"].startswith("dcccl.train") and r["format"] == "executorch"
               for r in rows), verified.stdout

    dcx(installed, "profile", str(out), "--target", "host", "--iterations", "3", "--warmup", "1",
        "--json", "profile.json", what="dcx profile --target host")
    rows = json.loads((installed["cwd"] / "profile.json").read_text())
    native = [r for r in rows if r["runtime"] == "dcx_runner" and not r["skipped"]]
    assert {r["program"] for r in native} >= {"dcccl.train", "dcccl.infer"}, rows  # the runner the wheel carries
    assert all(r["outputs_match"] is not False for r in rows), rows
    print("times (s):", {k: round(v) for k, v in TIMES.items()})


def test_an_installed_package_says_how_to_get_the_rest(installed):
    info = dcx(installed, "info", what="dcx info").stdout
    assert "make setup" not in info and "aarch64 bundle" in info
    if "MISSING" in info:
        assert "pip install --no-deps" in info or "apt-get install" in info, info
    # The aarch64 build: where `dcx build aarch64` writes is where the qemu and adb targets look, and a missing bundle
    # names the command; without the cross compilers it says which Debian packages bring them, in one line.
    script = ("from dcx.android.qemu import QemuTarget; from dcx.targets.host import native_build_dir; "
              "from dcx.kernels.library import build_root, build_dir; "
              "from dcx.android.bundle import read_manifest; from dcx.errors import DcxError\n"
              "assert QemuTarget().bundle == native_build_dir() / 'bundle' == build_root() / 'native' / 'bundle'\n"
              "assert build_dir('aarch64') == build_root() / 'kernels' / 'aarch64'\n"
              "try:\n    read_manifest(QemuTarget().bundle)\nexcept DcxError as e:\n    print(e)\n")
    said = _run([str(installed["venv"] / "bin" / "python"), "-c", script], "bundle paths", timeout=120,
                env=installed["env"], cwd=installed["cwd"]).stdout
    assert str(installed["root"] / "cache") in said and "`dcx build aarch64`" in said, said
    bare = installed["root"] / "bare-bin"  # no cross compilers (nor anything else) on PATH
    bare.mkdir(exist_ok=True)
    proc = subprocess.run([str(installed["venv"] / "bin" / "dcx"), "build", "aarch64"], capture_output=True, text=True,
                          timeout=120, env=dict(installed["env"], PATH=str(bare)), cwd=installed["cwd"])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "apt-get install gcc-aarch64-linux-gnu" in proc.stderr


def test_an_installed_package_builds_the_bundle_the_qemu_target_runs(installed):
    # the set-up installs the cross compilers and qemu-user: without them this fails rather than skips
    assert shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64"), "run `make setup`"
    dcx(installed, "build", "aarch64", what="dcx build aarch64", timeout=1200)
    out = installed["cwd"] / "artifacts-qemu"
    dcx(installed, "export", "--recipe", "dcccl", "--format", "executorch", "--out", str(out), what="export pte")
    dcx(installed, "profile", str(out), "--target", "qemu", "--iterations", "1", "--warmup", "0",
        "--json", "qemu.json", what="dcx profile --target qemu")
    rows = json.loads((installed["cwd"] / "qemu.json").read_text())
    assert any(r["program"] == "dcccl.train" and not r["skipped"] for r in rows), rows

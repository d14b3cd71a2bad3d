"""The host as a target: the native runner built for this machine, run in a throw-away working folder.

The folder stands for the device's working folder: pushed files are copied in,
the program runs there, the pulled files are copied out, and the folder goes.
The emulator target builds on the same steps (``scratch_folder``, ``push``,
``execute``, ``pull``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from dcx.errors import DcxError
from dcx.fileio import os_errors, write_atomic
from dcx.kernels.library import CHECKOUT, SOURCE_ROOT, build_root
from dcx.targets import RunRequest, RunResult, register_target

BUILD_SCRIPT = "runtimes/native/build.sh"


def native_build_dir() -> Path:
    """build/native (``DCX_NATIVE_BUILD_DIR`` overrides it): host/, aarch64/ and bundle/ of runtimes/native.
    For an installed package: aarch64/ and bundle/ as ``dcx build aarch64`` builds them (``build_root()``);
    its host/ is inside the package (``host_build_dir``)."""
    override = os.environ.get("DCX_NATIVE_BUILD_DIR")
    return Path(override) if override else build_root() / "native"


def host_build_dir() -> Path:
    """Where the host runner and the qemu instruction-count plugin are: ``native_build_dir()/host``, or in an
    installed package the build its wheel carries."""
    if CHECKOUT or os.environ.get("DCX_NATIVE_BUILD_DIR"):
        return native_build_dir() / "host"
    return SOURCE_ROOT / "build" / "native" / "host"


def require_built(path: Path, what: str) -> Path:
    if not path.exists():
        if CHECKOUT:
            fix = f"run `bash {BUILD_SCRIPT}`"
        else:
            fix = "reinstall dcx: its wheel carries it" if path.is_relative_to(SOURCE_ROOT) else "run `dcx build aarch64`"
        raise DcxError(f"{path} is missing ({what}): {fix}")
    return path


def inside_folder(folder: Path, name: str) -> Path:
    """``folder/name`` for a relative name that stays inside ``folder``."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DcxError(f"{name!r}: names on a target are relative paths inside its working folder")
    return folder.joinpath(*rel.parts)


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dcx-target-") as tmp:
        yield Path(tmp)


def push(request: RunRequest, work: Path) -> None:
    for name, local in request.push.items():
        if not Path(local).is_file():
            raise DcxError(f"{local}: no such file to push")
        dest = inside_folder(work, name)
        with os_errors(dest):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(local, dest)


def execute(argv: list[str], work: Path, request: RunRequest, device: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, cwd=work, capture_output=True, text=True, errors="replace",
                              timeout=request.timeout_s)
    except subprocess.TimeoutExpired:
        raise DcxError(f"{device}: {request.program} ran past {request.timeout_s:g} s: "
                       "give it fewer iterations or steps, or a longer timeout") from None
    except OSError as e:
        raise DcxError(f"{device}: cannot start {argv[0]}: {e.strerror}") from None


def pull(request: RunRequest, work: Path, local_dir: Path) -> dict[str, Path]:
    """Copy back the requested files that exist, each under a temporary name first and then renamed."""
    pulled = {}
    for name in request.pull:
        src = inside_folder(work, name)
        if src.is_file():
            dest = inside_folder(Path(local_dir), name)
            with os_errors(dest):
                dest.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(dest, src.read_bytes())
            pulled[name] = dest
    return pulled


class HostTarget:
    """Runs the host ``dcx_runner`` (``host_build_dir``) or a pushed host program on this machine."""

    name = "host"
    emulated = False
    arch = "host"  # which kernel build (dcx.kernels.build_dir) its programs load

    def run(self, request: RunRequest, local_dir: Path) -> RunResult:
        with scratch_folder() as work:
            push(request, work)
            if request.program == "dcx_runner":
                program = str(require_built(host_build_dir() / "dcx_runner", "the host native runner"))
            else:
                program = str(inside_folder(work, request.program))
            proc = execute([program, *request.args], work, request, self.name)
            return RunResult(proc.stdout, proc.stderr, proc.returncode, pull(request, work, local_dir))


register_target("host", lambda serial: HostTarget())

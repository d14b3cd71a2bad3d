"""An aarch64 phone stood in for by ``qemu-aarch64``: the same bundle and command line as on a phone.

The working folder stands for ``/data/local/tmp``: the bundle is copied in, the
pushed files go beside it, and the runner starts exactly as ``adb shell`` would
start it there (``./ld-linux-aarch64.so.1 --library-path . ./dcx_runner ...``),
with ``qemu-aarch64`` in front. Emulated timings mean nothing; with the
instruction-count plugin (``runtimes/native/qemu_plugin``) each run also
reports the guest instructions it executed, which are repeatable.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dcx.errors import DcxError
from dcx.fileio import os_errors
from dcx.targets import RunRequest, RunResult, register_target
from dcx.targets.host import execute, host_build_dir, native_build_dir, pull, push, require_built, scratch_folder

from .bundle import launch_command, read_manifest

QEMU = "qemu-aarch64"
PLUGIN = "libdcx_qemu_insn_count.so"
COUNT_FILE = ".dcx-instructions"  # written by the plugin into the working folder when the guest exits


class QemuTarget:
    name = "qemu"
    emulated = True
    arch = "aarch64"  # which kernel build (dcx.kernels.build_dir) its programs load

    def __init__(self, bundle: Path | None = None, count_instructions: bool = True):
        self.bundle = Path(bundle) if bundle else native_build_dir() / "bundle"
        self.count_instructions = count_instructions

    def _qemu(self, work: Path) -> list[str]:
        qemu = shutil.which(QEMU)
        if qemu is None:
            raise DcxError(f"{QEMU} not found: install the Debian package qemu-user (apt-get install qemu-user)")
        if not self.count_instructions:
            return [qemu]
        plugin = require_built(host_build_dir() / PLUGIN, "the qemu instruction-count plugin")
        return [qemu, "-plugin", f"{plugin},out={work / COUNT_FILE}"]

    def run(self, request: RunRequest, local_dir: Path) -> RunResult:
        files = read_manifest(self.bundle)["files"]
        with scratch_folder() as work:
            with os_errors(self.bundle):
                for name in files:  # what `adb push` of the bundle puts in /data/local/tmp
                    shutil.copy(self.bundle / name, work / name)
            push(request, work)
            proc = execute([*self._qemu(work), *launch_command(request.program), *request.args], work, request,
                           self.name)
            count = work / COUNT_FILE
            instructions = int(count.read_text()) if count.is_file() else None
            return RunResult(proc.stdout, proc.stderr, proc.returncode, pull(request, work, local_dir),
                                     instructions)


register_target("qemu", lambda serial: QemuTarget())

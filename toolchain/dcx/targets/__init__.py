"""Where the native runner runs: the host, an aarch64 emulator, or a phone over adb.

A target copies files to a working folder on the device, runs the native
runner there with an argument list, and copies the named results back. The
same ``RunRequest`` runs on every target; ``dcx profile`` never knows which
one it talks to. Adding a target is one module that defines a ``Target``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dcx.errors import DcxError


@dataclass
class RunRequest:
    """One invocation of the native runner (or of another device binary) on a target."""

    args: list[str]  # argv after the program; file arguments are names inside the target's working folder
    push: dict[str, Path] = field(default_factory=dict)  # name inside the working folder -> local file
    pull: list[str] = field(default_factory=list)  # names inside the working folder to copy back after the run
    program: str = "dcx_runner"  # the binary to run: the runner, or a pushed file such as "benchmark_model"
    timeout_s: float = 600.0


@dataclass
class RunResult:
    stdout: str
    stderr: str
    returncode: int  # negative: killed by that signal
    pulled: dict[str, Path]  # name -> local copy (only the names that existed after the run)
    instructions: int | None = None  # guest instructions the whole process executed, where the target counts them


class Target(Protocol):
    name: str  # "host", "qemu", "adb:SERIAL"
    emulated: bool  # timings under emulation are never compared with real ones
    arch: str  # "host" or "aarch64": which native build (runner, kernel libraries) runs there

    def run(self, request: RunRequest, local_dir: Path) -> RunResult:
        """Push, run, pull into ``local_dir``, clean up the device side. Raises ``DcxError`` with one line
        naming the device or file and the fix when the target cannot be used (results so far are the caller's)."""


def describe_exit(returncode: int) -> str:
    """How a program on a target ended, in words: "exited with status 3", "was killed by signal 11 (SIGSEGV)"."""
    if returncode < 0:
        return f"was killed by signal {-returncode} ({signal.Signals(-returncode).name})"
    return f"exited with status {returncode}"


def get_target(spec: str) -> Target:
    """``host``, ``qemu`` or ``adb[:SERIAL]`` (a serial may itself hold a colon: ``adb:127.0.0.1:5555``)."""
    kind, _, serial = spec.partition(":")
    if kind == "host" and not serial:
        from dcx.targets.host import HostTarget

        return HostTarget()
    if kind == "qemu" and not serial:
        from dcx.android.qemu import QemuTarget

        return QemuTarget()
    if kind == "adb":
        from dcx.android.adb import AdbTarget

        return AdbTarget(serial or None)
    raise DcxError(f"--target {spec!r}: choose host, qemu or adb[:SERIAL]")

"""Where the native runner runs: the host, an aarch64 emulator, or a phone over adb.

A target copies files to a working folder on the device, runs the native
runner there with an argument list, and copies the named results back. The
same ``RunRequest`` runs on every target; ``dcx profile`` never knows which
one it talks to. Adding a target is one module that defines a ``Target`` and
calls ``register_target``, found through the ``dcx.targets`` entry points
(``dcx.plugins``): ``host`` here, ``qemu`` and ``adb`` in ``android_harness/``,
which nothing below it imports.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

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


_TARGETS: dict[str, tuple[Callable[[str | None], Target], bool]] = {}  # kind -> (factory, takes a serial)


def register_target(kind: str, factory: Callable[[str | None], Target], takes_serial: bool = False) -> None:
    """``kind`` (``host``, ``qemu``, ``adb``, ...) is made by ``factory(serial)``; ``takes_serial``: ``kind:SERIAL``
    names one device of that kind."""
    _TARGETS[kind] = (factory, takes_serial)


def target_kinds() -> list[str]:
    from dcx.plugins import load_plugins

    load_plugins("dcx.targets")
    return list(_TARGETS)


def get_target(spec: str) -> Target:
    """``KIND`` or ``KIND:SERIAL`` (a serial may itself hold a colon: ``adb:127.0.0.1:5555``)."""
    kind, _, serial = spec.partition(":")
    kinds = target_kinds()
    if kind in _TARGETS:
        factory, takes_serial = _TARGETS[kind]
        if takes_serial or not serial:
            return factory(serial or None)
    names = [k for k in kinds if not _TARGETS[k][1]] + [f"{k}[:SERIAL]" for k in kinds if _TARGETS[k][1]]
    raise DcxError(f"--target {spec!r}: choose {', '.join(names[:-1])} or {names[-1]}")

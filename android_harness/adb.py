"""The ``adb[:SERIAL]`` target: run the native runner (or another device binary) on an Android phone.

Everything goes through the ``adb`` client as argument lists, never a host
shell. On the phone, ``adb shell`` takes one command string: every path and
argument in it is quoted by ``device_quote``. The runner bundle (``bundle.py``)
is pushed once per content into /data/local/tmp/dcx/bundle-HASH and kept
there; each run gets its own folder, with links to the bundle's files, and the
runner starts there exactly as on the emulator (``bundle.launch_command``).
The run folder is removed afterwards whatever happened. As on the other
targets, the program's exit status comes back in ``RunResult.returncode`` (a
signal as its negative number); the phone itself failing is a ``DcxError``.

adb reports a dropped connection by ending the shell stream; its exit status
is then 0, as for a clean exit. So each command ends by printing its status to
stderr after a mark, and a command without the mark lost the phone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import uuid
from pathlib import Path, PurePosixPath

from dcx.errors import DcxError
from dcx.fileio import temporary_sibling
from dcx.targets import RunRequest, RunResult, register_target
from dcx.targets.host import inside_folder, native_build_dir

from .bundle import RUNNER, launch_command, read_manifest

DEVICE_DIR = PurePosixPath("/data/local/tmp/dcx")
ABI = "arm64-v8a"
OUTPUT_HEADROOM_BYTES = 16 << 20  # room left for what the run writes
COMPLETE_MARK = ".complete"  # written last into a bundle folder: a half-pushed bundle is never reused
EXIT_MARK = "dcx-exit-status:"
EXIT_MARK_RE = re.compile(rf"\r?\n?{EXIT_MARK}(\d+)\r?\n?$")
PROBE_TIMEOUT_S = 60.0
PUSH_BYTES_PER_S = 5e6  # slow USB 2, for push and pull timeouts
INSTALL_HINT = "install the Debian package adb (apt-get install adb) or put Android platform-tools on PATH"


def device_quote(word: str | PurePosixPath) -> str:
    """One word for the phone's shell: always in single quotes, a quote inside as '\\''."""
    word = str(word)
    if "\0" in word:
        raise DcxError(f"{word!r}: a NUL byte cannot be passed to a phone's shell: rename it")
    return "'" + word.replace("'", "'\\''") + "'"


def find_adb() -> str:
    adb = shutil.which("adb")
    if adb is None:
        raise DcxError(f"--target adb: the adb client is not on PATH: {INSTALL_HINT}")
    return adb


def list_devices(adb: str) -> dict[str, str]:
    """Serial -> state ("device", "unauthorized", "offline", ...), as ``adb devices`` says."""
    try:
        proc = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DcxError(f"`{adb} devices` did not answer in {PROBE_TIMEOUT_S:.0f} s: restart the server "
                       "with `adb kill-server` and run again") from None
    if proc.returncode != 0:
        raise DcxError(f"`{adb} devices` failed: {last_line(proc.stdout + proc.stderr)}; "
                       "restart the server with `adb kill-server` and run again")
    devices = {}
    lines = proc.stdout.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("List of devices attached")), len(lines))
    for line in lines[start:]:
        serial, sep, state = line.partition("\t")
        if sep:
            devices[serial.strip()] = state.strip()
    return devices


def state_problem(serial: str, state: str) -> str | None:
    """What keeps a phone in ``state`` from being used, and the fix; None when it is ready."""
    if state == "device":
        return None
    if state == "unauthorized":
        return (f"adb:{serial} has not authorized this computer: unlock the phone and accept "
                "'Allow USB debugging' for this computer, then run again")
    if state == "offline":
        return f"adb:{serial} is offline: reconnect the cable (or run `adb reconnect`), then run again"
    if state.startswith("no permissions"):
        return (f"adb:{serial}: no permission to open the USB device: add a udev rule for the phone "
                "(Debian package android-sdk-platform-tools-common) and reconnect it")
    return f"adb:{serial} is in state '{state}', not 'device': boot the phone normally with USB debugging on"


def resolve_serial(adb: str, serial: str | None) -> str:
    devices = list_devices(adb)
    listed = ", ".join(f"{s} ({st})" for s, st in devices.items()) or "none"
    if serial is None:
        if not devices:
            raise DcxError("--target adb: adb sees no phone: connect one with USB debugging on "
                           "(or `adb connect HOST:PORT`) until `adb devices` lists it")
        if len(devices) > 1:
            raise DcxError(f"--target adb: {len(devices)} phones are connected ({listed}): "
                           "pass --target adb:SERIAL with one of them")
        serial = next(iter(devices))
    elif serial not in devices:
        raise DcxError(f"--target adb:{serial}: adb lists no such phone (it lists: {listed}): "
                       "connect it or pass one of those serials")
    problem = state_problem(serial, devices[serial])
    if problem:
        raise DcxError(problem)
    return serial


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def bundle_hash(manifest: dict) -> str:
    """A short name for a bundle's content, from the sha256 of its files that the manifest lists."""
    return hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()[:16]


def parse_available_kb(df_output: str) -> int | None:
    """The 'Available' column of ``df -k`` (toybox); None when the output has another shape."""
    lines = [line for line in df_output.splitlines() if line.strip()]
    if len(lines) < 2 or "Available" not in lines[0].split():
        return None
    column = lines[0].split().index("Available")
    values = " ".join(lines[1:]).split()  # a long filesystem name may wrap onto its own line
    return int(values[column]) if len(values) > column and values[column].isdigit() else None


def returncode(status: int) -> int:
    """A shell's status as subprocess reports it: 128+N from a signal N becomes -N."""
    return -(status - 128) if status > 128 and status - 128 in signal.valid_signals() else status


class AdbTarget:
    """An arm64 Android phone reached through the adb client."""

    emulated = False
    arch = "aarch64"  # which native build (runner, kernel libraries) runs there

    def __init__(self, serial: str | None = None, bundle: Path | None = None):
        self.adb = find_adb()
        self.serial = resolve_serial(self.adb, serial)
        self.name = f"adb:{self.serial}"
        self.bundle = Path(bundle) if bundle else native_build_dir() / "bundle"
        abi = self._shell("getprop ro.product.cpu.abi", "reading the phone's ABI").strip()
        if abi != ABI:
            raise DcxError(f"{self.name} reports ABI {abi or '(none)'}: dcx runs on {ABI} phones; "
                           "connect an arm64 phone and pass --target adb:SERIAL")

    # -- Target ---------------------------------------------------------------------------------

    def run(self, request: RunRequest, local_dir: Path) -> RunResult:
        run_dir = DEVICE_DIR / f"run-{uuid.uuid4().hex[:12]}"
        pushes = {inside_folder(run_dir, name): Path(local) for name, local in request.push.items()}
        inside_folder(run_dir, request.program)  # the same rule for the program's name
        for local in pushes.values():
            if not local.is_file():
                raise DcxError(f"{local}: no such file to push to {self.name}: check the path")
        bundle: dict[PurePosixPath, Path] = {}  # what is still to push of the runner bundle
        if request.program == RUNNER:
            manifest = read_manifest(self.bundle)
            files = manifest["files"]
            clash = sorted(set(files) & set(request.push))
            if clash:
                raise DcxError(f"{clash[0]}: a pushed file cannot take the name of a runner bundle file: rename it")
            bundle_dir = DEVICE_DIR / f"bundle-{bundle_hash(manifest)}"
            if not self._bundle_cached(bundle_dir):
                bundle = {bundle_dir / name: self.bundle / name for name in files}
            # The bundle's files appear in the run folder, so the runner starts as on the emulator.
            prepare = "ln -s " + " ".join(device_quote(bundle_dir / name) for name in files) + " . && "
            argv = launch_command(RUNNER)
        elif request.program in request.push:
            prepare, argv = f"chmod 755 {device_quote(request.program)} && ", [f"./{request.program}"]
        else:
            raise DcxError(f"program {request.program!r} is not among the files pushed to {self.name}: push it")
        self._check_free_space(sum(p.stat().st_size for p in [*pushes.values(), *bundle.values()]))

        succeeded = False
        try:
            if bundle:
                self._push_bundle(bundle)
            self._shell(f"mkdir -p {device_quote(run_dir)}", "creating the run folder")
            for remote, local in pushes.items():
                self._push(local, remote)
            line = f"cd {device_quote(run_dir)} && {prepare}{' '.join(map(device_quote, [*argv, *request.args]))}"
            stdout, stderr, status = self._execute(line, f"running {request.program}", request.timeout_s)
            pulled = self._pull(run_dir, request.pull, local_dir)
            succeeded = True
        finally:
            self._remove(run_dir, raise_errors=succeeded)
        return RunResult(stdout=stdout, stderr=stderr, returncode=returncode(status), pulled=pulled)

    # -- steps ----------------------------------------------------------------------------------

    def _adb(self, args: list[str], action: str, timeout_s: float) -> subprocess.CompletedProcess:
        """One adb command on this phone; a timeout or a vanished phone becomes a one-line error."""
        try:
            # stdin: with shell_v2 the client forwards its stdin to the phone; give it nothing to forward.
            return subprocess.run([self.adb, "-s", self.serial, *args], capture_output=True, encoding="utf-8",
                                  errors="replace", timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DcxError(f"{self.name}: {action} did not finish in {timeout_s:g} s: check the phone "
                           "(`adb devices`) or allow a longer run") from None

    def _execute(self, command: str, action: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[str, str, int]:
        """(stdout, stderr, exit status) of a command in the phone's shell."""
        proc = self._adb(["shell", f"{command}; printf '\\n{EXIT_MARK}%d\\n' $? >&2"], action, timeout_s)
        stdout, stderr = proc.stdout, proc.stderr
        if mark := EXIT_MARK_RE.search(stderr):
            stderr = stderr[:mark.start()]
        elif not stderr.strip() and (mark := EXIT_MARK_RE.search(stdout)):
            stdout = stdout[:mark.start()]  # a phone without shell_v2 merges stderr into stdout
        else:
            raise self._failure(action, stdout + stderr)
        return stdout, stderr, int(mark.group(1))

    def _shell(self, command: str, action: str) -> str:
        stdout, stderr, status = self._execute(command, action)
        if status != 0:
            raise DcxError(f"{self.name}: {action} failed: {last_line(stderr or stdout)}")
        return stdout

    def _failure(self, action: str, output: str) -> DcxError:
        """The error for a failed adb command: a lost phone if adb no longer lists it as ready."""
        state = list_devices(self.adb).get(self.serial, "disconnected")
        problem = state_problem(self.serial, state)
        if problem:
            return DcxError(f"lost {self.name} while {action} ({state}): reconnect it, check `adb devices`, "
                            "and run again")
        return DcxError(f"{self.name}: {action} failed: {last_line(output)}")

    def _check_free_space(self, need: int) -> None:
        output = self._shell(f"df -k {device_quote(DEVICE_DIR.parent)}", "reading the free space")
        available_kb = parse_available_kb(output)
        if available_kb is None:
            raise DcxError(f"{self.name}: cannot read the free space of /data/local/tmp from `df -k`: "
                           f"{last_line(output)}; free space on the phone by hand and run again")
        if need + OUTPUT_HEADROOM_BYTES > available_kb * 1024:
            raise DcxError(f"{self.name} has {available_kb / 1024:.1f} MB free in /data/local/tmp, the run needs "
                           f"{(need + OUTPUT_HEADROOM_BYTES) / 2**20:.1f} MB: free space on the phone and run again")

    def _bundle_cached(self, bundle_dir: PurePosixPath) -> bool:
        answer = self._shell(f"if [ -f {device_quote(bundle_dir / COMPLETE_MARK)} ]; then echo cached; "
                             "else echo missing; fi", "looking for the runner bundle").strip()
        return answer == "cached"

    def _push_bundle(self, files: dict[PurePosixPath, Path]) -> None:
        """Replace older bundles by this one; the mark goes last, so a cut push is redone next time."""
        self._shell(f"rm -rf {device_quote(DEVICE_DIR)}/bundle-*", "removing older runner bundles")
        for remote, local in files.items():
            self._push(local, remote)
        bundle_dir = next(iter(files)).parent
        self._shell(f"touch {device_quote(bundle_dir / COMPLETE_MARK)}", "marking the runner bundle complete")

    def _push(self, local: Path, remote: PurePosixPath) -> None:
        action = f"pushing {local}"
        proc = self._adb(["push", str(local.resolve()), str(remote)], action,
                         PROBE_TIMEOUT_S + local.stat().st_size / PUSH_BYTES_PER_S)
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr  # adb prints sync errors on stdout
            if "No space left on device" in output:
                raise DcxError(f"{self.name} ran out of space in /data/local/tmp while {action}: "
                               "free space on the phone and run again")
            raise self._failure(action, output)

    def _pull(self, run_dir: PurePosixPath, names: list[str], local_dir: Path) -> dict[str, Path]:
        """Copy back the names that exist, each under a temporary name first, then renamed."""
        pulled = {}
        for name in names:
            target = inside_folder(Path(local_dir), name)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = temporary_sibling(target)
            try:
                proc = self._adb(["pull", str(inside_folder(run_dir, name)), str(partial)], f"pulling {name}",
                                 PROBE_TIMEOUT_S * 10)
                if proc.returncode != 0:
                    output = proc.stdout + proc.stderr
                    if "No such file or directory" in output or "does not exist" in output:
                        continue  # the run did not write it
                    raise self._failure(f"pulling {name}", output)
                os.replace(partial, target)
                pulled[name] = target
            finally:
                partial.unlink(missing_ok=True)
        return pulled

    def _remove(self, run_dir: PurePosixPath, raise_errors: bool) -> None:
        """Remove the run folder; when another error is on its way, a failure here must not hide it."""
        try:
            self._shell(f"rm -rf {device_quote(run_dir)}", f"removing {run_dir}")
        except DcxError:
            if raise_errors:
                raise


register_target("adb", AdbTarget, takes_serial=True)

"""The phone's ``shell`` and ``sync`` services, run on the host in a sandbox standing for /data/local/tmp.

Shell commands run under the host's /bin/sh with ``/data/local/tmp`` rewritten
to the sandbox; an absolute path anywhere else is refused. ``getprop`` answers
from the phone's properties and ``df`` prints the configured free space, in
toybox's format. aarch64 programs run under qemu-aarch64 through an execve
shim preloaded into the shell (``exec_aarch64.c``): there is no binfmt here,
and no library prefix, so a program runs only if it would run on a phone.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import signal
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import wire

if TYPE_CHECKING:
    from .phone import PhoneConfig, Stream

DEVICE_ROOT = "/data/local/tmp"
ALLOWED_OUTSIDE = ("/dev/null",)


class Sandbox:
    """The host folder that plays /data/local/tmp."""

    def __init__(self, root: Path):
        if not re.fullmatch(r"[\w./-]+", str(root)):
            raise ValueError(f"sandbox path {root} must need no shell quoting")
        self.root = root

    def host_path(self, device_path: str) -> Path | None:
        """The sandbox file for a device path, or None for a path outside /data/local/tmp."""
        normal = os.path.normpath(device_path)
        if normal == DEVICE_ROOT:
            return self.root
        if not normal.startswith(DEVICE_ROOT + "/"):
            return None
        return self.root / normal[len(DEVICE_ROOT) + 1:]

    def outside_paths(self, command: str) -> list[str]:
        try:
            words = shlex.shlex(command, posix=True, punctuation_chars=True)
            words.whitespace_split = True
            tokens = list(words)
        except ValueError:
            return []  # let the shell report the syntax error
        return [t for t in tokens if t.startswith("/") and t not in ALLOWED_OUTSIDE and self.host_path(t) is None]

    def to_host(self, command: str) -> str:
        return command.replace(DEVICE_ROOT, str(self.root))

    def to_device(self, output: bytes) -> bytes:
        return output.replace(str(self.root).encode(), DEVICE_ROOT.encode())

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and not p.is_symlink())


class DeviceSide:
    """What the services share: the sandbox, the tool folder (getprop, df), the running processes."""

    def __init__(self, home: Path, config: PhoneConfig, exec_shim: Path, qemu: str):
        self.config, self.exec_shim, self.qemu = config, exec_shim, qemu
        self.sandbox = Sandbox(home / "data_local_tmp")
        self.sandbox.root.mkdir(parents=True)
        self.bin = home / "bin"
        self._write_tools(home)
        self._processes: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self.unplug: Callable[[], None] = lambda: None  # set by the phone

    def _write_tools(self, home: Path) -> None:
        props = home / "props"
        props.mkdir()
        for key, value in self.config.props.items():
            (props / key).write_text(value)
        self.bin.mkdir()
        tools = {
            "getprop": f"""#!/bin/sh
if [ $# -eq 0 ]; then
  for f in {props}/*; do printf '[%s]: [%s]\\n' "${{f##*/}}" "$(cat "$f")"; done
  exit 0
fi
case "$1" in */*) echo; exit 0;; esac
cat "{props}/$1" 2>/dev/null; echo
""",
            "df": f"""#!/bin/sh
printf 'Filesystem       1K-blocks     Used Available Use%% Mounted on\\n'
printf '/dev/block/dm-42 %d %d %d %d%% /data\\n' {2 * self.config.df_available_bytes // 1024} \
{self.config.df_available_bytes // 1024} {self.config.df_available_bytes // 1024} 50
""",
        }
        for name, text in tools.items():
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)

    def spawn(self, command: str, term: str, merge_stderr: bool) -> subprocess.Popen:
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "TERM": term,
            "TMPDIR": str(self.sandbox.root),
            "LD_PRELOAD": str(self.exec_shim),
            "DCX_EMULATOR_QEMU": self.qemu,
        }
        process = subprocess.Popen(["/bin/sh", "-c", self.sandbox.to_host(command)], cwd=self.sandbox.root, env=env,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                                   start_new_session=True)
        with self._lock:
            self._processes.add(process)
        return process

    def reap(self, process: subprocess.Popen) -> int:
        code = process.wait()
        with self._lock:
            self._processes.discard(process)
        return code

    def hang_up(self, process: subprocess.Popen) -> None:
        """adbd's answer to a closed shell stream: SIGHUP to the command."""
        try:
            os.killpg(process.pid, signal.SIGHUP)
        except ProcessLookupError:
            pass

    def kill_all(self) -> None:
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def handler(service: str, device: DeviceSide) -> Callable[[Stream], None] | None:
    """The service an OPEN names, bound to this phone; None for one the phone does not offer."""
    if service.startswith("shell"):
        args, sep, command = service[len("shell"):].partition(":")
        if not sep or (args and not args.startswith(",")):
            return None
        options = [a for a in args.split(",") if a]
        return lambda stream: run_shell(stream, device, options, command)
    if service == "sync:":
        return lambda stream: run_sync(stream, device)
    return None


# --- shell ----------------------------------------------------------------------------------


def run_shell(stream: Stream, device: DeviceSide, options: list[str], command: str) -> None:
    """``shell[,v2][,TERM=..][,raw|pty]:COMMAND``; with v2, stdout/stderr/exit travel as shell packets.
    Without v2, stderr joins stdout and no exit status is sent, as adbd does. No terminal is emulated (pty runs raw)."""
    v2 = "v2" in options
    term = next((o[5:] for o in options if o.startswith("TERM=")), "dumb")
    outside = device.sandbox.outside_paths(command)
    if outside:
        refuse = f"/system/bin/sh: {outside[0]}: Permission denied (only {DEVICE_ROOT} is emulated)\n".encode()
        try:
            stream.write(wire.shell_packet(wire.SHELL_STDERR, refuse) + wire.shell_packet(wire.SHELL_EXIT, bytes([1]))
                         if v2 else refuse)
            stream.close()
        except BrokenPipeError:
            pass
        return
    process = device.spawn(command, term, merge_stderr=not v2)
    unplug = device.config.unplug_on is not None and device.config.unplug_on in command
    threading.Thread(target=_forward_stdin, args=(stream, device, process, v2), daemon=True).start()
    pipes = [(process.stdout, wire.SHELL_STDOUT)] + ([(process.stderr, wire.SHELL_STDERR)] if v2 else [])
    pumps = [threading.Thread(target=_pump, args=(stream, device, pipe, ident, v2, unplug)) for pipe, ident in pipes]
    for pump in pumps:
        pump.start()
    for pump in pumps:
        pump.join()
    code = device.reap(process)
    if unplug:
        device.unplug()  # the phone vanished before it could say how the command ended
        return
    if stream.closed:
        return
    # adbd: exit status, or 0x80 | signal for a command killed by a signal.
    status = (0x80 | -code) if code < 0 else code
    try:
        if v2:
            stream.write(wire.shell_packet(wire.SHELL_EXIT, bytes([status & 0xFF])))
        stream.close()
    except BrokenPipeError:
        pass


def _pump(stream: Stream, device: DeviceSide, pipe, ident: int, v2: bool, unplug: bool) -> None:
    while chunk := os.read(pipe.fileno(), 65536):
        data = device.sandbox.to_device(chunk)
        try:
            stream.write(wire.shell_packet(ident, data) if v2 else data)
        except BrokenPipeError:
            break
        if unplug:
            device.unplug()  # mid-run: the host got some output, then the phone is gone
            break
    pipe.close()


def _forward_stdin(stream: Stream, device: DeviceSide, process: subprocess.Popen, v2: bool) -> None:
    buffer = b""
    while data := stream.read():
        if not v2:
            _write_stdin(process, data)
            continue
        buffer += data
        while len(buffer) >= wire.SHELL_PACKET.size:
            ident, length = wire.SHELL_PACKET.unpack_from(buffer)
            if len(buffer) < wire.SHELL_PACKET.size + length:
                break
            end = wire.SHELL_PACKET.size + length
            body, buffer = buffer[wire.SHELL_PACKET.size:end], buffer[end:]
            if ident == wire.SHELL_STDIN:
                _write_stdin(process, body)
            elif ident == wire.SHELL_CLOSE_STDIN:
                _close_stdin(process)
    # The stream is closed: by the phone after the exit packet, or by the host (client killed).
    _close_stdin(process)
    if process.poll() is None:
        device.hang_up(process)


def _write_stdin(process: subprocess.Popen, data: bytes) -> None:
    try:
        process.stdin.write(data)
        process.stdin.flush()
    except (BrokenPipeError, ValueError):
        pass


def _close_stdin(process: subprocess.Popen) -> None:
    try:
        process.stdin.close()
    except BrokenPipeError:
        pass


# --- sync -----------------------------------------------------------------------------------


def run_sync(stream: Stream, device: DeviceSide) -> None:
    """STAT/STA2/LST2/LIST/SEND/RECV until QUIT, as adbd's file_sync_service does."""
    requests = {b"STAT": _stat_v1, b"STA2": _stat_v2, b"LST2": _stat_v2, b"LIST": _list,
                b"SEND": _send, b"RECV": _recv}
    try:
        while True:
            ident, length = wire.SYNC_REQUEST.unpack(stream.read_exact(wire.SYNC_REQUEST.size))
            if ident == b"QUIT":
                break
            if ident not in requests or length > wire.SYNC_PATH_MAX:
                stream.write(wire.sync_status(b"FAIL", f"unknown sync request {ident!r}".encode()))
                break
            path = stream.read_exact(length).decode()
            if not requests[ident](stream, device, ident, path):
                break
    except (EOFError, BrokenPipeError):
        pass
    stream.close()


def _stat_v1(stream: Stream, device: DeviceSide, ident: bytes, path: str) -> bool:
    host = device.sandbox.host_path(path)
    try:
        st = os.lstat(host) if host else None
    except OSError:
        st = None
    mode, size, mtime = (st.st_mode, st.st_size, int(st.st_mtime)) if st else (0, 0, 0)  # all zero: "no such file"
    stream.write(wire.STAT_V1.pack(b"STAT", mode, size & 0xFFFFFFFF, mtime))
    return True


def _stat_v2(stream: Stream, device: DeviceSide, ident: bytes, path: str) -> bool:
    host = device.sandbox.host_path(path)
    try:
        if host is None:
            raise PermissionError(errno.EACCES, "outside /data/local/tmp")
        st = os.stat(host) if ident == b"STA2" else os.lstat(host)
    except OSError as e:
        stream.write(wire.STAT_V2.pack(ident, e.errno, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        return True
    stream.write(wire.STAT_V2.pack(ident, 0, st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
                                   st.st_size, int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))
    return True


def _list(stream: Stream, device: DeviceSide, ident: bytes, path: str) -> bool:
    host = device.sandbox.host_path(path)
    entries = sorted(os.scandir(host), key=lambda e: e.name) if host and host.is_dir() else []
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        name = entry.name.encode()
        dent = wire.DENT_V1.pack(b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(name))
        stream.write(dent + name)
    stream.write(wire.DENT_V1.pack(b"DONE", 0, 0, 0, 0))
    return True


def _send(stream: Stream, device: DeviceSide, ident: bytes, path_and_mode: str) -> bool:
    """Receive a file in DATA chunks until DONE. On a failure adbd sends FAIL at once, keeps reading
    DATA until the host notices (or DONE), deletes the file and closes the stream."""
    path, _, mode_text = path_and_mode.rpartition(",")
    mode = int(mode_text) if mode_text.isdigit() else 0o644
    host = device.sandbox.host_path(path)
    failed = False

    def fail(reason: str) -> None:
        nonlocal failed
        if not failed:
            failed = True
            stream.write(wire.sync_status(b"FAIL", reason.encode()))

    handle = None
    if host is None:
        fail(f"couldn't create file: {os.strerror(errno.EACCES)}")
    elif stat.S_ISLNK(mode):
        fail("the emulated phone does not take symlinks")
    else:
        host.parent.mkdir(parents=True, exist_ok=True)
        handle = open(host, "wb")
    room = None if device.config.writable_bytes is None else device.config.writable_bytes - device.sandbox.used_bytes()
    while True:
        kind, length = wire.SYNC_REQUEST.unpack(stream.read_exact(wire.SYNC_REQUEST.size))
        if kind == b"DONE":
            break
        if kind != b"DATA" or length > wire.SYNC_DATA_MAX:
            fail("invalid data message" if kind != b"DATA" else "oversize data message")
            break
        chunk = stream.read_exact(length)
        if failed:
            continue
        if room is not None and len(chunk) > room:
            handle.write(chunk[:max(room, 0)])
            fail(f"write failed: {os.strerror(errno.ENOSPC)}")
            continue
        handle.write(chunk)
        if room is not None:
            room -= len(chunk)
    if handle:
        handle.close()
    if failed:
        if handle:
            host.unlink()
        return False
    os.chmod(host, stat.S_IMODE(mode))
    stream.write(wire.sync_status(b"OKAY"))
    return True


def _recv(stream: Stream, device: DeviceSide, ident: bytes, path: str) -> bool:
    host = device.sandbox.host_path(path)
    try:
        if host is None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        handle = open(host, "rb")
    except OSError as e:
        stream.write(wire.sync_status(b"FAIL", f"open failed: {os.strerror(e.errno)}".encode()))
        return False
    with handle:
        while chunk := handle.read(wire.SYNC_DATA_MAX):
            stream.write(wire.sync_status(b"DATA", chunk))
    stream.write(wire.sync_status(b"DONE"))
    return True

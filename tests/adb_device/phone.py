"""An Android phone as the adb server sees it over TCP: the device side of the adb transport.

``EmulatedPhone`` listens on 127.0.0.1 and answers the real adb client
(``adb connect 127.0.0.1:PORT``) as adbd does: CNXN with a device banner, AUTH
against the keys it trusts, and streams (OPEN/OKAY/WRTE/CLSE, one WRTE in
flight per stream until the peer's OKAY) to the ``shell`` and ``sync`` services
of ``services.py``. Faults a real phone shows are switches in ``PhoneConfig``.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import services, wire
from .auth import signature_matches

FEATURES = ("shell_v2", "stat_v2", "fixed_push_mkdir")  # what services.py implements; no ls_v2, cmd, abb


@dataclass
class PhoneConfig:
    props: dict[str, str] = field(default_factory=lambda: {
        "ro.product.cpu.abi": "arm64-v8a",
        "ro.product.name": "dcx_emulated",
        "ro.product.model": "DCX_Emulated_Phone",
        "ro.product.device": "dcx_emulated",
    })
    features: tuple[str, ...] = FEATURES  # without shell_v2: an old phone, stderr merged and no exit status
    trusted_keys: list[str] | None = None  # adbkey.pub lines the phone accepts; None: no auth asked (ro.adb.secure=0)
    df_available_bytes: int = 8 << 30  # what `df` reports free in /data/local/tmp
    writable_bytes: int | None = None  # the disk really fills up past this many bytes in the sandbox (ENOSPC)
    unplug_on: str | None = None  # a shell command containing this drops the phone off the bus mid-run


class EmulatedPhone:
    """One phone: a listening socket, its connections, a sandbox folder standing for /data/local/tmp."""

    def __init__(self, home: Path, config: PhoneConfig, exec_shim: Path, qemu: str):
        self.config = config
        self.device = services.DeviceSide(home, config, exec_shim, qemu)
        self.device.unplug = self.unplug
        self.offered_keys: list[str] = []  # public keys the server sent for the user to accept
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._connections: list[Connection] = []
        self._lock = threading.Lock()
        self._unplugged = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sandbox(self) -> Path:
        return self.device.sandbox.root

    def banner(self) -> bytes:
        props = ";".join(f"{k}={self.config.props.get(k, '')}"
                         for k in ("ro.product.name", "ro.product.model", "ro.product.device"))
        return f"device::{props};features={','.join(self.config.features)}".encode()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # unplugged
            with self._lock:
                if self._unplugged:
                    sock.close()
                    return
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # adbd sends each packet at once too
                connection = Connection(self, sock)
                self._connections.append(connection)
            threading.Thread(target=connection.serve, daemon=True).start()

    def unplug(self) -> None:
        """The cable is pulled: every connection drops, no new one is accepted, processes die."""
        with self._lock:
            self._unplugged = True
            connections, self._connections = self._connections, []
        self._listener.close()
        for connection in connections:
            connection.drop()
        self.device.kill_all()

    def __enter__(self) -> EmulatedPhone:
        return self

    def __exit__(self, *exc) -> None:
        self.unplug()


class Stream:
    """One end of an adb stream on the phone: bytes in from WRTE, bytes out as flow-controlled WRTE."""

    def __init__(self, connection: Connection, local_id: int, remote_id: int):
        self.connection, self.local_id, self.remote_id = connection, local_id, remote_id
        self._ready = threading.Event()
        self._ready.set()  # the OKAY that answers OPEN lets the phone send its first WRTE
        self._write_lock = threading.Lock()
        self._inbox = bytearray()
        self._inbox_changed = threading.Condition()
        self.closed = False

    # host -> phone
    def feed(self, data: bytes) -> None:
        with self._inbox_changed:
            self._inbox += data
            self._inbox_changed.notify_all()

    def read(self) -> bytes:
        """What the host has sent so far (at least one byte), or b"" once the stream is closed."""
        with self._inbox_changed:
            self._inbox_changed.wait_for(lambda: self._inbox or self.closed)
            data = bytes(self._inbox)
            self._inbox.clear()
            return data

    def read_exact(self, size: int) -> bytes:
        with self._inbox_changed:
            self._inbox_changed.wait_for(lambda: len(self._inbox) >= size or self.closed)
            if len(self._inbox) < size:
                raise EOFError(f"stream closed with {len(self._inbox)} of {size} bytes")
            data = bytes(self._inbox[:size])
            del self._inbox[:size]
            return data

    # phone -> host
    def ready(self) -> None:
        self._ready.set()

    def write(self, data: bytes) -> None:
        with self._write_lock:
            size = self.connection.max_payload
            for start in range(0, len(data), size):
                self._ready.wait()
                if self.closed:
                    raise BrokenPipeError("the host closed the stream")
                self._ready.clear()
                self.connection.send(wire.WRTE, self.local_id, self.remote_id, data[start:start + size])

    def close(self) -> None:
        """Close from the phone's side: CLSE to the host, once."""
        if self.mark_closed():
            self.connection.send(wire.CLSE, self.local_id, self.remote_id)

    def mark_closed(self) -> bool:
        """Mark closed (host CLSE, or the phone closing); True the first time."""
        with self._inbox_changed:
            first = not self.closed
            self.closed = True
            self._inbox_changed.notify_all()
        self._ready.set()  # wake a writer so it sees the close
        if first:
            self.connection.forget(self)
        return first


class Connection:
    """One TCP connection from the adb server: handshake, then streams multiplexed by id."""

    def __init__(self, phone: EmulatedPhone, sock: socket.socket):
        self.phone, self.sock = phone, sock
        self.version = wire.VERSION_MIN
        self.max_payload = 4096  # MAX_PAYLOAD_V1 until the host's CNXN says more
        self.cnxn_sent = False
        self.online = False
        self._token = b""
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._next_id = 1

    def drop(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for stream in list(self._streams.values()):
            stream.mark_closed()

    def send(self, command: int, arg0: int, arg1: int, payload: bytes = b"") -> None:
        data = wire.encode(wire.Message(command, arg0, arg1, payload),
                           with_checksum=self.version < wire.VERSION_SKIP_CHECKSUM)
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # the host went away; the read loop ends the connection

    def forget(self, stream: Stream) -> None:
        self._streams.pop(stream.local_id, None)

    def _recv_exact(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return bytes(data)

    def serve(self) -> None:
        try:
            while True:
                command, arg0, arg1, length, check = wire.decode_header(self._recv_exact(wire.HEADER.size))
                payload = self._recv_exact(length)
                # The server checksums everything it sends until it has seen our CNXN at version >= 0x01000001.
                checked = not self.cnxn_sent or self.version < wire.VERSION_SKIP_CHECKSUM
                if checked and check != wire.checksum(payload):
                    raise wire.ProtocolError(f"checksum {check:#x} does not match the payload")
                self._handle(wire.Message(command, arg0, arg1, payload))
        except (EOFError, OSError, wire.ProtocolError):
            self.drop()

    def _handle(self, message: wire.Message) -> None:
        if message.command == wire.CNXN:
            self.version = min(message.arg0, wire.VERSION)
            self.max_payload = min(message.arg1, wire.MAX_PAYLOAD)
            if self.phone.config.trusted_keys is None:
                self._connect()
            else:
                self._ask_auth()
        elif message.command == wire.AUTH:
            self._auth(message)
        elif not self.online:
            return  # protocol.txt: nothing but CNXN/AUTH counts before the connection is up
        elif message.command == wire.OPEN:
            self._open(message.arg0, message.payload.rstrip(b"\0").decode())
        elif message.command == wire.OKAY and (stream := self._streams.get(message.arg1)):
            stream.ready()
        elif message.command == wire.WRTE and (stream := self._streams.get(message.arg1)):
            stream.feed(message.payload)
            self.send(wire.OKAY, stream.local_id, stream.remote_id)
        elif message.command == wire.CLSE and (stream := self._streams.get(message.arg1)):
            stream.mark_closed()

    def _connect(self) -> None:
        self.cnxn_sent = self.online = True
        self.send(wire.CNXN, wire.VERSION, wire.MAX_PAYLOAD, self.phone.banner())

    def _ask_auth(self) -> None:
        self._token = os.urandom(wire.TOKEN_SIZE)
        self.send(wire.AUTH, wire.AUTH_TOKEN, 0, self._token)

    def _auth(self, message: wire.Message) -> None:
        if message.arg0 == wire.AUTH_SIGNATURE and self._token:
            keys = self.phone.config.trusted_keys or []
            if any(signature_matches(self._token, message.payload, key) for key in keys):
                self._connect()
            else:
                self._ask_auth()  # adbd: a fresh token, so the server may try its next key
        elif message.arg0 == wire.AUTH_RSAPUBLICKEY:
            # The "Allow USB debugging?" prompt nobody answers: the phone stays unauthorized.
            self.phone.offered_keys.append(message.payload.rstrip(b"\0").decode())

    def _open(self, remote_id: int, service: str) -> None:
        handler = services.handler(service, self.phone.device)
        if handler is None:
            self.send(wire.CLSE, 0, remote_id)
            return
        stream = Stream(self, self._next_id, remote_id)
        self._next_id += 1
        self._streams[stream.local_id] = stream
        self.send(wire.OKAY, stream.local_id, remote_id)
        threading.Thread(target=handler, args=(stream,), daemon=True).start()

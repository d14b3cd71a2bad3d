"""The bytes an adb device and the adb server exchange: transport messages, sync requests, shell packets.

Transport message: a 24-byte header of six little-endian uint32 (command, arg0,
arg1, payload length, payload checksum, command ^ 0xffffffff) and the payload.
The checksum is the byte sum of the payload; a peer at protocol version
``VERSION_SKIP_CHECKSUM`` or later sends 0 there once both sides have said CNXN.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CNXN = 0x4E584E43
AUTH = 0x48545541
OPEN = 0x4E45504F
OKAY = 0x59414B4F
CLSE = 0x45534C43
WRTE = 0x45545257
COMMANDS = (CNXN, AUTH, OPEN, OKAY, CLSE, WRTE)

VERSION_MIN = 0x01000000
VERSION_SKIP_CHECKSUM = 0x01000001
VERSION = 0x01000001
MAX_PAYLOAD = 1024 * 1024

AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
TOKEN_SIZE = 20

HEADER = struct.Struct("<6I")


@dataclass
class Message:
    command: int
    arg0: int
    arg1: int
    payload: bytes


def checksum(payload: bytes) -> int:
    return sum(payload) & 0xFFFFFFFF


def encode(message: Message, with_checksum: bool) -> bytes:
    check = checksum(message.payload) if with_checksum else 0
    return HEADER.pack(message.command, message.arg0, message.arg1, len(message.payload), check,
                       message.command ^ 0xFFFFFFFF) + message.payload


class ProtocolError(Exception):
    """The peer broke the framing: the connection must be closed (protocol.txt says so)."""


def decode_header(header: bytes) -> tuple[int, int, int, int, int]:
    command, arg0, arg1, length, check, magic = HEADER.unpack(header)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic {magic:#x} for command {command:#x}")
    if command not in COMMANDS:
        raise ProtocolError(f"unknown command {command:#x}")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {length} bytes exceeds {MAX_PAYLOAD}")
    return command, arg0, arg1, length, check


# --- sync: service (SYNC.TXT; file_sync_protocol.h) -------------------------------------------

SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
SYNC_REQUEST = struct.Struct("<4sI")  # id, length (of the path, of a DATA chunk, or an mtime)
STAT_V1 = struct.Struct("<4sIII")  # "STAT", mode, size, mtime
STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")  # "STA2"/"LST2", error, dev, ino, mode, nlink, uid, gid, size, a/m/ctime
DENT_V1 = struct.Struct("<4sIIII")  # "DENT", mode, size, mtime, name length


def sync_status(ident: bytes, message: bytes = b"") -> bytes:
    return SYNC_REQUEST.pack(ident, len(message)) + message


# --- shell,v2: packets (shell_protocol.h) ------------------------------------------------------

SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN = 0, 1, 2, 3, 4  # 5: window size, unused
SHELL_PACKET = struct.Struct("<BI")  # id, length


def shell_packet(ident: int, data: bytes) -> bytes:
    return SHELL_PACKET.pack(ident, len(data)) + data

"""A phone's check of the adb server's AUTH signature against the public keys it trusts.

The server signs the phone's 20-byte token with RSA PKCS#1 v1.5, the token
standing in for a SHA-1 digest. A public key is the server's ``adbkey.pub``
line: base64 of (modulus size in words, n0inv, modulus little-endian, R^2,
exponent), then `` user@host``.
"""

from __future__ import annotations

import base64
import struct

SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


def parse_public_key(line: str) -> tuple[int, int]:
    """(modulus, exponent) of an ``adbkey.pub`` line."""
    blob = base64.b64decode(line.split()[0])
    words, _n0inv = struct.unpack_from("<II", blob)
    size = 4 * words
    modulus = int.from_bytes(blob[8:8 + size], "little")
    (exponent,) = struct.unpack_from("<I", blob, 8 + 2 * size)
    return modulus, exponent


def signature_matches(token: bytes, signature: bytes, public_key: str) -> bool:
    modulus, exponent = parse_public_key(public_key)
    size = (modulus.bit_length() + 7) // 8
    if len(signature) != size:
        return False
    message = pow(int.from_bytes(signature, "big"), exponent, modulus).to_bytes(size, "big")
    suffix = b"\x00" + SHA1_DIGEST_INFO + token
    expected = b"\x00\x01" + b"\xff" * (size - 2 - len(suffix)) + suffix
    return message == expected

"""An emulated Android phone that the real adb client talks to over TCP, for tests without a phone.

It speaks the device side of the adb wire protocol (``phone.py``), runs shell
commands and file transfers in a sandbox folder standing for /data/local/tmp
(``services.py``) and runs aarch64 programs under qemu-aarch64. Faults (no
authorization, a pulled cable, a full disk, a non-arm64 phone) are switches in
``PhoneConfig``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .phone import EmulatedPhone, PhoneConfig

__all__ = ["EmulatedPhone", "PhoneConfig", "build_exec_shim"]


def build_exec_shim(out_dir: Path) -> Path:
    """Compile the execve shim that runs aarch64 programs under qemu (a host shared library)."""
    out = out_dir / "exec_aarch64.so"
    source = Path(__file__).with_name("exec_aarch64.c")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out), str(source), "-ldl"], check=True,
                   capture_output=True, text=True)
    return out

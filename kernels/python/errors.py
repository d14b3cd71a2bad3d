"""The exceptions of dcx, rooted in the kernels.

``DcxError`` is the one type of a mistake a user can fix: its message is one line naming the file,
field, flag, op or library and the fix, and the CLI prints it as that line (exit code 2). It is
defined here, in the bottom layer, because the kernels raise user errors too (bad arguments to an op,
a library that is not built) and import nothing from the rest of dcx; ``dcx.errors`` re-exports it, so
every ``except DcxError`` of the toolchain also catches what the kernels raise.
"""

from __future__ import annotations


class DcxError(Exception):
    """A user-facing error: the message names the file, field, flag, op or library and the fix."""


class KernelError(DcxError):
    """A dcx op refused its arguments, or a kernel library cannot serve a program."""


class KernelsNotBuilt(KernelError):
    """A kernel library is missing or does not load: the message names it and the build script."""

"""The one exception type for mistakes a user can fix.

The CLI turns a ``DcxError`` into a single line on stderr and exit code 2;
anything else is a bug and keeps its traceback. ``DcxError`` is defined by the
kernels (``dcx.kernels.errors``, the bottom layer, which imports nothing from the
rest of dcx), so that what they raise (``KernelError``, ``KernelsNotBuilt``) is a
``DcxError`` too.
"""

from dcx.kernels.errors import DcxError

__all__ = ["DcxError", "StorageError", "UnsupportedOp"]


class UnsupportedOp(DcxError):
    """A backend cannot take an operator of a program: the export of that format fails, the others go on."""

    def __init__(self, op: str, fmt: str, program: str, hint: str = ""):
        self.op, self.format, self.program = op, fmt, program
        super().__init__(f"{fmt} cannot take op {op} in program {program}"
                         + (f": {hint}" if hint else "; export this program to another format"))


class StorageError(DcxError):
    """The file system refused a write (no space, no permission, read-only): stops an export or a training."""

"""The one exception type for mistakes a user can fix.

The CLI turns a ``DcxError`` into a single line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class DcxError(Exception):
    """A user-facing error: the message names the file, field or flag and the fix."""


class UnsupportedOp(DcxError):
    """A backend cannot take an operator of a program: the export of that format fails, the others go on."""

    def __init__(self, op: str, fmt: str, program: str, hint: str = ""):
        self.op, self.format, self.program = op, fmt, program
        super().__init__(f"{fmt} cannot take op {op} in program {program}"
                         + (f": {hint}" if hint else "; export this program to another format"))


class StorageError(DcxError):
    """The file system refused a write (no space, no permission, read-only): stops an export or a training."""

"""The one exception type for mistakes a user can fix.

The CLI turns a ``DcxError`` into a single line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class DcxError(Exception):
    """A user-facing error: the message names the file, field or flag and the fix."""

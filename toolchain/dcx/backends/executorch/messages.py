"""What ExecuTorch (1.5.1) says when it cannot take a program, read in this one place.

Its exporter names the operator it lacks only in the text of its errors; ``tests/test_tool_messages.py`` pins
each pattern to a real error of the installed version.
"""

from __future__ import annotations

from dcx.backends.messages import first_capture

UNSUPPORTED_OP_PATTERNS = (
    r"Missing out variants: \{'([^']+)'",  # to_executorch: an operator with no out-variant kernel
    # to_edge: an operator outside core ATen ("Operator torch._ops.aten.X.default is not in Core ATen opset")
    r"[Oo]perator (?:torch\._ops\.)?([\w:.]+) is not (?:an |in )?[Cc]ore ATen",
    r"([\w.:]+) is not an aten operator",
)


def unsupported_op(error: Exception) -> str | None:
    """The operator ExecuTorch's error names as the one it cannot take, if that is what it says."""
    return first_capture(UNSUPPORTED_OP_PATTERNS, error)

"""What coremltools (9.0) says when it cannot convert an operator, read in this one place (pinned by
``tests/test_tool_messages.py``)."""

from __future__ import annotations

from dcx.backends.messages import first_capture

UNSUPPORTED_OP_PATTERNS = (
    r"Unsupported fx node (\w+)",  # the torch.export frontend: "Unsupported fx node linalg_det, kind linalg_det"
    r"[Cc]onvert(?:ing|er)? (?:for|of) op '([\w.:]+)'",  # the TorchScript frontend: "... op 'X' ..."
)


def unsupported_op(error: Exception) -> str | None:
    return first_capture(UNSUPPORTED_OP_PATTERNS, error)

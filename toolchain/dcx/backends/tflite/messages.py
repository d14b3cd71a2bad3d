"""What the TFLite converter (tensorflow-cpu 2.21) says when a graph needs non-builtin ops, read in this one place
(pinned by ``tests/test_tool_messages.py``)."""

from __future__ import annotations


def converter_reason(error: Exception) -> str:
    """The converter's one useful line (which ops are not builtins) out of its MLIR dump."""
    lines = [ln.strip() for ln in str(error).splitlines()]
    ops = [ln for ln in lines if ln.startswith(("TF Select ops:", "Custom ops:", "Flex ops:"))]
    if ops:
        return "non-builtin ops needed (" + "; ".join(ops) + ")"
    errors = [ln for ln in lines if "error:" in ln]
    return (errors[0].split("error:", 1)[1].strip() if errors else (lines[0] if lines else repr(error)))[:300]

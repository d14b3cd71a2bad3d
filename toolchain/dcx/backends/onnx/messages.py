"""What ``torch.onnx.export`` (torch 2.13, TorchScript exporter) says when an operator has no ONNX form, read in
this one place (pinned by ``tests/test_tool_messages.py``)."""

from __future__ import annotations

from dcx.backends.messages import first_capture


def unsupported_op(error: Exception) -> str | None:
    """The operator in "Exporting the operator 'aten::X' to ONNX opset version N is not supported"."""
    return first_capture((r"Exporting the operator '([\w:.]+)' to ONNX",), error)

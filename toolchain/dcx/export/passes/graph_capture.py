"""Graph capture: the one place a device program becomes an ``ExportedProgram``.

Training programs get a joint forward+backward graph: the loss, then one
gradient per trainable parameter; frozen parameters stay constants.
"""

from __future__ import annotations

import warnings

import torch
from torch.export import ExportedProgram

from dcx.programs import DeviceProgram


def capture(program: DeviceProgram) -> ExportedProgram:
    """``torch.export`` of the program's module at its example inputs (static shapes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.export.export(program.module, program.example_inputs, strict=False)


def capture_joint(program: DeviceProgram) -> ExportedProgram:
    """Forward and backward in one graph, for on-device training runtimes."""
    from torch.export.experimental import _export_forward_backward

    return _export_forward_backward(capture(program))


def gradient_targets(joint: ExportedProgram) -> list[str]:
    """The parameter names whose gradients the joint graph returns, in output order."""
    return [s.target for s in joint.graph_signature.output_specs if s.kind.name == "GRADIENT_TO_PARAMETER"]

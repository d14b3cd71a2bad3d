"""Graph capture: the one place a device program's module becomes an ``ExportedProgram``.

Training programs get a joint forward+backward graph: the loss, then one
gradient per trainable parameter; frozen parameters stay constants.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.export import ExportedProgram

from dcx.passes import PassContext
from dcx.programs import DeviceProgram


def capture_module(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> ExportedProgram:
    """``torch.export`` at the example inputs (static shapes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.export.export(module, example_inputs, strict=False)


def capture(program: DeviceProgram) -> ExportedProgram:
    return capture_module(program.module, program.example_inputs)


def joint_graph(ep: ExportedProgram) -> ExportedProgram:
    """Forward and backward in one graph, for on-device training runtimes."""
    from torch.export.experimental import _export_forward_backward

    return _export_forward_backward(ep)


def capture_joint(program: DeviceProgram) -> ExportedProgram:
    return joint_graph(capture(program))


def gradient_targets(joint: ExportedProgram) -> list[str]:
    """The parameter names whose gradients the joint graph returns, in output order."""
    return [s.target for s in joint.graph_signature.output_specs if s.kind.name == "GRADIENT_TO_PARAMETER"]


class CaptureProgram:
    """nn.Module -> ExportedProgram at the program's example inputs."""

    name = "capture_program"

    def run(self, module: nn.Module, ctx: PassContext) -> ExportedProgram:
        ep = capture_module(module, ctx.program.example_inputs)
        ctx.report(self.name, nodes=sum(1 for n in ep.graph.nodes if n.op == "call_function"))
        return ep


class JointGraph:
    """ExportedProgram -> joint forward+backward ExportedProgram; every trainable parameter must get a gradient."""

    name = "joint_graph"

    def run(self, ep: ExportedProgram, ctx: PassContext) -> ExportedProgram:
        joint = joint_graph(ep)
        grads = gradient_targets(joint)
        missing = sorted(set(ctx.program.trainable) - set(grads))
        if missing:
            raise RuntimeError(f"{ctx.program.name}: joint graph returns no gradient for {missing}")
        ctx.report(self.name, gradients=len(grads))
        return joint

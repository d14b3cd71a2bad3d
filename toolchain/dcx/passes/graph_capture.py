"""Graph capture: the one place a device program's module becomes an ``ExportedProgram``.

Training programs get a joint forward+backward graph: the loss, then one
gradient per trainable parameter; frozen parameters stay constants.

Attention is captured as its composite, never as a fused kernel: no
exporter takes PyTorch's MHA fast path (``_native_multi_head_attention``) or
the CPU flash-attention backward.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
from torch import nn
from torch.export import ExportedProgram

from dcx.passes import PassContext
from dcx.programs import DeviceProgram


@contextlib.contextmanager
def composite_attention() -> Iterator[None]:
    """``nn.MultiheadAttention`` in eval mode under no_grad takes PyTorch's fast path, one fused op that ONNX,
    Core ML and TFLite lack: while tracing, it goes through ``scaled_dot_product_attention`` instead (same values).
    Every capture (``torch.export`` here, the exporters' own tracers) runs inside it."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def capture_module(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> ExportedProgram:
    """``torch.export`` at the example inputs (static shapes)."""
    with warnings.catch_warnings(), composite_attention():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.export.export(module, example_inputs, strict=False)


def capture(program: DeviceProgram) -> ExportedProgram:
    return capture_module(program.module, program.example_inputs)


def _math_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``scaled_dot_product_attention`` as its math kernel, given the additive mask that its front end makes of
    a boolean one (the math kernel adds the mask it gets)."""
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask.logical_not(), float("-inf"))
    return torch.ops.aten._scaled_dot_product_attention_math.default(
        q, k, v, attn_mask, dropout_p, is_causal, None, scale=scale, enable_gqa=enable_gqa)[0]


def joint_graph(ep: ExportedProgram) -> ExportedProgram:
    """Forward and backward in one graph, for on-device training runtimes.

    ``scaled_dot_product_attention`` becomes its math form (matmuls and a softmax) first: left alone it
    dispatches to the CPU flash kernel, whose backward is no core-ATen op and has no ExecuTorch kernel."""
    from torch.export.experimental import _export_forward_backward

    sdpa = torch.ops.aten.scaled_dot_product_attention.default
    if any(n.target == sdpa for n in ep.graph.nodes):
        ep = ep.run_decompositions({sdpa: _math_attention})
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

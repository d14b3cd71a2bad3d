"""Frozen layers of a training graph to XNNPACK: the forward of layers whose weights never change.

Why: XNNPACK runs the forward of convolutional layers faster than the dcx training kernels
(``dcx bench training`` times the step of each training program with a frozen part both ways: as
exported, and with ``ExecuTorchOptions(frozen_xnnpack=False)``, the frozen layers on the dcx kernels
too), but it packs its weights once, at load time, so it may hold no layer that trains. In a joint
forward+backward graph the part it may take is exact: the nodes that read a user input and no
trainable parameter.
Their values do not change when SGD updates the weights, and no gradient is among them (every
gradient reads the loss, which reads the trainable parameters). The DC-CCL mimic is such a part; so
is a frozen backbone under a trainable head.

``frozen_region`` finds that part; ``lower_frozen_to_xnnpack`` lowers a training program to the
edge dialect with an XNNPACK partitioner restricted to it. The fast-training pass leaves the region
alone (``FastTraining(leave_frozen=True)``) so that XNNPACK, not a dcx kernel, gets it (but for an RGB
stem, which a dcx kernel runs faster); nodes of the region that XNNPACK does not take run on the
portable kernels, and the report names them.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from dcx.passes import PassContext


def _reads(ep: ExportedProgram) -> tuple[dict[fx.Node, bool], dict[fx.Node, bool]]:
    """Per node: whether its value depends on a user input, and whether on a trainable parameter."""
    user = {s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    trainable = trainable_parameters(ep)
    reads_input: dict[fx.Node, bool] = {}
    reads_trainable: dict[fx.Node, bool] = {}
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            reads_input[node], reads_trainable[node] = node.name in user, node.name in trainable
            continue
        inputs = node.all_input_nodes
        reads_input[node] = any(reads_input.get(i, False) for i in inputs)
        reads_trainable[node] = any(reads_trainable.get(i, False) for i in inputs)
    return reads_input, reads_trainable


def frozen_region(ep: ExportedProgram) -> set[fx.Node]:
    """The ``call_function`` nodes of ``ep`` that read a user input and no trainable parameter."""
    reads_input, reads_trainable = _reads(ep)
    return {n for n in ep.graph.nodes if n.op == "call_function" and reads_input[n] and not reads_trainable[n]}


def trainable_parameters(ep: ExportedProgram) -> set[str]:
    """Names of the placeholders of the parameters whose gradients the joint graph returns."""
    sig = ep.graph_signature
    trained = {s.target for s in sig.output_specs if s.kind == OutputKind.GRADIENT_TO_PARAMETER}
    return {s.arg.name for s in sig.input_specs if s.kind == InputKind.PARAMETER and s.target in trained}


_LAYER_OPS = {"convolution", "linear", "addmm", "mm"}


def _op_name(node: fx.Node) -> str:
    """``convolution`` for ``aten.convolution.default`` (ATen or edge dialect)."""
    parts = str(getattr(node.target, "__name__", "")).split(".")
    return parts[-2] if len(parts) >= 2 else ""


def _frozen_partitioner():
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    from dcx.backends.executorch.passes.xnnpack_configs import XNNPACK_CONFIGS

    class FrozenXnnpackPartitioner(XnnpackPartitioner):
        """XNNPACK's partitioner, offered only the groups of nodes of the frozen region (with the constants they read)."""

        def get_matched_nodes_from_configs(self, ep: ExportedProgram) -> list[list[fx.Node]]:
            reads_input, reads_trainable = _reads(ep)  # a group may hold a frozen weight's transpose
            return [group for group in super().get_matched_nodes_from_configs(ep)
                    if not any(reads_trainable[n] for n in group) and any(reads_input[n] for n in group)]

        def generate_partitions(self, ep: ExportedProgram) -> list:
            """Only partitions that compute a layer: a delegate around data movement alone costs more than it saves."""
            return [p for p in super().generate_partitions(ep)
                    if any(_op_name(n) in _LAYER_OPS for n in p.nodes)]

    return FrozenXnnpackPartitioner(configs=XNNPACK_CONFIGS)


def restore_linears(ep: ExportedProgram) -> int:
    """``addmm(b, x, t(W))`` / ``mm(x, t(W))`` of the frozen region back to ``linear(x, W, b)``, in place:
    the joint graph decomposes linear layers, and XNNPACK takes a linear only as ``linear`` over a
    constant weight. The number restored."""
    A = torch.ops.aten
    transposes = (A.t.default, A.permute.default, A.transpose.int)
    restored = 0
    for node in frozen_region(ep):
        if node.target == A.addmm.default and len(node.args) == 3 and not node.kwargs:
            b, x, wt = node.args
        elif node.target == A.mm.default:
            (x, wt), b = node.args, None
        else:
            continue
        if not (isinstance(wt, fx.Node) and wt.target in transposes and wt.args[0].op == "placeholder"
                and len(wt.meta["val"].shape) == 2):
            continue
        with ep.graph.inserting_before(node):
            linear = ep.graph.call_function(A.linear.default, (x, wt.args[0], b))
        linear.meta.update(node.meta)
        node.replace_all_uses_with(linear)
        restored += 1
    ep.graph.eliminate_dead_code()
    ep.graph_module.recompile()
    return restored


def lower_frozen_to_xnnpack(ep: ExportedProgram, ctx: PassContext | None = None):
    """``ep`` -> edge program with its frozen region delegated to XNNPACK (what XNNPACK takes of it)."""
    from executorch.exir import to_edge_transform_and_lower

    restored_ep = copy.deepcopy(ep)
    restored = restore_linears(restored_ep)
    try:
        edge = to_edge_transform_and_lower(restored_ep, partitioner=[_frozen_partitioner()])
    except RuntimeError:  # a restored linear XNNPACK declined cannot stay undecomposed: keep them decomposed (if
        # that fails too, its error is the program's own and reaches the caller)
        restored, edge = 0, to_edge_transform_and_lower(ep, partitioner=[_frozen_partitioner()])
    if ctx is not None:
        lowered = edge.exported_program()
        delegates = [n for n in lowered.graph.nodes if n.op == "call_function" and "executorch_call_delegate" in str(n.target)]
        left = sorted({_op_name(n) for n in frozen_region(lowered) if n.target is not operator.getitem
                       and not any(k in str(n.target) for k in ("executorch_call_delegate", "dcx::"))})
        ctx.report("lower_frozen_to_xnnpack", linears_restored=restored, delegates=len(delegates),
                   frozen_ops_left_on_portable=left)
    return edge

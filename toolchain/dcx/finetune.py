"""Fine-tuning only the last k blocks, and the check that the exported training graph then stops its backward at
the lowest trainable block.

A phone that fine-tunes the head of a large pretrained network must not pay for gradients of the frozen layers
below it. ``train_last_blocks`` freezes a registered model (``dcx.models.registry``) below its last k blocks;
``gradient_reach`` reads a joint forward+backward graph (what ``dcx.passes.graph_capture.capture_joint`` gives
the ExecuTorch exporter) and lists the backward ops that compute a gradient below the trainable layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn
from torch.export import ExportedProgram

from dcx.errors import DcxError
from dcx.passes.graph_capture import gradient_targets


def train_last_blocks(model: nn.Module, k: int) -> int:
    """Freeze every block of ``model.blocks()`` but the last ``k``: no gradient, and inference mode (a frozen
    batch norm keeps its statistics); the last k are left as they are. Returns the index of the lowest trainable
    block."""
    blocks = model.blocks()
    if not 1 <= k <= len(blocks):
        raise DcxError(f"last {k} blocks: {type(model).__name__} has {len(blocks)} blocks; "
                       f"choose k in 1..{len(blocks)}")
    for block in blocks[:-k]:
        block.requires_grad_(False).eval()
    return len(blocks) - k


@dataclass
class GradientReach:
    backward_ops: int  # ops of the backward part of the joint graph
    below: list[str]  # those that compute a gradient below the trainable layers, each "node (why)"


def gradient_reach(joint: ExportedProgram) -> GradientReach:
    """The backward ops of ``joint`` that reach below its trainable layers.

    The *frozen region* is the forward ops that depend on no trainable parameter (the frozen blocks, the
    inputs' own processing). A backward op reaches below when it reads a frozen-region value that no trainable
    forward op reads (it is differentiating a frozen layer), or when it asks for the gradient of a value that
    depends on no trainable parameter (``output_mask[0]`` of ``convolution_backward`` or of a norm's backward:
    a frozen input's gradient).
    """
    graph = joint.graph
    trainable = set(gradient_targets(joint))
    params = joint.graph_signature.inputs_to_parameters
    nodes = {n.name: n for n in graph.nodes}
    forward = _ancestors([nodes[s.arg.name] for s in joint.graph_signature.output_specs
                          if s.kind.name in ("LOSS_OUTPUT", "BUFFER_MUTATION")])
    depends: set[fx.Node] = set()  # forward values that depend on a trainable parameter
    for n in graph.nodes:
        if n.op == "placeholder" and params.get(n.name) in trainable or \
                n in forward and any(a in depends for a in n.all_input_nodes):
            depends.add(n)
    frozen = {n for n in forward if n not in depends}
    boundary = {n for n in frozen if any(u in depends for u in n.users)}
    backward = [n for n in graph.nodes if n.op == "call_function" and n not in forward]
    below = []
    for n in backward:
        inside = [a.name for a in n.all_input_nodes if a in frozen and a not in boundary and a.op != "placeholder"]
        if inside:
            below.append(f"{n.name} (reads frozen {', '.join(inside)})")
        mask, source = _input_gradient(n)
        if mask and source not in depends:
            below.append(f"{n.name} (gradient of frozen {source.name})")
    return GradientReach(len(backward), below)


def _ancestors(roots: list[fx.Node]) -> set[fx.Node]:
    seen, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += n.all_input_nodes
    return seen


def _input_gradient(node: fx.Node) -> tuple[bool, fx.Node | None]:
    """For a backward op with an ``output_mask`` (convolution, batch and layer norm): whether it computes its
    input's gradient, and that input."""
    schema = getattr(node.target, "_schema", None)
    names = [a.name for a in schema.arguments] if schema else []
    if "output_mask" not in names or "input" not in names:
        return False, None
    args = dict(zip(names, node.args), **node.kwargs)
    return bool(args["output_mask"][0]), args["input"]

"""``fold_frozen_batch_norm``: a frozen convolution and the inference-mode batch norm after it become one
convolution whose weight and bias are ``dcx.export.weight_locations.fold`` of theirs.

Why: the TFLite converter folds such pairs itself, in its own arithmetic, so its stored filters matched no
computation verify could repeat. Folded here, by the function XNNPACK and the Core ML and ONNX converters use,
each stored filter is exactly what verify recomputes from the reference. Runs on the core-ATen graph.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, InputSpec, TensorArgument

from dcx.passes import PassContext
from dcx.passes.batch_norm_fold import conv_norms, fold


def add_constant(ep: ExportedProgram, name: str, value: torch.Tensor) -> torch.fx.Node:
    """A new lifted tensor constant of ``ep``, placed before the user inputs as ``torch.export`` orders them."""
    specs = ep.graph_signature.input_specs
    first_user = next(i for i, s in enumerate(specs) if s.kind == InputKind.USER_INPUT)
    anchor = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == specs[first_user].arg.name)
    with ep.graph.inserting_before(anchor):
        node = ep.graph.placeholder(name)
    node.meta["val"] = value
    ep.constants[name] = value
    specs.insert(first_user, InputSpec(InputKind.CONSTANT_TENSOR, TensorArgument(node.name), target=name))
    return node


def fold_frozen_batch_norm(ep: ExportedProgram, ctx: PassContext) -> ExportedProgram:
    weights = {**{k: v.detach().numpy() for k, v in ep.state_dict.items()},
               **{k: v.detach().numpy() for k, v in ep.constants.items() if isinstance(v, torch.Tensor)}}
    folded = 0
    for conv, norm, pair in conv_norms(ep, set(ctx.program.frozen)):
        weight, bias = fold(pair, weights)
        stem = pair.conv_weight.replace(".", "_")
        args = list(conv.args) + [None] * (3 - len(conv.args))
        args[1] = add_constant(ep, f"folded_{stem}", torch.from_numpy(np.ascontiguousarray(weight)))
        args[2] = add_constant(ep, f"folded_bias_{stem}", torch.from_numpy(np.ascontiguousarray(bias)))
        conv.args = tuple(args)
        for user in list(norm.users):
            if user.target is operator.getitem and user.args[1] == 0:
                user.replace_all_uses_with(conv)
                ep.graph.erase_node(user)
        if not norm.users:
            ep.graph.erase_node(norm)
            folded += 1
    ep.graph.lint()
    ep.graph_module.recompile()
    ctx.report("fold_frozen_batch_norm", folded=folded)
    return ep

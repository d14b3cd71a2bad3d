"""A frozen convolution followed by an inference-mode batch norm, and the one weight and bias they fold into.

The fold is ``torch.nn.utils.fusion.fuse_conv_bn_weights``: what XNNPACK and the Core ML and ONNX converters
compute, and what the TFLite exporter's ``fold_frozen_batch_norm`` pass computes before conversion, so that
verify can recompute every stored fold from the reference bit for bit (``dcx.export.weight_locations``).
"""

from __future__ import annotations

import numpy as np
import torch

from dcx.manifest import ConvNorm

BATCH_NORMS = ("aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default")
CONVOLUTIONS = ("aten.conv2d.default", "aten.convolution.default", "aten.conv1d.default")


def conv_norms(ep: torch.export.ExportedProgram, frozen: set[str]
               ) -> list[tuple[torch.fx.Node, torch.fx.Node, ConvNorm]]:
    """(convolution node, batch-norm node, their weights' names) for every convolution whose only user is an
    inference-mode batch norm, where every weight of both is frozen."""
    sig = ep.graph_signature
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}

    def name(arg) -> str | None:
        return names.get(arg.name) if isinstance(arg, torch.fx.Node) else None

    found = []
    for node in ep.graph.nodes:
        if node.op != "call_function" or str(node.target) not in BATCH_NORMS:
            continue
        legit = str(node.target) == BATCH_NORMS[1]
        conv = node.args[0]
        if not legit and node.args[5] or not (isinstance(conv, torch.fx.Node) and str(conv.target) in CONVOLUTIONS
                                              and len(conv.users) == 1):
            continue
        weight, bias, mean, var = (name(a) for a in node.args[1:5])
        conv_weight = name(conv.args[1])
        conv_bias = name(conv.args[2]) if len(conv.args) > 2 else None
        used = [n for n in (conv_weight, conv_bias, weight, bias, mean, var) if n is not None]
        given = [a for a in (conv.args[1], conv.args[2] if len(conv.args) > 2 else None, *node.args[1:5])
                 if a is not None]
        if conv_weight and mean and var and len(used) == len(given) and set(used) <= frozen:
            eps = node.args[-1] if legit else node.args[7]
            found.append((conv, node, ConvNorm(conv_weight, conv_bias, weight, bias, mean, var, float(eps))))
    return found


def fold(pair: ConvNorm, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The folded weight and bias, as ``torch.nn.utils.fusion.fuse_conv_bn_weights`` computes them."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    def tensor(name: str | None) -> torch.Tensor | None:
        return None if name is None else torch.from_numpy(np.ascontiguousarray(weights[name]))

    w, b = fuse_conv_bn_weights(tensor(pair.conv_weight), tensor(pair.conv_bias), tensor(pair.running_mean),
                                tensor(pair.running_var), pair.eps, tensor(pair.norm_weight), tensor(pair.norm_bias))
    return w.detach().numpy(), b.detach().numpy()

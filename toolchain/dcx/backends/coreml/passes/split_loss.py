"""Core ML pass: cut a training program's loss off its graph.

A Core ML updatable model is a *predictor* plus a loss layer declared beside
the network (``updateParams.lossLayers``); the loss is never part of the
layer graph. This pass finds the loss call that a training program returns
(``F.cross_entropy`` or ``F.binary_cross_entropy_with_logits``, mean
reduction), makes the graph return the loss's input (the logits) instead and
drops the target placeholder. What kind of loss it was travels in ``LossHead``
for ``coreml_loss_head`` to rebuild in Core ML's own terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx
import torch.nn.functional as F

from dcx.errors import DcxError

SUPPORTED_LOSSES = {
    F.cross_entropy: "cross_entropy",
    F.binary_cross_entropy_with_logits: "bce_with_logits",
}
# Keyword arguments that must keep their defaults for the loss to be expressible in Core ML.
_DEFAULTS = {"weight": None, "pos_weight": None, "ignore_index": -100, "label_smoothing": 0.0,
             "reduction": "mean", "size_average": None, "reduce": None}


@dataclass(frozen=True)
class LossHead:
    kind: str  # "cross_entropy" | "bce_with_logits"
    target: str  # the program input that is the loss target
    logits_shape: tuple[int, ...]  # per batch, as PyTorch computes them


def split_loss(gm: fx.GraphModule, program_name: str = "program") -> tuple[fx.GraphModule, LossHead]:
    """Make ``gm`` return the logits its loss consumed; returns it and the loss description."""
    graph = gm.graph
    output = next(n for n in graph.nodes if n.op == "output")
    loss = output.args[0]
    if not (isinstance(loss, fx.Node) and loss.op == "call_function" and loss.target in SUPPORTED_LOSSES):
        what = getattr(getattr(loss, "target", None), "__name__", repr(loss))
        raise DcxError(f"{program_name}: the training loss is {what}; the coreml exporter supports "
                       f"{', '.join(f.__name__ for f in SUPPORTED_LOSSES)} (mean reduction) as the returned value")
    logits, target = loss.args[:2]
    for key, default in _DEFAULTS.items():
        if key in loss.kwargs and loss.kwargs[key] != default:
            raise DcxError(f"{program_name}: {loss.target.__name__}({key}={loss.kwargs[key]!r}) has no Core ML "
                           f"loss layer: use the default {key}={default!r}")
    if not (isinstance(target, fx.Node) and target.op == "placeholder"):
        raise DcxError(f"{program_name}: the loss target must be a program input, not a computed tensor "
                       "(Core ML's rule: the loss target is not generated within the graph)")
    shape = tuple(logits.meta["tensor_meta"].shape) if "tensor_meta" in logits.meta else ()
    output.args = (logits,)
    graph.erase_node(loss)
    if not target.users:
        graph.erase_node(target)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm, LossHead(SUPPORTED_LOSSES[loss.target], str(target.target), shape)


def placeholder_names(gm: fx.GraphModule) -> list[str]:
    return [str(n.target) for n in gm.graph.nodes if n.op == "placeholder"]

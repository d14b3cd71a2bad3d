"""Core ML pass: split logits of the form ``frozen(x) + trainable(x)`` into their two terms.

DC-CCL's device objective is ``CE(M(x) + S(x), y)`` with the mimic M frozen.
Core ML rejects an elementwise ``add`` between an updatable layer and the
loss, so the sum cannot feed the loss. This pass makes the predictor return
``(S(x), M(x), M(x) + S(x))``: the app reads both terms in one prediction and
``coreml_loss_head`` trains S through a loss on ``S(x)`` alone (see its
gradient-matching MSE target). The sum stays an output for on-device
prediction; it is a child of the loss input, never its ancestor.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.fx as fx

_ADDS = {operator.add, torch.add}


@dataclass(frozen=True)
class FrozenOffset:
    trainable_output: str  # e.g. "small_logits": S(x), what the loss trains
    frozen_output: str  # e.g. "mimic_logits": M(x), the frozen offset
    sum_output: str  # "logits": M(x) + S(x)


def _upstream(node: fx.Node) -> Iterator[fx.Node]:
    """``node`` and every node it depends on, each once (depth first)."""
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            yield n
            stack.extend(n.all_input_nodes)


def _depends_on_trainable(node: fx.Node, trainable: set[str], gm: fx.GraphModule) -> bool:
    for n in _upstream(node):
        if n.op == "get_attr" and n.target in trainable:
            return True
        if n.op == "call_module":
            own = (f"{n.target}.{p}" for p, _ in gm.get_submodule(n.target).named_parameters())
            if any(name in trainable for name in own):
                return True
    return False


def _module_prefix(node: fx.Node) -> str:
    """The top-level module the term comes from (``small`` for ``small.fc2``)."""
    for n in _upstream(node):
        if n.op in ("call_module", "get_attr"):
            return str(n.target).split(".")[0]
    return "term"


def split_frozen_offset(gm: fx.GraphModule, trainable: set[str]) -> FrozenOffset | None:
    """Rewrite ``return a + b`` (one term frozen, one trainable) to return the terms and the sum; else None."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    logits = output.args[0]
    if not (isinstance(logits, fx.Node) and logits.op == "call_function" and logits.target in _ADDS
            and len(logits.args) == 2 and all(isinstance(a, fx.Node) for a in logits.args)):
        return None
    a, b = logits.args
    a_trains, b_trains = (_depends_on_trainable(t, trainable, gm) for t in (a, b))
    if a_trains == b_trains:
        return None
    train_term, frozen_term = (a, b) if a_trains else (b, a)
    names = FrozenOffset(f"{_module_prefix(train_term)}_logits", f"{_module_prefix(frozen_term)}_logits", "logits")
    if names.trainable_output == names.frozen_output:
        names = FrozenOffset("trainable_logits", "frozen_logits", "logits")
    output.args = ((train_term, frozen_term, logits),)
    gm.recompile()
    return names

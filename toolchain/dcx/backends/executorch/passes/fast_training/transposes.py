"""Clean-up: a transpose of a transpose (what is left of ``W^T`` once the backward product reading
``(W^T)^T`` is gone, and what the joint graph writes itself) reads its source directly.

No dcx op: the pair becomes dead and ``Rewriter.finish`` drops it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from .rewriter import A, Rule, _is_transpose


@dataclass(frozen=True)
class DoubleTranspose(Rule):
    """``permute(permute(x, [1, 0]), [1, 0])`` -> ``x`` for its users."""

    targets = (A.permute.default,)

    def match(self, rw, node: fx.Node):
        return node if _is_transpose(node) and _is_transpose(node.args[0]) else None

    def emit(self, rw, node):
        node.replace_all_uses_with(node.args[0].args[0])
        return True

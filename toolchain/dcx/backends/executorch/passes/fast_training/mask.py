"""ReLU / ReLU6 masks that no fused backward folded in -> ``dcx::threshold_backward``.

Stock ExecuTorch runs ``where(le(x, 0), 0, g)`` (ReLU6: ``le`` or ``ge``) as three kernels over the
tensor; the mask is recognized by ``Rewriter.relu_mask``, shared with the rules that fold it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from .rewriter import A, Rule, _ops


@dataclass(frozen=True)
class ReluMask(Rule):
    """``where(x <= lo [or x >= hi], 0, grad)`` over float32 tensors of one shape."""

    targets = (A.where.self,)

    def match(self, rw, node: fx.Node):
        m = rw.relu_mask(node)
        return (node, *m) if m else None

    def emit(self, rw, m):
        node, grad, x, lo, hi = m
        return rw.emit(_ops().threshold_backward.default, (grad, x, lo, hi), [node], [node])

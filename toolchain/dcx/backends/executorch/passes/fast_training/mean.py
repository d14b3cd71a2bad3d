"""The global average pool, ``mean`` over H and W, and its gradient -> ``dcx::avg_pool2d`` /
``dcx::avg_pool2d_backward`` with the whole plane as the window (MobileNet's head).

The gradient is no pooling op in the joint graph but ``expand(g [n, c, 1, 1], [n, c, H, W]) / (H * W)``,
anchored on the ``div``; nothing is declined (a ``div`` or ``mean`` of another shape is just that).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from .rewriter import A, Rule, _is, _ops, _shape, _tensor


@dataclass(frozen=True)
class GlobalMean(Rule):
    """``mean`` over dims 2 and 3 of a float32 NCHW tensor, kept as 1 x 1."""

    targets = (A.mean.dim,)

    def match(self, rw, node: fx.Node):
        x, dims = node.args[0], node.args[1]
        if _tensor(x, dim=4) and sorted(d % 4 for d in dims) == [2, 3] and len(node.args) > 2 and node.args[2]:
            return node, x, list(_shape(x)[2:])
        return None

    def emit(self, rw, m):
        node, x, plane = m
        return rw.emit(_ops().avg_pool2d.default, (x, plane, plane, [0, 0], True), [node], [node])


@dataclass(frozen=True)
class GlobalMeanBackward(Rule):
    """``div.Scalar(expand(g, [n, c, H, W]), H * W)`` where the graph holds a ``mean`` over an [n, c, H, W]
    input (the pooling kernel's backward reads that input only for its shape)."""

    targets = (A.div.Scalar,)

    def match(self, rw, node: fx.Node):
        spread = node.args[0]
        if not _is(spread, A.expand.default) or not _tensor(spread, dim=4):
            return None
        n, c, h, w = _shape(spread)
        if _shape(spread.args[0]) != (n, c, 1, 1) or node.args[1] != h * w:
            return None
        means = [m for m in rw.graph.nodes if _is(m, A.mean.dim) and _tensor(m.args[0], dim=4)
                 and _shape(m.args[0]) == (n, c, h, w)]
        return (node, spread, means[0].args[0], [h, w]) if means else None

    def emit(self, rw, m):
        node, spread, x, plane = m
        return rw.emit(_ops().avg_pool2d_backward.default, (spread.args[0], x, plane, plane, [0, 0], True),
                       [spread, node], [node])

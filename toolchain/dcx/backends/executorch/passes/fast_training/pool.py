"""Max and average pooling and their backward -> ``dcx::max_pool2d*`` / ``dcx::avg_pool2d*`` (stock
ExecuTorch lacks some of the backward kernels and is slow on the others).

The four stock ops share one argument parser (their schema names) and one eligibility check
(``dcx.kernels.training.pool.eligible``); ``Pool2d(backward=True)`` is the backward rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from dcx.kernels.training.pool import eligible as eligible_pool2d

from .rewriter import A, Rule, _getitems, _ops, _pair, _shape, _tensor

# schema argument names of the pooling ops, after (grad_output,) for the backward ones
_MAX_POOL = ("self", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "indices")
_AVG_POOL = ("self", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_MAX = (A.max_pool2d_with_indices.default, A.max_pool2d_with_indices_backward.default)


@dataclass(frozen=True)
class Pool2d(Rule):
    """2-D max or average pooling (``backward``: its gradient) over float32 NCHW input, without
    ceil_mode, dilation or a divisor override, with padding at most half the window."""

    backward: bool = False

    @property
    def targets(self) -> tuple:
        return (A.max_pool2d_with_indices_backward.default, A.avg_pool2d_backward.default) if self.backward \
            else (A.max_pool2d_with_indices.default, A.avg_pool2d.default)

    def match(self, rw, node: fx.Node):
        is_max = node.target in _MAX
        a = dict(zip(_MAX_POOL if is_max else _AVG_POOL, node.args[1:] if self.backward else node.args))
        x, k = a["self"], _pair(a["kernel_size"], 1)
        s, p = (_pair(a["stride"], 1) if a.get("stride") else k), _pair(a.get("padding", 0), 0)
        if a.get("ceil_mode") or (is_max and _pair(a.get("dilation", 1), 1) != [1, 1]) or a.get("divisor_override"):
            return "pooling with ceil_mode, dilation or divisor_override has no dcx kernel"
        if not _tensor(x, dim=4) or not eligible_pool2d(_shape(x), k, s, p):
            return "pooling needs float32 NCHW input and padding at most half the window"
        return node, is_max, a, x, k, s, p

    def emit(self, rw, m):
        node, is_max, a, x, k, s, p = m
        if is_max and self.backward:
            return rw.emit(_ops().max_pool2d_backward.default, (node.args[0], x, a["indices"], k, s, p), [node], [node])
        if is_max:
            items = _getitems(node)
            return rw.emit(_ops().max_pool2d.default, (x, k, s, p), [node], [items.get(0), items.get(1)])
        include = bool(a.get("count_include_pad", True))
        op, args = ((_ops().avg_pool2d_backward.default, (node.args[0], x, k, s, p, include)) if self.backward
                    else (_ops().avg_pool2d.default, (x, k, s, p, include)))
        return rw.emit(op, args, [node], [node])

"""The decomposed backward of a layer norm over the last dim with an affine weight ->
``dcx::layer_norm_backward``.

``native_layer_norm`` saves its mean and rstd for the backward; autograd then spells the gradient as a
dozen elementwise ops and reductions. The rule anchors on the forward node, finds the gradient nodes
from the saved rstd and the weight, and checks them against the reference before rewriting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from .rewriter import A, Rule, _descendant, _getitems, _is, _ops, _reference, _shape, _tensor


@dataclass(frozen=True)
class LayerNormBackward(Rule):
    """grad x (from rstd), grad weight (``sum(g * x_hat)`` over the rows) and grad bias (``sum(g)``), the
    last two where the graph computes them; a layer norm whose rstd nothing reads is frozen."""

    targets = (A.native_layer_norm.default,)

    def match(self, rw, ln: fx.Node):
        x, shape, w = ln.args[0], list(ln.args[1]), ln.args[2]
        items = _getitems(ln)
        mean, rstd = items.get(1), items.get(2)
        if mean is None or rstd is None or not rstd.users:
            return None  # a frozen layer: no backward
        if len(shape) != 1 or not _tensor(x) or w is None or not _tensor(w, dim=1):
            return "layer norm backward is fused for the last dim with an affine weight"
        scaled = [u for u in w.users if _is(u, A.mul.Tensor) and u.args[1] is w]  # g * w
        if len(scaled) != 1:
            return "not the backward of a layer norm"
        g = scaled[0].args[0]
        gx = _descendant(rstd, lambda n: _is(n, A.mul.Tensor) and _tensor(n) and _shape(n) == _shape(x)
                         and _is(n.args[0], A.div.Tensor) and n.args[0].args[0] is rstd, 2)
        rows = list(range(len(_shape(x)) - 1))
        sums = [u for u in g.users if _is(u, A.sum.dim_IntList) and sorted(u.args[1]) == rows]
        gw = next((u for m in g.users if _is(m, A.mul.Tensor) for u in m.users
                   if _is(u, A.sum.dim_IntList) and sorted(u.args[1]) == rows), None)
        if gx is None or not _tensor(g) or _shape(g) != _shape(x):
            return "not the backward of a layer norm"
        return ln, g, x, w, shape, mean, rstd, gx, gw, sums[0] if sums else None

    def check(self, rw, m):
        ln, g, x, w, shape, mean, rstd, gx, gw, gb = m
        samples = [{g: torch.randn(_shape(g)), x: torch.randn(_shape(x)) * 2, w: torch.randn(_shape(w))}]
        for env in samples:  # mean and rstd as the forward saves them
            _, env[mean], env[rstd] = A.native_layer_norm(env[x], shape, env[w], None, ln.args[4])
        ref = _reference("layer_norm_backward")
        want = [gx, *(n for n in (gw, gb) if n is not None)]
        pick = [0, *([1] if gw is not None else []), *([2] if gb is not None else [])]
        if not rw.agrees(want, samples, lambda e: [ref(e[g], e[x], e[mean], e[rstd], e[w], True, True)[i] for i in pick]):
            return "the matched nodes do not compute a layer norm's gradients"
        return None

    def emit(self, rw, m):
        ln, g, x, w, _, mean, rstd, gx, gw, gb = m
        return rw.emit(_ops().layer_norm_backward.default, (g, x, mean, rstd, w, True, gw is not None or gb is not None),
                       [ln], [gx, gw, gb])

"""Linear layers: ``addmm(b, x, W^T)`` / ``mm(x, W^T)`` (+ ``relu``) -> ``dcx::linear``, and the layer's
backward -> one ``dcx::linear_backward``.

The joint graph spells a layer's backward as two ``mm`` over ``permute`` copies and a bias ``sum``
(with the ReLU's mask in front); the kernel reads the weight untransposed and computes all three from
one pass over the output gradient. The backward rule runs first, while the mask is still there to fold.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from .rewriter import A, Rule, _is, _is_transpose, _ops, _shape, _single_relu, _tensor


def _site(rw, node: fx.Node) -> tuple | None:
    """(forward node, x, weight, bias, transposed weight) of ``addmm(b, x, W^T)`` / ``mm(x, W^T)``; None
    when the node is not a linear layer (declined when it is one of a shape no kernel takes)."""
    if _is(node, A.addmm.default) and len(node.args) == 3 and not node.kwargs:
        b, x, wt = node.args
    elif _is(node, A.mm.default):
        (x, wt), b = node.args, None
    else:
        return None
    if not _is_transpose(wt) or _is_transpose(x):
        return None
    w = wt.args[0]
    if not (_tensor(x, dim=2) and _tensor(w, dim=2) and (b is None or _tensor(b, dim=1))):
        return rw.decline(node, "a linear layer needs float32 x [n, in], weight [out, in] and bias [out]")
    return node, x, w, b, wt


@dataclass(frozen=True)
class LinearBackward(Rule):
    """grad W = ``mm(G^T, x)``, grad x = ``mm(G, (W^T)^T)``, grad b = ``view(sum(G, [0], keepdim), [out])``,
    a ReLU mask on G that only these read folded in; a layer with no weight gradient is frozen."""

    targets = (A.addmm.default, A.mm.default)

    def match(self, rw, node: fx.Node):
        site = _site(rw, node)
        if site is None:
            return None
        fwd, x, w, b, wt = site
        gw = next((u for u in x.users if _is(u, A.mm.default) and u.args[1] is x and _is_transpose(u.args[0])), None)
        if gw is None:
            return None  # no weight gradient: a frozen layer
        g = gw.args[0].args[0]
        if not (_tensor(g, dim=2) and _shape(g) == (_shape(x)[0], _shape(w)[0])):
            return rw.decline(gw, "the output gradient of this linear layer is not a float32 [n, out] tensor")
        gx = next((u for u in g.users if _is(u, A.mm.default) and u.args[0] is g and _is_transpose(u.args[1])
                   and u.args[1].args[0] is wt), None)
        s = next((u for u in g.users if _is(u, A.sum.dim_IntList) and list(u.args[1]) == [0]), None) if b is not None else None
        gb = next(iter(s.users)) if s is not None and len(s.users) == 1 else None
        if gb is not None and not (_is(gb, A.view.default) and _shape(gb) == (_shape(w)[0],)):
            gb = None
        return g, x, w, gw, gx, s, gb

    def emit(self, rw, m):
        g, x, w, gw, gx, s, gb = m
        grad, relu_out = rw.folded_mask(g, {gw.args[0], *(n for n in (gx, s) if n is not None)})
        replaces = [n for n in (gw, gx, s, g if relu_out is not None else None) if n is not None]
        return rw.emit(_ops().linear_backward.default, (grad, x, w, relu_out, gx is not None, gb is not None), replaces,
                       [gx, gw, gb])


@dataclass(frozen=True)
class LinearForward(Rule):
    """The forward product (+ the ``relu`` that alone reads it) of a linear layer whose output something
    still reads (a backward product ``LinearBackward`` took over reads nothing any more)."""

    targets = (A.addmm.default, A.mm.default)

    def match(self, rw, node: fx.Node):
        return _site(rw, node)

    def emit(self, rw, m):
        fwd, x, w, b, _ = m
        out = _single_relu(fwd)
        relu = out is not fwd
        return rw.emit(_ops().linear.default, (x, w, b, relu), [fwd, *([out] if relu else [])], [out])

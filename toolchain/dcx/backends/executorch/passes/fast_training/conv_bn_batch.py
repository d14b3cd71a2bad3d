"""A MobileNet layer in training mode: ``convolution`` -> batch norm on the batch's statistics -> clamp (ReLU6,
ReLU or none), forward and backward -> ``dcx::conv2d_bn_batch_stats`` / ``dcx::conv2d_bn_batch_stats_backward``.

``dcx.passes.batch_statistics`` writes the norm in elementary ops (``BatchStatisticsNorm``): ``mean`` over
(0, 2, 3), the biased variance ``mean((x - mean)^2)``, ``rsqrt(var + eps)``, the affine weight and bias, the
running statistics updated from ``mean`` and ``var`` in place; autograd gives its backward in elementary ops too.
Both rules start from that ``rsqrt`` (``match_batch_statistics``); the backward rule runs first and replaces the
norm's and the convolution's gradients, then the forward rule replaces the convolution and the norm, its mean
and variance now the fused op's outputs (the running-statistics update stays stock elementwise ops on them, and
the backward reads them). The numerical check of each runs the matched nodes and the op's reference on random
data; a norm without an affine weight, or after something other than a convolution, keeps its stock ops, with
the reason in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import fx

from .conv_bn import _RESHAPES, _clamp_of, _unreshaped
from .rewriter import A, Rule, _getitems, _is, _ops, _reference, _shape, _strip_alias, _tensor

_DIMS = [0, 2, 3]


def _act(out: fx.Node) -> tuple[fx.Node | None, float, float]:
    """(the clamp that alone reads the norm's output, low, high): ``hardtanh`` (ReLU6) or ``relu``, besides the
    clamp's backward mask; (None, -inf, inf) without one."""
    acts = [u for u in out.users if _clamp_of(u) or _is(u, A.relu.default)]
    others = [u for u in out.users if u not in acts and not _is(u, A.clone.default, A.le.Scalar, A.ge.Scalar)]
    if len(acts) != 1 or others:
        return None, -math.inf, math.inf
    act = acts[0]
    return (act, 0.0, math.inf) if _is(act, A.relu.default) else (act, *_clamp_of(act))


def _over_channels(node: fx.Node, dims: list[int]) -> bool:
    return _is(node, A.mean.dim, A.sum.dim_IntList) and list(node.args[1]) == dims


def _channel_sum(node: fx.Node) -> fx.Node | None:
    """The [C] sum of ``node`` over every dim but 1 (``sum`` with keepdim, then a view), among its users."""
    for u in node.users:
        if _over_channels(u, _DIMS):
            views = [v for v in u.users if _is(v, *_RESHAPES) and _tensor(v, dim=1)]
            if _tensor(u, dim=1):
                return u
            if len(views) == 1:
                return views[0]
    return None


def match_batch_statistics(rstd: fx.Node) -> dict | str | None:
    """``rsqrt(var + eps)`` of a batch norm on the batch's statistics (4-D, affine), as ``BatchStatisticsNorm``
    writes it: the forward's nodes (``conv``, ``mean``, ``var``, ``sub`` = conv - mean, ``xhat``, the affine
    ``scaled`` and ``out``, the clamp ``act`` with ``lo`` and ``hi``, the norm's ``bn_w``, ``bn_b`` and ``eps``),
    the reason it is one that keeps its stock ops, or None (not that norm)."""
    add = rstd.args[0]
    if not (_is(add, A.add.Tensor, A.add.Scalar) and isinstance(add.args[1], float)):
        return None
    var, eps = _unreshaped(add.args[0]), add.args[1]
    sq = var.args[0] if _over_channels(var, _DIMS) and len(var.args) == 2 else None
    if not (_is(sq, A.pow.Tensor_Scalar) and sq.args[1] == 2 and _is(sq.args[0], A.sub.Tensor)):
        return None
    sub = sq.args[0]
    src, mean = sub.args[0], _unreshaped(sub.args[1])
    if not (_over_channels(mean, _DIMS) and len(mean.args) == 2 and mean.args[0] is src and _tensor(src, dim=4)
            and _tensor(mean, dim=1) and _tensor(var, dim=1)):
        return None
    weight_of = lambda n: _unreshaped(n.args[1]) if _is(n, A.mul.Tensor, A.add.Tensor) else None  # noqa: E731
    xhat = next((u for u in rstd.users if _is(u, A.mul.Tensor) and u.args[0] is sub), None)
    scaled = next((u for u in xhat.users if _is(u, A.mul.Tensor) and u.args[0] is xhat
                   and _tensor(weight_of(u), dim=1)), None) if xhat is not None else None
    if scaled is None:
        return "a batch norm in training mode without an affine weight keeps its stock ops"
    out = next((u for u in scaled.users if _is(u, A.add.Tensor) and u.args[0] is scaled
                and _tensor(weight_of(u), dim=1)), None)
    if out is None:
        return "a batch norm in training mode with a weight but no bias keeps its stock ops"
    if not _is(src, A.convolution.default):
        return "a batch norm in training mode after something other than a convolution keeps its stock ops"
    act, lo, hi = _act(out)
    return {"rstd": rstd, "add": add, "conv": src, "mean": mean, "var": var, "sq": sq, "sub": sub, "xhat": xhat,
            "scaled": scaled, "out": out, "act": act, "y": act or out, "lo": lo, "hi": hi, "eps": eps,
            "bn_w": weight_of(scaled), "bn_b": weight_of(out)}


def _forward_reference(m: dict, params: tuple):
    """The forward's y, mean and var from sample x, w (and the convolution's bias)."""
    ref = _reference("conv2d_bn_batch_stats")
    x, w, b = m["conv"].args[:3]
    return lambda e: ref(e[x], e[w], e.get(b), e[m["bn_w"]], e[m["bn_b"]], m["eps"], *params, m["lo"], m["hi"],
                         False)[1:]


def _samples(m: dict, params: tuple, conv_out: bool) -> dict:
    """Sample inputs of a matched layer: x, w, the convolution's bias, the norm's weight and bias; with
    ``conv_out``, the convolution of those too (for the backward, whose region starts there)."""
    x, w, b = m["conv"].args[:3]
    c = _shape(m["conv"])[1]
    env = {x: torch.randn(_shape(x)), w: torch.randn(_shape(w)), m["bn_w"]: torch.rand(c) + 0.5,
           m["bn_b"]: torch.randn(c)}
    if b is not None:
        env[b] = torch.randn(c)
    if conv_out:
        env[m["conv"]] = torch.nn.functional.conv2d(env[x], env[w], env.get(b), *params)
    return env


@dataclass(frozen=True)
class ConvBnBatchBackward(Rule):
    """The backward of convolution -> batch norm on the batch's statistics -> clamp as one
    ``dcx::conv2d_bn_batch_stats_backward``: the clamp's mask, the norm's gradients (through the batch's mean and
    variance) and the convolution backward."""

    targets = (A.rsqrt.default,)

    def match(self, rw, rstd: fx.Node):
        m = match_batch_statistics(rstd)
        if not isinstance(m, dict):
            return m
        conv, xhat = m["conv"], m["xhat"]
        x, w = conv.args[:2]
        gmul = next((u for u in xhat.users if _is(u, A.mul.Tensor) and u.args[1] is xhat and u is not m["scaled"]), None)
        if gmul is None:  # no backward reads the norm
            return None
        g = gmul.args[0]
        d_weight, d_bias = _channel_sum(gmul), _channel_sum(g)
        grad = g
        if m["act"] is not None:
            mask = rw.relu_mask(g)
            read = m["out"] if _is(m["act"], A.hardtanh.default) else m["act"]
            pre = mask and (mask[1].args[0] if _is(mask[1], A.clone.default) else mask[1])
            if mask is None or mask[2:] != (m["lo"], m["hi"]) or _strip_alias(pre) is not read:
                return "the clamp's mask after a batch norm in training mode is not the clamp's backward"
            grad = mask[0]
        cbs = [u for u in w.users if _is(u, A.convolution_backward.default) and u.args[1] is x and u.args[2] is w
               and list(u.args[4:10]) == list(conv.args[3:9])]
        params = rw.conv_params(conv, x, w)
        if params is None or len(cbs) != 1 or d_weight is None or d_bias is None or not _tensor(grad, dim=4):
            return "not the backward of a convolution + batch norm in training mode"
        cb, flags = cbs[0], list(cbs[0].args[10])
        if not flags[1]:
            return "a convolution + batch norm in training mode whose weight does not train keeps its stock backward"
        items = _getitems(cb)
        bias_grad = conv.args[2] is not None and bool(flags[2])
        return dict(m, grad=grad, cb=cb, params=params, input_grad=bool(flags[0]), bias_grad=bias_grad,
                    outs=[items.get(0), items.get(1), items.get(2) if bias_grad else None, d_weight, d_bias])

    def check(self, rw, m):
        env = _samples(m, m["params"], True)
        env[m["grad"]] = torch.randn(_shape(m["grad"]))
        forward, ref = _forward_reference(m, m["params"]), _reference("conv2d_bn_batch_stats_backward")
        x, w = m["conv"].args[:2]
        pick = [i for i, n in enumerate(m["outs"]) if n is not None]

        def want(e):
            y, mean, var = forward(e)
            r = ref(e[m["grad"]], y, e[m["conv"]], e[x], e[w], e[m["bn_w"]], mean, var, m["eps"], *m["params"],
                    m["lo"], m["hi"], m["input_grad"], m["bias_grad"], True)
            return [r[i] for i in pick]

        if not rw.agrees([n for n in m["outs"] if n is not None], [env], want):
            return "the matched nodes do not compute a convolution + batch norm (batch statistics) + clamp backward"
        return None

    def emit(self, rw, m):
        x, w = m["conv"].args[:2]
        return rw.emit(_ops().conv2d_bn_batch_stats_backward.default,
                       (m["grad"], m["y"], m["conv"], x, w, m["bn_w"], m["mean"], m["var"], m["eps"], *m["params"],
                        m["lo"], m["hi"], m["input_grad"], m["bias_grad"], True),
                       [m["cb"], m["rstd"]], m["outs"])


@dataclass(frozen=True)
class ConvBnBatchForward(Rule):
    """convolution -> batch norm on the batch's statistics -> clamp as one ``dcx::conv2d_bn_batch_stats``, once
    nothing but the layer itself reads the norm's intermediate values (its backward is a dcx op, or none); its
    mean and variance feed the running statistics' update and the backward, the convolution's output is kept
    when something else reads it."""

    targets = (A.rsqrt.default,)

    def match(self, rw, rstd: fx.Node):
        m = match_batch_statistics(rstd)
        if not isinstance(m, dict):
            return m
        conv = m["conv"]
        x, w, b = conv.args[:3]
        params = rw.conv_params(conv, x, w)
        if params is None or not all(n is None or _tensor(n, dim=1) for n in (b, m["bn_w"], m["bn_b"])):
            return None
        inner = [m[k] for k in ("sub", "sq", "add", "rstd", "xhat", "scaled")] + ([m["out"]] if m["act"] else [])
        region = set(inner) | {m["y"], m["mean"], m["var"]}
        region |= {u for n in (m["mean"], m["var"], m["bn_w"], m["bn_b"]) for u in n.users if _is(u, *_RESHAPES)}
        if any(u not in region for n in inner for u in n.users):
            return "the stock backward of a batch norm in training mode reads its forward's intermediate values"
        keep = any(u is not m["mean"] and u is not m["sub"] for u in conv.users)
        return dict(m, params=params, keep=keep)

    def check(self, rw, m):
        if not rw.agrees([m["y"], m["mean"], m["var"]], [_samples(m, m["params"], False)], _forward_reference(m, m["params"])):
            return "the matched nodes do not compute a convolution + batch norm (batch statistics) + clamp"
        return None

    def emit(self, rw, m):
        conv = m["conv"]
        x, w, b = conv.args[:3]
        return rw.emit(_ops().conv2d_bn_batch_stats.default,
                       (x, w, b, m["bn_w"], m["bn_b"], m["eps"], *m["params"], m["lo"], m["hi"], m["keep"]),
                       [conv, m["mean"], m["var"], m["rstd"]] + ([m["act"]] if m["act"] else []),
                       [conv if m["keep"] else None, m["y"], m["mean"], m["var"]])

"""Eval-mode batch norm (frozen statistics, trainable affine): its decomposed backward ->
``dcx::batch_norm_frozen_backward``; and a MobileNet layer, ``convolution`` -> batch norm -> clamp
(ReLU6), forward and backward -> ``dcx::conv2d_bn`` / ``dcx::conv2d_bn_backward``.

Both backward rules start from the norm's ``rsqrt(var + eps)`` (``match_batch_norm_backward``); the
fused one is tried first and, where the region around the norm is not a whole layer, the norm's
backward alone is rewritten. ``frozen_stems`` picks the frozen layers the dcx stem kernel runs.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from dcx.kernels.training.conv import eligible as eligible_conv2d

from .rewriter import A, Rule, _alias_users, _getitems, _is, _ops, _pair, _reference, _shape, _tensor

_RESHAPES = (A.unsqueeze.default, A.view.default, A.reshape.default)


def _clamp_of(node: fx.Node) -> tuple[float, float] | None:
    """(low, high) of a ``hardtanh`` (ReLU6 and its kin) with constant bounds."""
    if _is(node, A.hardtanh.default) and all(isinstance(b, (int, float)) for b in node.args[1:3]) and len(node.args) == 3:
        return float(node.args[1]), float(node.args[2])
    return None


def bn_act(bn: fx.Node) -> tuple[fx.Node, fx.Node, float, float] | None:
    """(output item, clamp node, low, high) of an eval-mode batch norm whose output only a clamp reads,
    besides the clamp's backward mask (``le``/``ge``, directly or through a ``clone``)."""
    items = [u for u in bn.users if _is(u, operator.getitem)]
    if len(items) != 1 or items[0].args[1] != 0 or len(bn.users) != 1:
        return None
    acts = [u for u in items[0].users if _clamp_of(u)]
    mask_reads = (A.clone.default, A.le.Scalar, A.ge.Scalar)
    if len(acts) != 1 or any(u is not acts[0] and not _is(u, *mask_reads) for u in items[0].users):
        return None
    return items[0], acts[0], *_clamp_of(acts[0])


def _reshape_users(node: fx.Node) -> list[fx.Node]:
    out = []
    for u in node.users:
        out.extend(_reshape_users(u) if _is(u, *_RESHAPES) else [u])
    return out


def _unreshaped(node: Any) -> Any:
    """``node`` before unsqueeze/view/reshape (a [C] vector broadcast to [1, C, 1, 1])."""
    while _is(node, *_RESHAPES):
        node = node.args[0]
    return node


def match_batch_norm_backward(rstd: fx.Node) -> dict | str | None:
    """Eval-mode batch norm: ``rsqrt(var + eps)`` anchors grad_x = g * (rstd * w), grad_w =
    sum(g * (x - mean)) * rstd and grad_b = sum(g) over every dim but 1. The matched nodes (not yet
    checked numerically), the reason it is not that backward, or None (no affine batch norm)."""
    add = rstd.args[0]
    if not (_is(add, A.add.Tensor, A.add.Scalar) and isinstance(add.args[1], float) and _tensor(add.args[0], dim=1)):
        return None
    var, eps = add.args
    scale = next((u for u in rstd.users if _is(u, A.mul.Tensor) and u.args[0] is rstd and _tensor(u.args[1], dim=1)), None)
    if scale is None:
        return "a batch norm without an affine weight keeps its stock backward"
    w = scale.args[1]
    gx = next((m for u in _alias_users(scale) for m in _reshape_users(u)
               if _is(m, A.mul.Tensor) and _unreshaped(m.args[1]) is scale), None)
    gw = next((u for u in rstd.users if _is(u, A.mul.Tensor) and u.args[1] is rstd and _is(u.args[0], A.sum.dim_IntList)), None)
    if gx is None or gw is None:
        return "not the backward of a batch norm with frozen statistics"
    g = gx.args[0]
    centered = gw.args[0].args[0]  # mul(g, sub(x, mean))
    if not (_is(centered, A.mul.Tensor) and centered.args[0] is g and _is(centered.args[1], A.sub.Tensor)):
        return "not the backward of a batch norm with frozen statistics"
    x, mean = centered.args[1].args[0], _unreshaped(centered.args[1].args[1])
    dims = [0, *range(2, len(_shape(g)))] if _tensor(g) else []
    gb = next((u for u in g.users if _is(u, A.sum.dim_IntList) and list(u.args[1]) == dims and len(u.args) == 2), None)
    if not (_tensor(g) and _tensor(x) and _shape(x) == _shape(g) and len(dims) >= 1 and _tensor(mean, dim=1)):
        return "batch norm backward with unsupported shapes or dtypes"
    return {"rstd": rstd, "g": g, "x": x, "w": w, "mean": mean, "var": var, "eps": eps, "gx": gx, "gw": gw, "gb": gb}


@dataclass(frozen=True)
class ConvBnBackward(Rule):
    """The backward of convolution -> frozen batch norm -> clamp as one ``dcx::conv2d_bn_backward``: the
    clamp's mask, the norm's gradients and the convolution backward. None from ``match`` (and from
    ``emit``, False) leaves the norm to ``FrozenBatchNormBackward``."""

    targets = (A.rsqrt.default,)

    def match(self, rw, rstd: fx.Node):
        m = match_batch_norm_backward(rstd)
        mask = rw.relu_mask(m["g"]) if isinstance(m, dict) else None
        if mask is None or not _is(m["x"], A.convolution.default):
            return None
        conv, (grad, pre, lo, hi) = m["x"], mask
        bn_out = pre.args[0] if _is(pre, A.clone.default) else pre
        bn = bn_out.args[0] if _is(bn_out, operator.getitem) else None
        if not _is(bn, A._native_batch_norm_legit_no_training.default) or bn.args[0] is not conv \
                or bn.args[3] is not m["mean"] or bn.args[4] is not m["var"] or bn.args[1] is not m["w"]:
            return None
        fused = bn_act(bn)
        cbs = [u for u in m["gx"].users if _is(u, A.convolution_backward.default) and u.args[0] is m["gx"]]
        if fused is None or fused[2:] != (lo, hi) or len(cbs) != 1 or len(m["gx"].users) != 1:
            return None
        cb = cbs[0]
        x, w = conv.args[:2]
        params = rw.conv_params(cb, x, w)
        if params is None or cb.args[1] is not x or cb.args[2] is not w or list(cb.args[4:10]) != list(conv.args[3:9]):
            return None
        flags = list(cb.args[10])
        if not flags[1] or conv.args[2] is not None:
            return None
        items = _getitems(cb)
        return dict(m, grad=grad, pre=pre, lo=lo, hi=hi, conv=conv, bn=bn, act=fused[1], cb=cb, cx=x, cw=w,
                    params=params, flags=flags, outs=[items.get(0), items.get(1), m["gw"], m["gb"]])

    def check(self, rw, m):
        grad, pre, conv, x, w, bn_w, mean, var = (m[k] for k in ("grad", "pre", "conv", "cx", "cw", "w", "mean", "var"))
        eps, lo, hi, params, outs = m["eps"], m["lo"], m["hi"], m["params"], m["outs"]
        c = _shape(conv)[1]
        env = {grad: torch.randn(_shape(grad)), conv: torch.randn(_shape(conv)) * 2, x: torch.randn(_shape(x)),
               w: torch.randn(_shape(w)), bn_w: torch.randn(c), mean: torch.randn(c), var: torch.rand(c) + 0.1}
        env[pre] = F.batch_norm(env[conv], env[mean], env[var], env[bn_w], torch.randn(c), False, 0.0, eps)
        ref = _reference("conv2d_bn_backward")
        pick = [i for i, n in zip((0, 1, 3, 4), outs) if n is not None]

        def want(e):
            r = ref(e[grad], e[pre].clamp(lo, hi), e[conv], e[x], e[w], e[bn_w], None, e[mean], e[var], eps, *params,
                    lo, hi, bool(m["flags"][0]), False, True)
            return [r[i] for i in pick]

        if not rw.agrees([n for n in outs if n is not None], [env], want):
            return "the matched nodes do not compute a convolution + frozen batch norm + clamp backward"
        return None

    def emit(self, rw, m):
        grad_x, grad_w = m["outs"][:2]
        return rw.emit(_ops().conv2d_bn_backward.default,
                       (m["grad"], m["act"], m["conv"], m["cx"], m["cw"], m["w"], m["bn"].args[2], m["mean"], m["var"],
                        m["eps"], *m["params"], m["lo"], m["hi"], bool(m["flags"][0]), False, True),
                       [m["cb"], m["rstd"], m["g"]], [grad_x, grad_w, None, m["gw"], m["gb"]])


@dataclass(frozen=True)
class FrozenBatchNormBackward(Rule):
    """The backward of an eval-mode batch norm alone: grad x, grad weight and grad bias in one kernel."""

    targets = (A.rsqrt.default,)

    def match(self, rw, rstd: fx.Node):
        return match_batch_norm_backward(rstd)

    def check(self, rw, m):
        g, x, w, mean, var, eps = (m[k] for k in ("g", "x", "w", "mean", "var", "eps"))
        c = _shape(x)[1]
        samples = [{g: torch.randn(_shape(g)), x: torch.randn(_shape(x)), w: torch.randn(c), mean: torch.randn(c),
                    var: torch.rand(c) + 0.1}]
        ref = _reference("batch_norm_frozen_backward")
        if not rw.agrees([m["gx"], m["gw"]], samples, lambda e: ref(e[g], e[x], e[w], e[mean], e[var], eps, True, True)[:2]):
            return "the matched nodes do not compute a frozen batch norm's gradients"
        return None

    def emit(self, rw, m):
        return rw.emit(_ops().batch_norm_frozen_backward.default,
                       (m["g"], m["x"], m["w"], m["mean"], m["var"], m["eps"], True, True), [m["rstd"]],
                       [m["gx"], m["gw"], m["gb"]])


@dataclass(frozen=True)
class ConvBnForward(Rule):
    """convolution -> eval-mode batch norm -> clamp as one ``dcx::conv2d_bn`` (the convolution's output
    kept when its backward reads it; when only ``dcx::conv2d_bn_backward`` reads it, that recovers it
    from the layer's output where it can, and the kernel writes it only where it cannot)."""

    targets = (A._native_batch_norm_legit_no_training.default,)

    def match(self, rw, bn: fx.Node):
        conv = bn.args[0]
        fused = bn_act(bn)
        if not _is(conv, A.convolution.default) or fused is None or any(u is not fused[1] for u in fused[0].users):
            return None  # the plain convolution rule takes it
        x, w, b = conv.args[:3]
        params = rw.conv_params(conv, x, w)
        bn_w, bn_b, mean, var, _, eps = bn.args[1:7]
        if params is None or not all(n is None or _tensor(n, dim=1) for n in (b, bn_w, bn_b, mean, var)) \
                or mean is None or var is None:
            return None
        return bn, conv, fused, params, (x, w, b, bn_w, bn_b, mean, var, float(eps))

    def emit(self, rw, m):
        bn, conv, fused, params, args = m
        readers = [u for u in conv.users if u is not bn]
        only_dcx = all(u.target is _ops().conv2d_bn_backward.default and u.args[2] is conv
                       and u.args[5:10] == args[3:] for u in readers)
        keep = bool(readers)
        return rw.emit(_ops().conv2d_bn.default, (*args, *params, *fused[2:], keep, keep and only_dcx),
                       [conv, bn, fused[1]], [conv if keep else None, fused[1]])


def frozen_stems(rw, region: set[fx.Node]) -> set[fx.Node]:
    """The nodes of the frozen ``region`` the dcx stem kernel runs rather than XNNPACK: a 3x3
    convolution straight over a user input of 2 or more channels that the dcx stem kernel takes (the
    training kernels' eligibility, ``dcx.kernels.training.conv.eligible``), with
    the batch norm and clamp, or the ReLU, that fuse into it. XNNPACK would transpose that
    input to NHWC and then run a GEMM with K = 27; the dcx kernel reads the NCHW rows as they are
    (for the frozen MobileNet mimic, the delegate's time fell by more than the stem costs on dcx).
    A one-channel input needs no transpose, and there XNNPACK measured faster (the 28x28 mimic)."""
    users = set(rw.ep.graph_signature.user_inputs)
    taken: set[fx.Node] = set()
    for conv in region:
        if not _is(conv, A.convolution.default) or conv.args[0].op != "placeholder" or conv.args[0].name not in users:
            continue
        stride, padding, dilation, transposed, _, groups = conv.args[3:9]
        x, w = _shape(conv.args[0]), _shape(conv.args[1])
        if transposed or len(x) != 4 or len(w) != 4 or x[1] < 2 or eligible_conv2d(
                x, w, _pair(stride, 1), _pair(padding, 0), _pair(dilation, 1), int(groups)) != "stem3x3":
            continue
        taken.add(conv)
        only = next(iter(conv.users)) if len(conv.users) == 1 else None
        fused = bn_act(only) if _is(only, A._native_batch_norm_legit_no_training.default) else None
        if fused is not None:
            taken |= {only, fused[0], fused[1]}
        elif _is(only, A.relu.default):
            taken.add(only)
    return taken

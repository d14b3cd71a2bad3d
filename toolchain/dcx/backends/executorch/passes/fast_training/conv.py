"""Convolutions: ``convolution`` (+ ``relu``) -> ``dcx::conv2d``, ``convolution_backward`` (with the ReLU
mask of its output gradient folded in) -> ``dcx::conv2d_backward``; depthwise and grouped too.

What the kernels take (2-D, float32, NCHW, not transposed) is ``Rewriter.conv_params``, shared with the
fused convolution + batch norm rules; a convolution those took is gone before ``ConvForward`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from .rewriter import A, Rule, _getitems, _ops, _single_relu, _tensor


@dataclass(frozen=True)
class ConvBackward(Rule):
    """A convolution backward that computes the weight gradient (a frozen layer's, computing only the
    input gradient, stays stock), its output gradient's ReLU mask folded in when nothing else reads it."""

    targets = (A.convolution_backward.default,)

    def match(self, rw, node: fx.Node):
        g, x, w = node.args[:3]
        mask = list(node.args[10])
        params = rw.conv_params(node, x, w)
        if params is None:
            return None
        if not mask[1]:
            return "a convolution backward without a weight gradient stays stock"
        grad, relu_out = rw.folded_mask(g, {node})
        if not _tensor(grad):
            return "the output gradient is not float32"
        return node, g, x, w, grad, relu_out, params, mask

    def emit(self, rw, m):
        node, g, x, w, grad, relu_out, params, mask = m
        items = _getitems(node)
        return rw.emit(_ops().conv2d_backward.default, (grad, x, w, relu_out, *params, bool(mask[0]), bool(mask[2])),
                       [node, *([g] if relu_out is not None else [])], [items.get(0), items.get(1), items.get(2)])


@dataclass(frozen=True)
class ConvForward(Rule):
    """A convolution with a float32 bias vector or none, and the ``relu`` that alone reads it."""

    targets = (A.convolution.default,)

    def match(self, rw, node: fx.Node):
        x, w, b = node.args[:3]
        params = rw.conv_params(node, x, w)
        if params is None:
            return None
        if b is not None and not _tensor(b, dim=1):
            return "the bias is not a float32 vector"
        return node, x, w, b, params

    def emit(self, rw, m):
        node, x, w, b, params = m
        out = _single_relu(node)
        relu = out is not node
        return rw.emit(_ops().conv2d.default, (x, w, b, *params, relu), [node, *([out] if relu else [])], [out])

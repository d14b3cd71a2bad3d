"""The convolution ops (kernels/training/conv/): references, fake kernels, and which kernel takes a
convolution (``eligible``, asked of the kernel library itself)."""

from __future__ import annotations

import ctypes
from typing import Sequence

import torch
import torch.nn.functional as F

from dcx.kernels import library
from dcx.kernels.training.shapes import conv2d_output_size, empty, float_like, grads_like, relu_mask

aten = torch.ops.aten

# enum training_conv2d_kernel (kernels/training/conv/conv.h)
KERNELS = {1: "general", 2: "pointwise", 3: "depthwise3x3", 4: "depthwise", 5: "stem3x3"}


class _Conv2d(ctypes.Structure):  # struct training_conv2d
    _fields_ = [(f, ctypes.c_int64) for f in ("n", "c_in", "h", "w", "c_out", "kh", "kw", "stride_h", "stride_w",
                                              "pad_h", "pad_w", "dil_h", "dil_w", "groups")]


def eligible(x_shape: Sequence[int], w_shape: Sequence[int], stride: Sequence[int], padding: Sequence[int],
             dilation: Sequence[int], groups: int, backward: bool = False) -> str | None:
    """The kernel that runs a 2-D convolution of x [n, c_in, h, w] by weight [c_out, c_in / groups, kh, kw]
    (its forward, or its backward: a stem's runs on the general kernel): "stem3x3", "depthwise3x3",
    "depthwise", "pointwise" or "general"; None when no kernel takes it."""
    geometry = _Conv2d(*x_shape, w_shape[0], *w_shape[2:], *stride, *padding, *dilation, groups)
    return KERNELS.get(library.native("training").training_conv2d_kernel(ctypes.byref(geometry), int(backward)))


def conv2d_reference(x, weight, bias, stride, padding, dilation, groups, relu=False):
    y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return F.relu(y) if relu else y


def conv2d_backward_reference(grad_y, x, weight, relu_out, stride, padding, dilation, groups, input_grad, bias_grad):
    g = relu_mask(grad_y, relu_out)
    gx, gw, gb = aten.convolution_backward(g, x, weight, [weight.shape[0]], stride, padding, dilation, False,
                                           [0, 0], groups, [input_grad, True, bias_grad])
    return (gx if input_grad else empty(g), gw, gb if bias_grad else empty(g))


def conv2d_fake(x, weight, bias, stride, padding, dilation, groups, relu=False):
    h, w = conv2d_output_size(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    return float_like(x, x.shape[0], weight.shape[0], h, w)


def conv2d_backward_fake(grad_y, x, weight, relu_out, stride, padding, dilation, groups, input_grad, bias_grad):
    return grads_like(x, tuple(weight.shape), weight.shape[0], input_grad, bias_grad)

"""The pooling ops (kernels/training/pool/): references, fake kernels, and whether the kernels take a
pooling (``eligible``, asked of the kernel library itself)."""

from __future__ import annotations

import ctypes
from typing import Sequence

import torch
import torch.nn.functional as F

from dcx.kernels import library
from dcx.kernels.training.shapes import float_like, pool2d_output_size

aten = torch.ops.aten


class _Pool2d(ctypes.Structure):  # struct training_pool2d
    _fields_ = [*((f, ctypes.c_int64) for f in ("n", "c", "h", "w", "kh", "kw", "stride_h", "stride_w", "pad_h",
                                                "pad_w")), ("count_include_pad", ctypes.c_int)]


def eligible(x_shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> bool:
    """Whether the pooling kernels take a 2-D window ``kernel`` over x [n, c, h, w] (floor mode)."""
    geometry = _Pool2d(*x_shape, *kernel, *stride, *padding, 0)
    return library.native("training").training_pool2d_check(ctypes.byref(geometry)) == 0


def max_pool2d_reference(x, kernel, stride, padding):
    return F.max_pool2d(x, kernel, stride, padding, return_indices=True)


def max_pool2d_backward_reference(grad_y, x, indices, kernel, stride, padding):
    return aten.max_pool2d_with_indices_backward(grad_y, x, kernel, stride, padding, [1, 1], False, indices)


def avg_pool2d_reference(x, kernel, stride, padding, count_include_pad):
    return F.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad)


def avg_pool2d_backward_reference(grad_y, x, kernel, stride, padding, count_include_pad):
    return aten.avg_pool2d_backward(grad_y, x, kernel, stride, padding, False, count_include_pad, None)


def max_pool2d_fake(x, kernel, stride, padding):
    h, w = pool2d_output_size(x.shape[2:], kernel, stride, padding)
    return float_like(x, x.shape[0], x.shape[1], h, w), x.new_empty((x.shape[0], x.shape[1], h, w), dtype=torch.int64)


def max_pool2d_backward_fake(grad_y, x, indices, kernel, stride, padding):
    return float_like(x, *x.shape)


def avg_pool2d_fake(x, kernel, stride, padding, count_include_pad):
    h, w = pool2d_output_size(x.shape[2:], kernel, stride, padding)
    return float_like(x, x.shape[0], x.shape[1], h, w)


def avg_pool2d_backward_fake(grad_y, x, kernel, stride, padding, count_include_pad):
    return float_like(x, *x.shape)

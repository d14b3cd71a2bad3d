"""The fused convolution + batch norm + clamp ops (kernels/training/conv_bn/): references and fake kernels; the
convolution kernels take them (``eligible`` is the convolution's). ``conv2d_bn`` and its backward: the norm in eval
mode (running statistics); ``conv2d_bn_batch_stats`` and its backward: in training mode (the batch's mean and
biased variance, as ``dcx.passes.batch_statistics.BatchStatisticsNorm`` computes them, and the gradient through
them)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dcx.kernels.training.conv import conv2d_backward_reference, conv2d_fake, eligible  # noqa: F401 (eligible: the family's rule)
from dcx.kernels.training.shapes import empty, float_like, grads_like


def _bn_scale(weight, running_var, eps):
    rstd = torch.rsqrt(running_var + eps)
    return rstd if weight is None else rstd * weight


def conv2d_bn_reference(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, eps, stride, padding, dilation,
                        groups, low, high, keep_conv, conv_only_for_backward):
    conv = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    y = F.batch_norm(conv, running_mean, running_var, bn_weight, bn_bias, False, 0.0, eps).clamp(low, high)
    return (conv if keep_conv else empty(conv)), y


def conv2d_bn_backward_reference(grad_y, y, conv_out, x, weight, bn_weight, bn_bias, running_mean, running_var, eps,
                                 stride, padding, dilation, groups, low, high, input_grad, bias_grad, bn_grad):
    g = torch.where((y > low) & (y < high), grad_y, torch.zeros_like(grad_y))
    shape = (1, -1, 1, 1)
    rstd = torch.rsqrt(running_var + eps)
    gx, gw, gb = conv2d_backward_reference(g * _bn_scale(bn_weight, running_var, eps).reshape(shape), x, weight, None,
                                           stride, padding, dilation, groups, input_grad, bias_grad)
    centered = conv_out - running_mean.reshape(shape)
    return (gx, gw, gb, (g * centered).sum((0, 2, 3)) * rstd if bn_grad else empty(g),
            g.sum((0, 2, 3)) if bn_grad else empty(g))


def conv2d_bn_fake(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, eps, stride, padding, dilation,
                   groups, low, high, keep_conv, conv_only_for_backward):
    y = conv2d_fake(x, weight, bias, stride, padding, dilation, groups)
    return (float_like(x, *y.shape) if keep_conv else float_like(x, 0)), y


def conv2d_bn_backward_fake(grad_y, y, conv_out, x, weight, bn_weight, bn_bias, running_mean, running_var, eps, stride,
                            padding, dilation, groups, low, high, input_grad, bias_grad, bn_grad):
    c = weight.shape[0]
    return (*grads_like(x, tuple(weight.shape), c, input_grad, bias_grad),
            *(float_like(x, c if bn_grad else 0) for _ in range(2)))


_DIMS = (0, 2, 3)
_SHAPE = (1, -1, 1, 1)


def _clamp_mask(grad_y, y, low, high):
    """grad_y where low < y < high; all of it without a clamp (low -inf, high +inf), as the stock graph has no mask."""
    if low == -math.inf and high == math.inf:
        return grad_y
    return torch.where((y > low) & (y < high), grad_y, torch.zeros_like(grad_y))


def conv2d_bn_batch_stats_reference(x, weight, bias, bn_weight, bn_bias, eps, stride, padding, dilation, groups, low,
                                    high, keep_conv):
    conv = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    mean = conv.mean(_DIMS)
    centered = conv - mean.reshape(_SHAPE)
    var = centered.square().mean(_DIMS)
    y = centered * torch.rsqrt(var.reshape(_SHAPE) + eps)
    if bn_weight is not None:
        y = y * bn_weight.reshape(_SHAPE)
    if bn_bias is not None:
        y = y + bn_bias.reshape(_SHAPE)
    return (conv if keep_conv else empty(conv)), y.clamp(low, high), mean, var


def conv2d_bn_batch_stats_backward_reference(grad_y, y, conv_out, x, weight, bn_weight, mean, var, eps, stride, padding,
                                             dilation, groups, low, high, input_grad, bias_grad, bn_grad):
    g = _clamp_mask(grad_y, y, low, high)
    m = conv_out.numel() // conv_out.shape[1]
    rstd = torch.rsqrt(var + eps)
    xhat = (conv_out - mean.reshape(_SHAPE)) * rstd.reshape(_SHAPE)
    d_bias, d_weight = g.sum(_DIMS), (g * xhat).sum(_DIMS)
    scale = _bn_scale(bn_weight, var, eps).reshape(_SHAPE)
    grad_conv = scale * (g - d_bias.reshape(_SHAPE) / m - xhat * d_weight.reshape(_SHAPE) / m)
    gx, gw, gb = conv2d_backward_reference(grad_conv, x, weight, None, stride, padding, dilation, groups, input_grad,
                                           bias_grad)
    return gx, gw, gb, d_weight if bn_grad else empty(g), d_bias if bn_grad else empty(g)


def conv2d_bn_batch_stats_fake(x, weight, bias, bn_weight, bn_bias, eps, stride, padding, dilation, groups, low, high,
                               keep_conv):
    y = conv2d_fake(x, weight, bias, stride, padding, dilation, groups)
    c = weight.shape[0]
    return (float_like(x, *y.shape) if keep_conv else float_like(x, 0)), y, float_like(x, c), float_like(x, c)


def conv2d_bn_batch_stats_backward_fake(grad_y, y, conv_out, x, weight, bn_weight, mean, var, eps, stride, padding,
                                        dilation, groups, low, high, input_grad, bias_grad, bn_grad):
    return conv2d_bn_backward_fake(grad_y, y, conv_out, x, weight, bn_weight, None, mean, var, eps, stride, padding,
                                   dilation, groups, low, high, input_grad, bias_grad, bn_grad)

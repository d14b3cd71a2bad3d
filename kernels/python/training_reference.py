"""The definition of every dcx training op in plain PyTorch: what the C kernels are tested against,
and what the fast-training pass checks a matched region of a joint graph against before it
rewrites it.

Each function has the signature and the results of ``torch.ops.dcx.<name>``. ``REFERENCES`` maps
op names to them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def conv2d_output_size(hw: Sequence[int], khw: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                       dilation: Sequence[int]) -> tuple[int, int]:
    return tuple((hw[i] + 2 * padding[i] - dilation[i] * (khw[i] - 1) - 1) // stride[i] + 1 for i in range(2))


def pool2d_output_size(hw: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                       padding: Sequence[int]) -> tuple[int, int]:
    return conv2d_output_size(hw, kernel, stride, padding, (1, 1))


def _relu_mask(grad_y: torch.Tensor, relu_out: torch.Tensor | None) -> torch.Tensor:
    return grad_y if relu_out is None else torch.where(relu_out > 0, grad_y, torch.zeros_like(grad_y))


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0)


def linear(x, weight, bias=None, relu=False):
    y = F.linear(x, weight, bias)
    return F.relu(y) if relu else y


def linear_backward(grad_y, x, weight, relu_out, input_grad, bias_grad):
    g = _relu_mask(grad_y, relu_out)
    return (g @ weight if input_grad else _empty(g), g.t() @ x, g.sum(0) if bias_grad else _empty(g))


def conv2d(x, weight, bias, stride, padding, dilation, groups, relu=False):
    y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return F.relu(y) if relu else y


def conv2d_backward(grad_y, x, weight, relu_out, stride, padding, dilation, groups, input_grad, bias_grad):
    g = _relu_mask(grad_y, relu_out)
    gx, gw, gb = aten.convolution_backward(g, x, weight, [weight.shape[0]], stride, padding, dilation, False,
                                           [0, 0], groups, [input_grad, True, bias_grad])
    return (gx if input_grad else _empty(g), gw, gb if bias_grad else _empty(g))


def _bn_scale(weight, running_var, eps):
    rstd = torch.rsqrt(running_var + eps)
    return rstd if weight is None else rstd * weight


def conv2d_bn(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, eps, stride, padding, dilation, groups,
              low, high, keep_conv, conv_only_for_backward):
    conv = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    y = F.batch_norm(conv, running_mean, running_var, bn_weight, bn_bias, False, 0.0, eps).clamp(low, high)
    return (conv if keep_conv else _empty(conv)), y


def conv2d_bn_backward(grad_y, y, conv_out, x, weight, bn_weight, bn_bias, running_mean, running_var, eps, stride,
                       padding, dilation, groups, low, high, input_grad, bias_grad, bn_grad):
    g = torch.where((y > low) & (y < high), grad_y, torch.zeros_like(grad_y))
    shape = (1, -1, 1, 1)
    rstd = torch.rsqrt(running_var + eps)
    gx, gw, gb = conv2d_backward(g * _bn_scale(bn_weight, running_var, eps).reshape(shape), x, weight, None, stride,
                                 padding, dilation, groups, input_grad, bias_grad)
    centered = conv_out - running_mean.reshape(shape)
    return (gx, gw, gb, (g * centered).sum((0, 2, 3)) * rstd if bn_grad else _empty(g),
            g.sum((0, 2, 3)) if bn_grad else _empty(g))


def max_pool2d(x, kernel, stride, padding):
    return F.max_pool2d(x, kernel, stride, padding, return_indices=True)


def max_pool2d_backward(grad_y, x, indices, kernel, stride, padding):
    return aten.max_pool2d_with_indices_backward(grad_y, x, kernel, stride, padding, [1, 1], False, indices)


def avg_pool2d(x, kernel, stride, padding, count_include_pad):
    return F.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad)


def avg_pool2d_backward(grad_y, x, kernel, stride, padding, count_include_pad):
    return aten.avg_pool2d_backward(grad_y, x, kernel, stride, padding, False, count_include_pad, None)


def threshold_backward(grad_y, x, low, high):
    return torch.where((x > low) & (x < high), grad_y, torch.zeros_like(grad_y))


def softmax_backward(grad_y, y, log):
    if log:
        return aten._log_softmax_backward_data(grad_y, y, -1, torch.float32)
    return aten._softmax_backward_data(grad_y, y, -1, torch.float32)


def _loss_and_grad(loss_fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor):
    z = logits.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(z)
        (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


def cross_entropy_loss(logits, target, ignore_index=-100):
    return _loss_and_grad(lambda z: F.cross_entropy(z, target, ignore_index=ignore_index), logits)


def bce_with_logits_loss(logits, target):
    return _loss_and_grad(lambda z: F.binary_cross_entropy_with_logits(z, target), logits)


def layer_norm_backward(grad_y, x, mean, rstd, weight, input_grad, affine_grad):
    d = x.shape[-1]
    xhat = (x - mean.reshape(*x.shape[:-1], 1)) * rstd.reshape(*x.shape[:-1], 1)
    g = grad_y if weight is None else grad_y * weight
    inner = d * g - g.sum(-1, keepdim=True) - xhat * (g * xhat).sum(-1, keepdim=True)
    gx = rstd.reshape(*x.shape[:-1], 1) / d * inner
    rows = tuple(range(x.dim() - 1))
    return (gx if input_grad else _empty(g), (grad_y * xhat).sum(rows) if affine_grad else _empty(g),
            grad_y.sum(rows) if affine_grad else _empty(g))


def batch_norm_frozen_backward(grad_y, x, weight, running_mean, running_var, eps, input_grad, affine_grad):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    rstd = torch.rsqrt(running_var + eps)
    scale = rstd if weight is None else rstd * weight
    dims = (0,) + tuple(range(2, x.dim()))
    xhat = (x - running_mean.reshape(shape)) * rstd.reshape(shape)
    return (grad_y * scale.reshape(shape) if input_grad else _empty(grad_y),
            (grad_y * xhat).sum(dims) if affine_grad else _empty(grad_y),
            grad_y.sum(dims) if affine_grad else _empty(grad_y))


def embedding_backward(grad_y, indices, num_weights, padding_idx):
    return aten.embedding_dense_backward(grad_y, indices.long(), num_weights, padding_idx, False)


def sgd_update(param, grad, lr):
    return param - lr * grad


REFERENCES: dict[str, Callable] = {f.__name__: f for f in (
    linear, linear_backward, conv2d, conv2d_backward, conv2d_bn, conv2d_bn_backward, max_pool2d, max_pool2d_backward, avg_pool2d,
    avg_pool2d_backward, threshold_backward, softmax_backward, cross_entropy_loss, bce_with_logits_loss,
    layer_norm_backward, batch_norm_frozen_backward, embedding_backward, sgd_update)}

"""The norms' backward ops (kernels/training/norm/): references and fake kernels."""

from __future__ import annotations

import torch

from dcx.kernels.training.shapes import empty, grads_like


def layer_norm_backward_reference(grad_y, x, mean, rstd, weight, input_grad, affine_grad):
    d = x.shape[-1]
    xhat = (x - mean.reshape(*x.shape[:-1], 1)) * rstd.reshape(*x.shape[:-1], 1)
    g = grad_y if weight is None else grad_y * weight
    inner = d * g - g.sum(-1, keepdim=True) - xhat * (g * xhat).sum(-1, keepdim=True)
    gx = rstd.reshape(*x.shape[:-1], 1) / d * inner
    rows = tuple(range(x.dim() - 1))
    return (gx if input_grad else empty(g), (grad_y * xhat).sum(rows) if affine_grad else empty(g),
            grad_y.sum(rows) if affine_grad else empty(g))


def batch_norm_frozen_backward_reference(grad_y, x, weight, running_mean, running_var, eps, input_grad, affine_grad):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    rstd = torch.rsqrt(running_var + eps)
    scale = rstd if weight is None else rstd * weight
    dims = (0,) + tuple(range(2, x.dim()))
    xhat = (x - running_mean.reshape(shape)) * rstd.reshape(shape)
    return (grad_y * scale.reshape(shape) if input_grad else empty(grad_y),
            (grad_y * xhat).sum(dims) if affine_grad else empty(grad_y),
            grad_y.sum(dims) if affine_grad else empty(grad_y))


def layer_norm_backward_fake(grad_y, x, mean, rstd, weight, input_grad, affine_grad):
    d = x.shape[-1]
    return grads_like(x, (d,) if affine_grad else (0,), d, input_grad, affine_grad)


def batch_norm_frozen_backward_fake(grad_y, x, weight, running_mean, running_var, eps, input_grad, affine_grad):
    c = x.shape[1]
    return grads_like(x, (c,) if affine_grad else (0,), c, input_grad, affine_grad)

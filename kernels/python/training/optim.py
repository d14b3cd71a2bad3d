"""The optimizer update ops (kernels/training/optim/): references and fake kernels.

The references are torch.optim's own single-tensor steps (its functional ``sgd`` and ``adam``, foreach=False)
on copies: the arithmetic the kernels match, and the order of operations ``dcx.optim``'s ``update`` writes out
(dcx.kernels imports nothing above it)."""

from __future__ import annotations

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from dcx.kernels.training.shapes import float_like


def sgd_update_reference(param, grad, lr):
    return param - lr * grad


def sgd_update_fake(param, grad, lr):
    return float_like(param, *param.shape)


def sgd_momentum_update_reference(param, grad, momentum_buffer, lr, momentum, nesterov, weight_decay, first_step):
    p, buffers = param.clone(), [None if first_step else momentum_buffer.clone()]  # None: torch's first step
    sgd([p], [grad], buffers, foreach=False, weight_decay=weight_decay, momentum=momentum, lr=lr, dampening=0.0,
        nesterov=nesterov, maximize=False)
    return p, momentum_buffer.clone() if buffers[0] is None else buffers[0]


def sgd_momentum_update_fake(param, grad, momentum_buffer, lr, momentum, nesterov, weight_decay, first_step):
    return float_like(param, *param.shape), float_like(param, *param.shape)


def adam_update_reference(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    p, m, v = param.clone(), exp_avg.clone(), exp_avg_sq.clone()
    adam([p], [grad], [m], [v], [], [torch.tensor(float(step - 1))], foreach=False, decoupled_weight_decay=decoupled,
         amsgrad=False, beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay, eps=eps, maximize=False)
    return p, m, v


def adam_update_fake(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    return tuple(float_like(param, *param.shape) for _ in range(3))

"""The SGD update op (kernels/training/sgd/): reference and fake kernel."""

from __future__ import annotations

from dcx.kernels.training.shapes import float_like


def sgd_update_reference(param, grad, lr):
    return param - lr * grad


def sgd_update_fake(param, grad, lr):
    return float_like(param, *param.shape)

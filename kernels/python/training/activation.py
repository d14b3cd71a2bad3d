"""The activations' backward ops (kernels/training/activation/): references and fake kernels."""

from __future__ import annotations

import torch

from dcx.kernels.training.shapes import float_like

aten = torch.ops.aten


def threshold_backward_reference(grad_y, x, low, high):
    return torch.where((x > low) & (x < high), grad_y, torch.zeros_like(grad_y))


def softmax_backward_reference(grad_y, y, log):
    if log:
        return aten._log_softmax_backward_data(grad_y, y, -1, torch.float32)
    return aten._softmax_backward_data(grad_y, y, -1, torch.float32)


def threshold_backward_fake(grad_y, x, low, high):
    return float_like(grad_y, *grad_y.shape)


def softmax_backward_fake(grad_y, y, log):
    return float_like(grad_y, *grad_y.shape)

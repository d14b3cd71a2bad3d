"""The loss ops, mean loss and gradient in one (kernels/training/loss/): references and fake kernels."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from dcx.kernels.training.shapes import float_like


def _loss_and_grad(loss_fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor):
    z = logits.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(z)
        (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


def cross_entropy_loss_reference(logits, target, ignore_index=-100):
    return _loss_and_grad(lambda z: F.cross_entropy(z, target, ignore_index=ignore_index), logits)


def bce_with_logits_loss_reference(logits, target):
    return _loss_and_grad(lambda z: F.binary_cross_entropy_with_logits(z, target), logits)


def cross_entropy_loss_fake(logits, target, ignore_index=-100):
    return float_like(logits), float_like(logits, *logits.shape)


def bce_with_logits_loss_fake(logits, target):
    return float_like(logits), float_like(logits, *logits.shape)

"""The embedding gradient op (kernels/training/embedding/): reference and fake kernel."""

from __future__ import annotations

import torch

from dcx.kernels.training.shapes import float_like


def embedding_backward_reference(grad_y, indices, num_weights, padding_idx):
    return torch.ops.aten.embedding_dense_backward(grad_y, indices.long(), num_weights, padding_idx, False)


def embedding_backward_fake(grad_y, indices, num_weights, padding_idx):
    return float_like(grad_y, num_weights, grad_y.shape[-1])

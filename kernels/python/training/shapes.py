"""What the training families' references and fake kernels share: output sizes and placeholder tensors."""

from __future__ import annotations

from typing import Sequence

import torch


def conv2d_output_size(hw: Sequence[int], khw: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                       dilation: Sequence[int]) -> tuple[int, int]:
    return tuple((hw[i] + 2 * padding[i] - dilation[i] * (khw[i] - 1) - 1) // stride[i] + 1 for i in range(2))


def pool2d_output_size(hw: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                       padding: Sequence[int]) -> tuple[int, int]:
    return conv2d_output_size(hw, kernel, stride, padding, (1, 1))


def relu_mask(grad_y: torch.Tensor, relu_out: torch.Tensor | None) -> torch.Tensor:
    """grad_y where the ReLU output was positive (all of it without one)."""
    return grad_y if relu_out is None else torch.where(relu_out > 0, grad_y, torch.zeros_like(grad_y))


def empty(like: torch.Tensor) -> torch.Tensor:
    """The [0] tensor an op returns for a gradient it was not asked for."""
    return like.new_empty(0)


def float_like(like: torch.Tensor, *shape: int) -> torch.Tensor:
    return like.new_empty(shape, dtype=torch.float32)


def grads_like(x: torch.Tensor, w_shape: tuple[int, ...], b_len: int, input_grad: bool, bias_grad: bool):
    """Fake (grad_x, grad_weight, grad_bias) of a layer, [0] for those not asked for."""
    return (float_like(x, *x.shape) if input_grad else float_like(x, 0), float_like(x, *w_shape),
            float_like(x, b_len) if bias_grad else float_like(x, 0))

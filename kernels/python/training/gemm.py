"""The linear ops of the GEMM family (kernels/training/gemm/): references and fake kernels."""

from __future__ import annotations

import torch.nn.functional as F

from dcx.kernels.training.shapes import empty, float_like, grads_like, relu_mask


def linear_reference(x, weight, bias=None, relu=False):
    y = F.linear(x, weight, bias)
    return F.relu(y) if relu else y


def linear_backward_reference(grad_y, x, weight, relu_out, input_grad, bias_grad):
    g = relu_mask(grad_y, relu_out)
    return (g @ weight if input_grad else empty(g), g.t() @ x, g.sum(0) if bias_grad else empty(g))


def linear_fake(x, weight, bias=None, relu=False):
    return float_like(x, x.shape[0], weight.shape[0])


def linear_backward_fake(grad_y, x, weight, relu_out, input_grad, bias_grad):
    return grads_like(x, tuple(weight.shape), weight.shape[0], input_grad, bias_grad)

"""Fake (meta) kernels of the dcx training ops, so that torch.export, FakeTensor tracing and
ExecuTorch's memory planning see their output shapes.

Imported by ``_library.load_training_ops`` right after the C++ library defined the ops. The shape
rules are the C++ ones (``kernels/csrc/tk_op_impl.h``); bad arguments are refused there, at run
time, and by the fast-training pass before it ever emits an op.
"""

from __future__ import annotations

import torch

from dcx.kernels.training_reference import conv2d_output_size, pool2d_output_size

register = torch.library.register_fake


def _float(like: torch.Tensor, *shape: int) -> torch.Tensor:
    return like.new_empty(shape, dtype=torch.float32)


def _grads(x: torch.Tensor, w_shape: tuple[int, ...], b_len: int, input_grad: bool, bias_grad: bool):
    return (_float(x, *x.shape) if input_grad else _float(x, 0), _float(x, *w_shape),
            _float(x, b_len) if bias_grad else _float(x, 0))


@register("dcx::linear")
def _linear(x, weight, bias=None, relu=False):
    return _float(x, x.shape[0], weight.shape[0])


@register("dcx::linear_backward")
def _linear_backward(grad_y, x, weight, relu_out, input_grad, bias_grad):
    return _grads(x, tuple(weight.shape), weight.shape[0], input_grad, bias_grad)


@register("dcx::conv2d")
def _conv2d(x, weight, bias, stride, padding, dilation, groups, relu=False):
    h, w = conv2d_output_size(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    return _float(x, x.shape[0], weight.shape[0], h, w)


@register("dcx::conv2d_backward")
def _conv2d_backward(grad_y, x, weight, relu_out, stride, padding, dilation, groups, input_grad, bias_grad):
    return _grads(x, tuple(weight.shape), weight.shape[0], input_grad, bias_grad)


@register("dcx::conv2d_bn")
def _conv2d_bn(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, eps, stride, padding, dilation, groups,
               low, high, keep_conv, conv_only_for_backward):
    y = _conv2d(x, weight, bias, stride, padding, dilation, groups)
    return (_float(x, *y.shape) if keep_conv else _float(x, 0)), y


@register("dcx::conv2d_bn_backward")
def _conv2d_bn_backward(grad_y, y, conv_out, x, weight, bn_weight, bn_bias, running_mean, running_var, eps, stride,
                        padding, dilation, groups, low, high, input_grad, bias_grad, bn_grad):
    c = weight.shape[0]
    return (*_grads(x, tuple(weight.shape), c, input_grad, bias_grad),
            *(_float(x, c if bn_grad else 0) for _ in range(2)))


@register("dcx::max_pool2d")
def _max_pool2d(x, kernel, stride, padding):
    h, w = pool2d_output_size(x.shape[2:], kernel, stride, padding)
    return _float(x, x.shape[0], x.shape[1], h, w), x.new_empty((x.shape[0], x.shape[1], h, w), dtype=torch.int64)


@register("dcx::max_pool2d_backward")
def _max_pool2d_backward(grad_y, x, indices, kernel, stride, padding):
    return _float(x, *x.shape)


@register("dcx::avg_pool2d")
def _avg_pool2d(x, kernel, stride, padding, count_include_pad):
    h, w = pool2d_output_size(x.shape[2:], kernel, stride, padding)
    return _float(x, x.shape[0], x.shape[1], h, w)


@register("dcx::avg_pool2d_backward")
def _avg_pool2d_backward(grad_y, x, kernel, stride, padding, count_include_pad):
    return _float(x, *x.shape)


@register("dcx::threshold_backward")
def _threshold_backward(grad_y, x, low, high):
    return _float(grad_y, *grad_y.shape)


@register("dcx::softmax_backward")
def _softmax_backward(grad_y, y, log):
    return _float(grad_y, *grad_y.shape)


@register("dcx::cross_entropy_loss")
def _cross_entropy_loss(logits, target, ignore_index=-100):
    return _float(logits), _float(logits, *logits.shape)


@register("dcx::bce_with_logits_loss")
def _bce_with_logits_loss(logits, target):
    return _float(logits), _float(logits, *logits.shape)


@register("dcx::layer_norm_backward")
def _layer_norm_backward(grad_y, x, mean, rstd, weight, input_grad, affine_grad):
    d = x.shape[-1]
    return _grads(x, (d,) if affine_grad else (0,), d, input_grad, affine_grad)


@register("dcx::batch_norm_frozen_backward")
def _batch_norm_frozen_backward(grad_y, x, weight, running_mean, running_var, eps, input_grad, affine_grad):
    c = x.shape[1]
    return _grads(x, (c,) if affine_grad else (0,), c, input_grad, affine_grad)


@register("dcx::embedding_backward")
def _embedding_backward(grad_y, indices, num_weights, padding_idx):
    return _float(grad_y, num_weights, grad_y.shape[-1])


@register("dcx::sgd_update")
def _sgd_update(param, grad, lr):
    return _float(param, *param.shape)

"""Fake (meta) kernels of the dcx ops, so that torch.export and FakeTensor tracing see their shapes.

Imported by ``_library.load_aten_ops`` right after the C++ library defined the ops. The checks
raise the same one-line ``DcxError`` messages as the C++ kernels, at export time.
"""

from __future__ import annotations

import torch

from dcx.errors import DcxError

OP = "dcx::shuffled_partitioned_linear"


def _check_float(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype != torch.float32:
        raise DcxError(f"{op}: {name} must be float32, got {t.dtype}; convert it with .float()")


def check_forward_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Shapes and dtypes of the forward, with the messages of the C++ op."""
    _check_float(OP, "x", x)
    _check_float(OP, "weight", weight)
    if bias is not None:
        _check_float(OP, "bias", bias)
    if weight.dim() != 3:
        raise DcxError(f"{OP}: weight must have shape [P, d_out/P, d_in/P], got {list(weight.shape)}")
    if x.dim() < 1:
        raise DcxError(f"{OP}: x must have at least 1 dim [..., d_in], got a scalar")
    p, bo, bi = weight.shape
    d_in = x.shape[-1]
    if d_in % p != 0:
        raise DcxError(f"{OP}: x's last dim {d_in} is not divisible by P={p} (weight.shape[0]); choose P dividing d_in")
    if d_in != p * bi:
        raise DcxError(f"{OP}: x's last dim {d_in} does not match weight {list(weight.shape)}, "
                       f"which expects d_in = P * d_in/P = {p * bi}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != p * bo):
        raise DcxError(f"{OP}: bias must have shape [d_out] = [{p * bo}] for weight {list(weight.shape)}, "
                       f"got {list(bias.shape)}")


@torch.library.register_fake("dcx::shuffled_partitioned_linear")
def _forward_fake(x, weight, bias=None, shuffle=True):
    check_forward_args(x, weight, bias)
    return x.new_empty((*x.shape[:-1], weight.shape[0] * weight.shape[1]))


@torch.library.register_fake("dcx::shuffled_partitioned_linear_grad_input")
def _grad_input_fake(grad_y, weight, shuffle=True):
    _check_float("dcx::shuffled_partitioned_linear_grad_input", "grad_y", grad_y)
    return grad_y.new_empty((*grad_y.shape[:-1], weight.shape[0] * weight.shape[2]))


@torch.library.register_fake("dcx::shuffled_partitioned_linear_grad_weight")
def _grad_weight_fake(grad_y, x, partitions, shuffle=True):
    _check_float("dcx::shuffled_partitioned_linear_grad_weight", "grad_y", grad_y)
    return grad_y.new_empty((partitions, grad_y.shape[-1] // partitions, x.shape[-1] // partitions))


@torch.library.register_fake("dcx::shuffled_partitioned_linear_grad_bias")
def _grad_bias_fake(grad_y, partitions, shuffle=True):
    _check_float("dcx::shuffled_partitioned_linear_grad_bias", "grad_y", grad_y)
    return grad_y.new_empty((grad_y.shape[-1],))

"""The fused shuffled partitioned linear of ICIIA (docs/methods.md 1.2) from Python: the
``dcx::shuffled_partitioned_linear`` op and its gradient ops (kernels/partitioned_linear/), their
references and fake kernels (the op table's Python half, ``dcx.kernels.ops``).

    y = shuffle(blockdiag(W_1..W_P) x + b),   shuffle(z)[j*P + p] = z[p*(d_out/P) + j]

- ``shuffled_partitioned_linear(x, weight, bias, shuffle)``: the op; without a build it falls back to
  its reference (a batched matmul: the same results, to float rounding).
- ``is_built()``, ``load_error()``: the PyTorch op library loads, or why not.
- ``load_executorch_kernels()``: register the ExecuTorch kernels in this process (once).
- ``kernel_isa(name)``: the implementation the op runs (portable, x86-64-v3, neon); a name forces one.
"""

from __future__ import annotations

import os
import warnings

import torch

from dcx.kernels import library as _library
from dcx.kernels.errors import KernelError

LIBRARY = "partitioned_linear"
KERNEL_LIBRARY = _library.executorch_library_name(LIBRARY)  # as a manifest's requires.kernel_libraries names it
OP = "dcx::shuffled_partitioned_linear"

_warned_fallback = False


def is_built() -> bool:
    """True when the PyTorch op library is built and loads."""
    return _library.load_aten(LIBRARY)


def load_error() -> str | None:
    return _library.load_error(LIBRARY)


def load_executorch_kernels(path: str | os.PathLike | None = None) -> str:
    """Register the ExecuTorch kernels in this process (``path`` overrides where the library is); returns
    the path loaded."""
    return _library.load_executorch_library(KERNEL_LIBRARY, path)


def kernel_isa(name: str | None = None) -> str:
    return _library.kernel_isa(LIBRARY, name)


def shuffled_partitioned_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                                shuffle: bool = True) -> torch.Tensor:
    """x [..., d_in] (float32, contiguous), weight [P, d_out/P, d_in/P], bias [d_out] or None.

    Bad shapes, dtypes or non-contiguous inputs raise ``KernelError`` naming the argument."""
    if not is_built():
        global _warned_fallback
        if not _warned_fallback:
            _warned_fallback = True
            warnings.warn(f"{load_error()}; using the batched-matmul path", RuntimeWarning, stacklevel=2)
        return shuffled_partitioned_linear_reference(x, weight, bias, shuffle)
    try:
        return torch.ops.dcx.shuffled_partitioned_linear(x, weight, bias, shuffle)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if first.startswith("dcx::"):
            raise KernelError(first) from None
        raise


# ---------------------------------------------------------------------------------------------- references

def channel_shuffle(z: torch.Tensor, partitions: int) -> torch.Tensor:
    """View the last dim as [P, d/P], transpose to [d/P, P], flatten."""
    *lead, d = z.shape
    return z.reshape(*lead, partitions, d // partitions).transpose(-1, -2).reshape(*lead, d)


def channel_unshuffle(y: torch.Tensor, partitions: int) -> torch.Tensor:
    """The inverse of ``channel_shuffle``."""
    return channel_shuffle(y, y.shape[-1] // partitions)


def shuffled_partitioned_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                          shuffle: bool = True) -> torch.Tensor:
    """The batched-matmul formulation. x: [..., d_in], weight: [P, d_out/P, d_in/P], bias: [d_out]."""
    p, block_out, block_in = weight.shape
    lead = x.shape[:-1]
    xb = x.reshape(-1, p, block_in).transpose(0, 1)  # [P, N, d_in/P]
    yb = torch.bmm(xb, weight.transpose(1, 2))  # [P, N, d_out/P]
    y = yb.transpose(0, 1).reshape(*lead, p * block_out)
    if bias is not None:
        y = y + bias
    return channel_shuffle(y, p) if shuffle else y



def shuffled_partitioned_linear_grad_input_reference(grad_y: torch.Tensor, weight: torch.Tensor,
                                                     shuffle: bool = True) -> torch.Tensor:
    """grad_x [..., d_in] of the forward, from grad_y [..., d_out]."""
    p, block_out, block_in = weight.shape
    g = channel_unshuffle(grad_y, p) if shuffle else grad_y
    gb = g.reshape(-1, p, block_out).transpose(0, 1)  # [P, N, d_out/P]
    return torch.bmm(gb, weight).transpose(0, 1).reshape(*grad_y.shape[:-1], p * block_in)


def shuffled_partitioned_linear_grad_weight_reference(grad_y: torch.Tensor, x: torch.Tensor, partitions: int,
                                                      shuffle: bool = True) -> torch.Tensor:
    """grad_weight [P, d_out/P, d_in/P] of the forward, from grad_y [..., d_out] and x [..., d_in]."""
    g = channel_unshuffle(grad_y, partitions) if shuffle else grad_y
    gb = g.reshape(-1, partitions, g.shape[-1] // partitions).transpose(0, 1)  # [P, N, d_out/P]
    xb = x.reshape(-1, partitions, x.shape[-1] // partitions).transpose(0, 1)  # [P, N, d_in/P]
    return torch.bmm(gb.transpose(1, 2), xb)


def shuffled_partitioned_linear_grad_bias_reference(grad_y: torch.Tensor, partitions: int,
                                                    shuffle: bool = True) -> torch.Tensor:
    """grad_bias [d_out] of the forward, from grad_y [..., d_out]."""
    g = channel_unshuffle(grad_y, partitions) if shuffle else grad_y
    return g.reshape(-1, g.shape[-1]).sum(0)


# ---------------------------------------------------------------------------------------------- fake kernels

def _check_float(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype != torch.float32:
        raise KernelError(f"{op}: {name} must be float32, got {t.dtype}; convert it with .float()")


def check_forward_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Shapes and dtypes of the forward, with the messages of the C++ op, at export time."""
    _check_float(OP, "x", x)
    _check_float(OP, "weight", weight)
    if bias is not None:
        _check_float(OP, "bias", bias)
    if weight.dim() != 3:
        raise KernelError(f"{OP}: weight must have shape [P, d_out/P, d_in/P], got {list(weight.shape)}")
    if x.dim() < 1:
        raise KernelError(f"{OP}: x must have at least 1 dim [..., d_in], got a scalar")
    p, bo, bi = weight.shape
    d_in = x.shape[-1]
    if d_in % p != 0:
        raise KernelError(f"{OP}: x's last dim {d_in} is not divisible by P={p} (weight.shape[0]); choose P dividing d_in")
    if d_in != p * bi:
        raise KernelError(f"{OP}: x's last dim {d_in} does not match weight {list(weight.shape)}, "
                          f"which expects d_in = P * d_in/P = {p * bi}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != p * bo):
        raise KernelError(f"{OP}: bias must have shape [d_out] = [{p * bo}] for weight {list(weight.shape)}, "
                          f"got {list(bias.shape)}")


def shuffled_partitioned_linear_fake(x, weight, bias=None, shuffle=True):
    check_forward_args(x, weight, bias)
    return x.new_empty((*x.shape[:-1], weight.shape[0] * weight.shape[1]))


def shuffled_partitioned_linear_grad_input_fake(grad_y, weight, shuffle=True):
    _check_float(f"{OP}_grad_input", "grad_y", grad_y)
    return grad_y.new_empty((*grad_y.shape[:-1], weight.shape[0] * weight.shape[2]))


def shuffled_partitioned_linear_grad_weight_fake(grad_y, x, partitions, shuffle=True):
    _check_float(f"{OP}_grad_weight", "grad_y", grad_y)
    return grad_y.new_empty((partitions, grad_y.shape[-1] // partitions, x.shape[-1] // partitions))


def shuffled_partitioned_linear_grad_bias_fake(grad_y, partitions, shuffle=True):
    _check_float(f"{OP}_grad_bias", "grad_y", grad_y)
    return grad_y.new_empty((grad_y.shape[-1],))

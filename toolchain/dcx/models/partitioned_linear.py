"""Partitioned linear projection with feature shuffling (ICIIA, section 1.2 of docs/methods.md).

A d_in x d_out projection becomes P independent blocks of shape
(d_out/P x d_in/P): a block-diagonal weight, P times fewer parameters and FLOPs.
A ShuffleNet-style channel shuffle after it lets the next partitioned
projection mix information across partitions:

    y = shuffle(blockdiag(W_1, ..., W_P) @ x + b)
    shuffle(z)[j * P + p] = z[p * (d_out/P) + j]

This module is the reference formulation (a batched matmul). When the fused
kernel library is built, ``dcx.kernels`` provides ``torch.ops.dcx.shuffled_partitioned_linear``
with identical results; ``PartitionedLinear`` uses it if ``use_fused_kernel`` is set.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dcx.errors import DcxError


def channel_shuffle(z: torch.Tensor, partitions: int) -> torch.Tensor:
    """View the last dim as [P, d/P], transpose to [d/P, P], flatten."""
    *lead, d = z.shape
    return z.reshape(*lead, partitions, d // partitions).transpose(-1, -2).reshape(*lead, d)


def check_partitions(d_in: int, d_out: int, partitions: int) -> None:
    if partitions < 1 or d_in % partitions or d_out % partitions:
        raise DcxError(
            f"PartitionedLinear: d_in={d_in} and d_out={d_out} must both be divisible by "
            f"partitions={partitions}; choose P among the common divisors"
        )


def partitioned_linear_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, shuffle: bool = True
) -> torch.Tensor:
    """Batched-matmul formulation. x: [..., d_in], weight: [P, d_out/P, d_in/P], bias: [d_out]."""
    p, block_out, block_in = weight.shape
    lead = x.shape[:-1]
    xb = x.reshape(-1, p, block_in).transpose(0, 1)  # [P, N, d_in/P]
    yb = torch.bmm(xb, weight.transpose(1, 2))  # [P, N, d_out/P]
    y = yb.transpose(0, 1).reshape(*lead, p * block_out)
    if bias is not None:
        y = y + bias
    return channel_shuffle(y, p) if shuffle else y


def block_diagonal_weight(weight: torch.Tensor) -> torch.Tensor:
    """The dense (d_out x d_in) weight equivalent to the P blocks."""
    return torch.block_diag(*weight.unbind(0))


class PartitionedLinear(nn.Module):
    """``nn.Linear`` replaced by P block-diagonal partitions, optionally followed by a shuffle."""

    def __init__(self, d_in: int, d_out: int, partitions: int = 1, shuffle: bool = True, bias: bool = True):
        super().__init__()
        check_partitions(d_in, d_out, partitions)
        self.d_in, self.d_out, self.partitions, self.shuffle = d_in, d_out, partitions, shuffle
        self.weight = nn.Parameter(torch.empty(partitions, d_out // partitions, d_in // partitions))
        self.bias = nn.Parameter(torch.empty(d_out)) if bias else None
        self.use_fused_kernel = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.d_in // self.partitions)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_in:
            raise DcxError(f"PartitionedLinear expects inputs with last dim {self.d_in}, got shape {tuple(x.shape)}")
        if self.use_fused_kernel:
            from dcx.kernels import shuffled_partitioned_linear

            return shuffled_partitioned_linear(x, self.weight, self.bias, self.shuffle)
        return partitioned_linear_reference(x, self.weight, self.bias, self.shuffle)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, partitions={self.partitions}, shuffle={self.shuffle}"

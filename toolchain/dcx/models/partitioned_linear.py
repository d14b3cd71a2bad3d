"""Partitioned linear projection with feature shuffling (ICIIA, section 1.2 of docs/methods.md).

A d_in x d_out projection becomes P independent blocks of shape
(d_out/P x d_in/P): a block-diagonal weight, P times fewer parameters and FLOPs.
A ShuffleNet-style channel shuffle after it lets the next partitioned
projection mix information across partitions:

    y = shuffle(blockdiag(W_1, ..., W_P) @ x + b)
    shuffle(z)[j * P + p] = z[p * (d_out/P) + j]

``PartitionedLinear`` computes it with the reference formulation (a batched
matmul, the kernel's reference in ``dcx.kernels.partitioned_linear``), or, with
``use_fused_kernel`` set (``enable_fused``), with the fused kernel
``torch.ops.dcx.shuffled_partitioned_linear``: the same results.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dcx.errors import DcxError
from dcx.kernels import partitioned_linear as kernel
from dcx.kernels.partitioned_linear import channel_shuffle  # noqa: F401 (part of this module's API)
from dcx.kernels.partitioned_linear import shuffled_partitioned_linear_reference as partitioned_linear_reference


def check_partitions(d_in: int, d_out: int, partitions: int) -> None:
    if partitions < 1 or d_in % partitions or d_out % partitions:
        raise DcxError(
            f"PartitionedLinear: d_in={d_in} and d_out={d_out} must both be divisible by "
            f"partitions={partitions}; choose P among the common divisors"
        )


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
            return kernel.shuffled_partitioned_linear(x, self.weight, self.bias, self.shuffle)
        return partitioned_linear_reference(x, self.weight, self.bias, self.shuffle)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, partitions={self.partitions}, shuffle={self.shuffle}"


def _partitioned_linears(module: nn.Module) -> list[PartitionedLinear]:
    return [m for m in module.modules() if isinstance(m, PartitionedLinear)]


def enable_fused(module: nn.Module) -> int:
    """Make every ``PartitionedLinear`` in ``module`` use the fused op; returns how many.

    Raises ``DcxError`` when the kernels are not built (``--fused-kernels`` must not silently
    export the unfused graph). For ExecuTorch nothing else is needed: loading the op library
    registered the ops and their ``.out`` variants, so the usual ``torch.export.export`` ->
    ``to_edge`` -> ``to_executorch`` pipeline emits ``dcx::shuffled_partitioned_linear.out``
    (and, for joint training graphs, the ``*_grad_*.out`` kernels). Whoever *runs* the ``.pte``
    must load ``dcx.kernels.partitioned_linear.load_executorch_kernels()`` once before loading it. For
    TFLite, Core ML and ONNX do not call this, or lower an exported program with
    ``ep.run_decompositions(decompositions())``.
    """
    if not kernel.is_built():
        raise DcxError(kernel.load_error() or "dcx fused kernels are not built: run `bash kernels/build.sh`")
    layers = _partitioned_linears(module)
    for layer in layers:
        layer.use_fused_kernel = True
    return len(layers)


def disable_fused(module: nn.Module) -> int:
    """Back to the batched-matmul formulation on every ``PartitionedLinear``; returns how many."""
    layers = _partitioned_linears(module)
    for layer in layers:
        layer.use_fused_kernel = False
    return len(layers)


def decompositions() -> dict:
    """Decomposition table lowering the fused op to its batched matmul + transpose (for backends whose
    runtimes cannot take custom kernels): ``ep.run_decompositions(decompositions())``."""
    if not kernel.is_built():
        return {}

    def _decomposed(x, weight, bias=None, shuffle=True):
        return partitioned_linear_reference(x, weight, bias, shuffle)

    return {torch.ops.dcx.shuffled_partitioned_linear.default: _decomposed}


_LOWERING = {
    "executorch": "fused custom kernel dcx::shuffled_partitioned_linear.out (kernels/partitioned_linear/); "
    f"the runtime must load lib{kernel.KERNEL_LIBRARY}.so before the program",
    "tflite": "lowered to builtin BATCH_MATMUL + TRANSPOSE/RESHAPE: the TFLite/LiteRT Python wheels cannot "
    "register custom kernels here",
    "coreml": "lowered to builtin matmul + transpose/reshape: coremltools cannot register custom kernels here",
    "onnx": "lowered to MatMul + Transpose/Reshape (standard ops)",
}


def lowering_note(backend: str) -> str:
    """One line for an artifact manifest: how the partitioned projection runs on ``backend``."""
    try:
        return _LOWERING[backend]
    except KeyError:
        raise DcxError(f"unknown backend {backend!r}; expected one of {sorted(_LOWERING)}") from None

"""Fused kernels for dcx: the shuffled partitioned linear of ICIIA (docs/methods.md 1.2) in one pass.

    y = shuffle(blockdiag(W_1..W_P) x + b),   shuffle(z)[j*P + p] = z[p*(d_out/P) + j]

Layers (torchao style): pure C kernels in ``kernels/csrc/spl_kernel.*`` (a portable vectorized
path, an x86-64-v3 build of it chosen at run time, NEON micro-kernels on aarch64), with thin
registrations: ``op_spl_aten.cpp`` (PyTorch ops ``dcx::shuffled_partitioned_linear`` + ``.out``,
autograd through three backward ops) and ``op_spl_executorch.cpp`` (ExecuTorch ``.out`` kernels).
Build them with ``bash kernels/build.sh``.

Python API:
- ``shuffled_partitioned_linear(x, weight, bias, shuffle)``: the op; without a build it falls
  back to the batched-matmul reference (same results, to float rounding).
- ``is_built()``, ``enable_fused(module)``: switch ``PartitionedLinear`` layers to the fused op.
- ``load_executorch_kernels()``: register the ExecuTorch kernels in this process (once).
- ``decompositions()`` / ``lowering_note(backend)``: how backends without custom kernels get it.

The training kernels (conv, linear, pooling, losses ... and their backward) are in
``dcx.kernels.training``; ``load_executorch_library(name)`` registers any dcx ExecuTorch kernel
library a manifest requires, and ``require_executorch_libraries`` refuses a program whose dcx
operators no loaded library registers.
"""

from __future__ import annotations

import warnings

import torch

from dcx.errors import DcxError
from dcx.kernels._library import (
    BUILD_SCRIPT,
    aten_load_error,
    build_dir,
    library_path,
    load_aten_ops,
    load_executorch_kernels,
    load_executorch_library,
    require_executorch_libraries,
)

__all__ = [
    "shuffled_partitioned_linear",
    "is_built",
    "enable_fused",
    "disable_fused",
    "load_executorch_kernels",
    "load_executorch_library",
    "require_executorch_libraries",
    "library_path",
    "build_dir",
    "decompositions",
    "lowering_note",
    "kernel_isa",
    "BUILD_SCRIPT",
]

_op = None  # torch.ops.dcx.shuffled_partitioned_linear.default once loaded
_warned_fallback = False


def is_built() -> bool:
    """True when the PyTorch op library is built and loads."""
    return load_aten_ops()


def _resolve_op():
    global _op
    if _op is None and load_aten_ops():
        _op = torch.ops.dcx.shuffled_partitioned_linear.default
    return _op


def _dcx_error(e: RuntimeError) -> Exception:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return DcxError(first) if first.startswith("dcx::") else e


def shuffled_partitioned_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, shuffle: bool = True
) -> torch.Tensor:
    """x [..., d_in] (float32, contiguous), weight [P, d_out/P, d_in/P], bias [d_out] or None.

    Bad shapes, dtypes or non-contiguous inputs raise ``DcxError`` naming the argument.
    """
    op = _op if _op is not None else _resolve_op()
    if op is None:
        global _warned_fallback
        if not _warned_fallback:
            _warned_fallback = True
            warnings.warn(f"{aten_load_error()}; using the batched-matmul path", RuntimeWarning, stacklevel=2)
        from dcx.models.partitioned_linear import partitioned_linear_reference

        return partitioned_linear_reference(x, weight, bias, shuffle)
    try:
        return op(x, weight, bias, shuffle)
    except RuntimeError as e:
        raise _dcx_error(e) from None


def _partitioned_linears(module: torch.nn.Module):
    from dcx.models.partitioned_linear import PartitionedLinear

    return [m for m in module.modules() if isinstance(m, PartitionedLinear)]


def enable_fused(module: torch.nn.Module) -> int:
    """Make every ``PartitionedLinear`` in ``module`` use the fused op; returns how many.

    Raises ``DcxError`` when the kernels are not built (``--fused-kernels`` must not silently
    export the unfused graph). For ExecuTorch nothing else is needed: loading the op library
    registered the ops and their ``.out`` variants, so the usual ``torch.export.export`` ->
    ``to_edge`` -> ``to_executorch`` pipeline emits ``dcx::shuffled_partitioned_linear.out``
    (and, for joint training graphs, the ``*_grad_*.out`` kernels). Whoever *runs* the ``.pte``
    must call ``load_executorch_kernels()`` once before loading it. For TFLite, Core ML and ONNX
    do not call this, or lower an exported program with ``ep.run_decompositions(decompositions())``.
    """
    if not load_aten_ops():
        raise DcxError(aten_load_error() or "dcx fused kernels are not built: run `bash kernels/build.sh`")
    layers = _partitioned_linears(module)
    for layer in layers:
        layer.use_fused_kernel = True
    return len(layers)


def disable_fused(module: torch.nn.Module) -> int:
    """Back to the batched-matmul formulation on every ``PartitionedLinear``; returns how many."""
    layers = _partitioned_linears(module)
    for layer in layers:
        layer.use_fused_kernel = False
    return len(layers)


def decompositions() -> dict:
    """Decomposition table lowering the fused op to batched matmul + transpose (for backends
    whose runtimes cannot take custom kernels): ``ep.run_decompositions(decompositions())``."""
    if not load_aten_ops():
        return {}
    from dcx.models.partitioned_linear import partitioned_linear_reference

    def _decomposed(x, weight, bias=None, shuffle=True):
        return partitioned_linear_reference(x, weight, bias, shuffle)

    return {torch.ops.dcx.shuffled_partitioned_linear.default: _decomposed}


_LOWERING = {
    "executorch": "fused custom kernel dcx::shuffled_partitioned_linear.out (kernels/csrc/op_spl_executorch.cpp); "
    "the runtime must load libdcx_spl_executorch.so before the program",
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


def kernel_isa(name: str | None = None) -> str:
    """The active kernel implementation (portable, x86-64-v3, neon); pass a name to force one."""
    if not load_aten_ops():
        raise DcxError(aten_load_error() or "dcx fused kernels are not built")
    try:
        return torch.ops.dcx._kernel_isa(name or "")
    except RuntimeError as e:
        raise _dcx_error(e) from None

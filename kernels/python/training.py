"""The dcx training kernels from Python (kernels/csrc/tk_*): the ops of ``torch.ops.dcx`` that the
fast-training export pass (``dcx.export.passes.fast_training``) puts into joint graphs, and the
ExecuTorch kernel library that runs them.

- ``is_built()``: the PyTorch op library loads (``torch.ops.dcx.linear``, ``conv2d``, ...).
- ``load_executorch_kernels()``: register ``libdcx_train_executorch.so`` with ExecuTorch, once.
- ``OPS``: the op names; ``dcx.kernels.training_reference`` defines each in plain PyTorch.
"""

from __future__ import annotations

from dcx.kernels._library import TRAINING_LIBRARY as KERNEL_LIBRARY
from dcx.kernels._library import load_executorch_library, load_training_ops
from dcx.kernels.training_reference import REFERENCES

OPS = tuple(f"dcx::{name}" for name in REFERENCES)


__all__ = ["KERNEL_LIBRARY", "OPS", "is_built", "load_executorch_kernels"]


def is_built() -> bool:
    return load_training_ops()


def load_executorch_kernels() -> str:
    """Register the training kernels with the ExecuTorch runtime in this process; returns the library path."""
    return load_executorch_library(KERNEL_LIBRARY)

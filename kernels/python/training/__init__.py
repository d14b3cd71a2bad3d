"""The training kernels from Python (kernels/training/, one folder per family): the ops of
``torch.ops.dcx`` that the fast-training export pass puts into joint graphs, and the ExecuTorch kernel
library that runs them. One module per family holds its ops' references, fake kernels and, where the
kernel library decides which shapes a kernel takes, its ``eligible`` rule (the op table's Python half,
``dcx.kernels.ops``).

- ``is_built()``, ``load_error()``: the PyTorch op library loads (``torch.ops.dcx.linear``, ``conv2d``, ...),
  or why not.
- ``load_executorch_kernels()``: register ``libdcx_training_executorch.so`` with ExecuTorch, once.
- ``KERNEL_LIBRARY``: that library as a manifest's ``requires.kernel_libraries`` names it.
"""

from __future__ import annotations

from dcx.kernels import library as _library

LIBRARY = "training"
KERNEL_LIBRARY = _library.executorch_library_name(LIBRARY)


def is_built() -> bool:
    return _library.load_aten(LIBRARY)


def load_error() -> str | None:
    return _library.load_error(LIBRARY)


def load_executorch_kernels() -> str:
    """Register the training kernels with the ExecuTorch runtime in this process; returns the library path."""
    return _library.load_executorch_library(KERNEL_LIBRARY)

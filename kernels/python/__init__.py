"""dcx's kernels from Python: they register the dcx ops with PyTorch and ExecuTorch, and nothing else.

- ``dcx.kernels.training``: the training kernels (kernels/training/), one module per family.
- ``dcx.kernels.partitioned_linear``: the fused shuffled partitioned linear of ICIIA.
- ``dcx.kernels.ops``: the op table (kernels/ops.def), each op with its reference, fake kernel and
  eligibility rule.
- ``dcx.kernels.library``: where the built libraries are, and loading them; ``load_executorch_library``
  registers the ExecuTorch kernel library a manifest names, ``require_executorch_libraries`` refuses a
  program whose dcx operators no loaded library registers.
- ``dcx.kernels.errors``: ``DcxError``, the one user-error type of dcx, and the kernels' own.

It imports nothing from the rest of dcx (tests/test_kernel_op_table.py checks it): the toolchain builds
on the kernels, never the other way round.
"""

from __future__ import annotations

from dcx.kernels.errors import DcxError, KernelError, KernelsNotBuilt
from dcx.kernels.library import (
    BUILD_SCRIPT,
    build_dir,
    library_path,
    load_executorch_library,
    require_executorch_libraries,
)

__all__ = ["BUILD_SCRIPT", "DcxError", "KernelError", "KernelsNotBuilt", "build_dir", "library_path",
           "load_executorch_library", "require_executorch_libraries"]

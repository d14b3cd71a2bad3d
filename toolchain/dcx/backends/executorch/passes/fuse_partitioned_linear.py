"""Rewrite every ``PartitionedLinear`` to the fused ``dcx::shuffled_partitioned_linear`` op (ExecuTorch).

Once the op library is loaded, capture emits the custom op (and, in joint
graphs, its gradient ops) instead of bmm + transpose/reshape; the artifact
then needs the dcx ExecuTorch kernel library at run time, which this pass
records in the manifest.
"""

from __future__ import annotations

from torch import nn

from dcx.passes import PassContext

FUSED_OP = "dcx::shuffled_partitioned_linear.out"


class FusePartitionedLinear:
    name = "fuse_partitioned_linear"

    def run(self, module: nn.Module, ctx: PassContext) -> nn.Module:
        from dcx.kernels.partitioned_linear import KERNEL_LIBRARY
        from dcx.models.partitioned_linear import enable_fused

        count = enable_fused(module)
        ctx.report(self.name, layers=count)
        if count:
            ctx.require(custom_ops=[FUSED_OP], kernel_libraries=[KERNEL_LIBRARY])
        return module

"""The XNNPACK partitioner configs dcx lowers with: ExecuTorch's own, but GELU only where it is exact.

Why: XNNPACK's GELU is the exact (erf) one, and ExecuTorch's ``GeluConfig`` does not read ``approximate``:
a tanh-approximated GELU delegated to XNNPACK silently computes the other function (1e-4 off on a small
transformer block). Declined, it runs on the portable kernel, which honours the argument.
"""

from __future__ import annotations

import torch
from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
from executorch.backends.xnnpack.partition.config.generic_node_configs import GeluConfig, why


class ExactGeluConfig(GeluConfig):
    def check_constraints(self, node: torch.fx.Node, ep) -> bool:
        approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
        if approximate != "none":
            why(node, reason=f"XNNPACK's GELU is exact, not approximate={approximate!r}")
            return False
        return super().check_constraints(node, ep)


XNNPACK_CONFIGS = [ExactGeluConfig if config is GeluConfig else config for config in ALL_PARTITIONER_CONFIGS]

"""The ExecuTorch backend's export options (``dcx export --fused-kernels / --no-fast-training``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExecuTorchOptions:
    fused_kernels: bool = False  # ICIIA's PartitionedLinear as the custom dcx:: op (inference programs)
    fast_training: bool = True  # training graphs on the dcx training kernels (passes/fast_training/)
    frozen_xnnpack: bool = True  # with fast_training: the frozen layers' forward in XNNPACK (passes/frozen_xnnpack.py)

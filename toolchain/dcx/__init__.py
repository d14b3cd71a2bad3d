"""dcx: device-cloud collaborative learning, from PyTorch to artifacts that phones run and train.

The public API (``dcx.api``), imported lazily so ``import dcx`` stays light:
``training_program``, ``inference_program``, ``export_programs``, ``verify``,
``split_by_width``, ``zero_cross_group_weights``, ``get_recipe``, ``DcxError``;
and the optimizers, ``dcx.optim``.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "training_program": "dcx.api",
    "inference_program": "dcx.api",
    "export_programs": "dcx.api",
    "verify": "dcx.api",
    "split_by_width": "dcx.methods.dcccl.split",
    "zero_cross_group_weights": "dcx.methods.dcccl.split",
    "get_recipe": "dcx.methods",
    "DcxError": "dcx.errors",
}

__all__ = sorted([*_PUBLIC, "optim"])


def __getattr__(name: str) -> Any:
    if name == "optim":
        return importlib.import_module("dcx.optim")
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'dcx' has no attribute {name!r}")

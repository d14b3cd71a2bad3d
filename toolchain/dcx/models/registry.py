"""Architectures by name, built one way (timm's ``create_model``): ``dcx coverage`` and the tests find them here.

Each family file registers its architectures with ``register``: the family's constructor, the task it is trained
on (what its inputs look like and its loss, ``dcx.models.tasks``) and two sizes, the real one and a ``quick`` one
small enough for CI. ``create(name, quick)`` builds either. The family files are imported the first time the
registry is asked, in ``FAMILIES`` order (the order of the coverage table's rows).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from dcx.errors import DcxError
from dcx.models.tasks import Task

FAMILIES = ("mobilenetv2", "mobilenetv3", "resnet", "efficientnet_lite", "vit", "two_tower", "gru_text")


@dataclass(frozen=True)
class Size:
    """One size of an architecture: the task at that size, the training batch, and the constructor's arguments
    beyond the task's sizes (``Task.model_args``)."""

    task: Task
    batch: int
    model: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str
    constructor: Callable[..., nn.Module]
    full: Size
    quick: Size

    def size(self, quick: bool) -> Size:
        return self.quick if quick else self.full

    def create(self, quick: bool = False) -> nn.Module:
        """The constructor gets the task's sizes it takes (a ViT takes the image size, a CNN does not)."""
        size = self.size(quick)
        takes = inspect.signature(self.constructor).parameters
        return self.constructor(**{k: v for k, v in size.task.model_args().items() if k in takes}, **size.model)


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    if arch.name in _REGISTRY:
        raise ValueError(f"architecture {arch.name!r} registered twice")
    _REGISTRY[arch.name] = arch
    return arch


def _load() -> dict[str, Architecture]:
    for family in FAMILIES:
        importlib.import_module(f"dcx.models.{family}")
    return _REGISTRY


def architecture_names() -> list[str]:
    """In ``FAMILIES`` order (a family may have been imported, and registered, before the others)."""
    registry = _load()
    return sorted(registry, key=lambda n: FAMILIES.index(registry[n].constructor.__module__.rsplit(".", 1)[1]))


def get_architecture(name: str) -> Architecture:
    registry = _load()
    if name not in registry:
        raise DcxError(f"unknown architecture {name!r}: choose from {', '.join(registry)}")
    return registry[name]


def create(name: str, quick: bool = False) -> nn.Module:
    """The architecture ``name`` at its real size, or at its CI size with ``quick``."""
    return get_architecture(name).create(quick)

"""What a method brings to a simulation: its recipe config for N devices, programs, roles and baselines.

One ``Method`` per method file (``dcccl.py``, ``iciia.py``, ``coda.py``); the
simulation driver and the engines find them here by name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from dcx.errors import DcxError
from dcx.simulate.programs import ProgramPackage
from dcx.simulate.roles import CloudRole, DeviceRole, DeviceSpec

Progress = Callable[[str], None]


@dataclass
class Setup:
    """The cloud side of one simulation, as the driver built it."""

    recipe: Any
    modules: dict[str, nn.Module]  # the trained cloud-phase modules (from the checkpoint)
    seed: int
    devices: int
    rounds: int
    packages: dict[str, ProgramPackage]  # the device programs, exported for the device runtime
    progress: Progress
    measure: bool = True  # measure the method's metric every round (benchmarks turn it off)
    reported: list[list[int]] = field(default_factory=list)  # per finished round, the devices whose reply counted


@dataclass(frozen=True)
class Method:
    name: str  # the method and its recipe
    rounds: tuple[int, int]  # default rounds (full, quick)
    devices: tuple[int, int]  # default devices (full, quick)
    overrides: Callable[[int], dict[str, Any]]  # recipe config fields that depend on the number of devices
    check_devices: Callable[[Any, int], None]  # a one-line error when the data cannot make that many devices
    programs: Callable[[Setup], list]  # the device programs to export
    cloud_role: Callable[[Setup], CloudRole]
    device_role: Callable[[DeviceSpec], DeviceRole]
    baselines: Callable[[Setup], dict[str, float]]  # what it is judged against (eager PyTorch), after the rounds
    headline: str  # the metric plotted per round
    derived: Callable[[dict[str, float]], dict[str, float]] = lambda summary: {}  # e.g. the share of a gap closed
    verdict: Callable[[dict[str, float]], str] = lambda summary: ""  # the claim against the numbers, in words


METHOD_NAMES = ("dcccl", "iciia", "coda")


def get_method(name: str) -> Method:
    """The method ``name`` (its file is imported on first use: it brings the recipe and torch)."""
    if name not in METHOD_NAMES:
        raise DcxError(f"unknown method {name!r}: choose one of {', '.join(METHOD_NAMES)}")
    return importlib.import_module(f"dcx.simulate.{name}").METHOD

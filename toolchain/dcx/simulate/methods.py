"""What a method brings to a simulation: its recipe config for N devices, programs, roles and baselines.

Each method folder defines one ``Method`` (``dcx/methods/<name>/simulation.py``) and registers it here; the
simulation driver and the engines (a Flower client process too) find it by name, the method folders being found
through the ``dcx.methods`` entry points (``dcx.plugins``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from dcx.errors import DcxError
from dcx.simulate.programs import ProgramPackage
from dcx.simulate.roles import CloudRole, DeviceRole, DeviceSpec
from dcx.progress import Progress



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
    # (method, devices, quick, seed, --checkpoint or None, scratch folder, progress) -> (recipe, trained modules,
    # the checkpoint given, if any): dcx.methods.checkpoint.simulation_cloud_phase
    cloud_phase: Callable[..., tuple[Any, dict[str, nn.Module], str | None]]
    derived: Callable[[dict[str, float]], dict[str, float]] = lambda summary: {}  # e.g. the share of a gap closed
    verdict: Callable[[dict[str, float]], str] = lambda summary: ""  # the claim against the numbers, in words



_SIMULATIONS: dict[str, Method] = {}


def register_simulation(method: Method) -> Method:
    _SIMULATIONS[method.name] = method
    return method


def method_names() -> list[str]:
    """Every method that can be simulated."""
    from dcx.plugins import load_plugins

    load_plugins("dcx.methods")
    return list(_SIMULATIONS)


def get_method(name: str) -> Method:
    if name not in method_names():
        raise DcxError(f"unknown method {name!r}: choose one of {', '.join(_SIMULATIONS)}")
    return _SIMULATIONS[name]

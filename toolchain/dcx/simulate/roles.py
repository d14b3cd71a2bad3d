"""The two roles of a simulation, Flower-style: the cloud configures and aggregates, devices run their steps.

A round is a fixed sequence of *exchanges* (``CloudRole.exchanges``): in each,
the cloud sends a ``Message`` to some devices, each device runs its step on its
own data and may reply with one, and the cloud aggregates what came back in
time. Engines only move bytes between the roles; the roles never know which
engine runs them.

A device's persistent storage between exchanges is a ``Message`` too (its
``state``: the programs it holds, its cache, ...), so an engine can keep it
wherever its devices live (a dict in process, Flower's per-node context).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from dcx.simulate.messages import Message, Reply


@dataclass(frozen=True)
class DeviceSpec:
    """Everything a device needs besides its messages: picklable, so Flower can ship it to its workers."""

    method: str
    config: Any  # the recipe's frozen config
    seed: int
    devices: int
    rounds: int
    runtime: str  # executorch | tflite | torch
    store: str  # the folder where devices store the programs they receive


class DeviceRole(Protocol):
    def handle(self, device: int, round_no: int, down: Message,
               state: Message) -> tuple[Message | None, dict[str, float]]:
        """Run the device's step for ``down``; update ``state`` in place; return the uplink (None: nothing is
        sent) and the simulator's held-out measurements."""


class CloudRole(Protocol):
    exchanges: tuple[str, ...]  # the exchanges of one round, in order

    def configure(self, round_no: int, exchange: str, devices: list[int]) -> dict[int, Message]:
        """The downlink of each device asked in this exchange (a subset of ``devices``)."""

    def aggregate(self, round_no: int, exchange: str, on_time: dict[int, Reply],
                  late: dict[int, Reply]) -> dict[str, float]:
        """Use the replies that arrived in time; ``late`` ones arrived after the deadline. Returns metrics."""

    def summary(self) -> dict[str, float]:
        """The method's result after the last finished round."""


class LatestReports(dict):
    """Each device's latest report, by device: what a cloud's summary of held-out measurements comes from."""

    def add(self, on_time: dict[int, Reply]) -> None:
        self.update({k: r.report for k, r in on_time.items()})

    def rows(self) -> list[dict[str, float]]:
        return [r for _, r in sorted(self.items())]


def derive_seed(*parts: int) -> int:
    """One seed from several (e.g. the run's seed, a round, a device): the same in every process."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


@lru_cache(maxsize=4)
def device_role(spec: DeviceSpec) -> DeviceRole:
    """The device role of ``spec.method``, built once per process (it caches the devices' data)."""
    from dcx.simulate.methods import get_method

    return get_method(spec.method).device_role(spec)

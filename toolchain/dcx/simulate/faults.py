"""Devices that vanish mid-round and stragglers past the deadline, decided by a seeded plan.

Each (round, exchange, device) gets one fate from its own seeded draw, so every
engine, in any process and in any order, makes the same choices:

- ``reported``: the reply arrives before the deadline and is used;
- ``vanished``: the device got the downlink, then disappeared: it never runs
  the step and nothing comes back;
- ``late``: the device ran the step and replied after the deadline: the bytes
  arrived and are counted, the content is ignored.

The deadline is a simulated clock, not wall time, so a run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcx.errors import DcxError

REPORTED, VANISHED, LATE = "reported", "vanished", "late"


@dataclass(frozen=True)
class FaultPlan:
    dropout: float = 0.0  # probability that a device vanishes in an exchange
    stragglers: float = 0.0  # probability that a device that did not vanish replies after the deadline
    seed: int = 0

    def __post_init__(self) -> None:
        for flag, p in (("--dropout", self.dropout), ("--stragglers", self.stragglers)):
            if not 0.0 <= p < 1.0:
                raise DcxError(f"{flag} {p}: a probability in [0, 1) (1 would leave no device to report)")

    def fate(self, round_no: int, exchange: int, device: int) -> str:
        if not (self.dropout or self.stragglers):
            return REPORTED
        u, v = np.random.default_rng([self.seed, round_no, exchange, device]).random(2)
        return VANISHED if u < self.dropout else LATE if v < self.stragglers else REPORTED

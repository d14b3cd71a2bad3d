"""Devices that vanish mid-round and devices that are slow, decided by a seeded plan.

Every draw is seeded by the run's seed and what it is about, so every engine,
in any process and in any order, makes the same choices:

- a device *vanishes* in an exchange with probability ``dropout``: it got the
  downlink, then disappeared; it never runs the step and nothing comes back;
- a device's *speed* is fixed for the run: a share ``stragglers`` of the
  devices are slow phones (``SLOW_SPEED``: 4 to 8 times slower than the
  nominal phone), the others vary around it (``NORMAL_SPEED``); both
  log-uniform. The speed scales the device's step time on the virtual clock
  (``clock.py``), and that clock, against the deadline, decides who is late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dcx.errors import DcxError

REPORTED, VANISHED, LATE = "reported", "vanished", "late"
NORMAL_SPEED = (2 ** -0.5, 2 ** 0.5)  # the nominal phone is 1.0; phones of one class vary by about 2x
SLOW_SPEED = (1 / 8, 1 / 4)  # a slow phone: an old or busy one, or one in power saving
SPEED_DRAW = 1  # tells the speed draws apart from the per-exchange vanish draws


@dataclass(frozen=True)
class FaultPlan:
    dropout: float = 0.0  # probability that a device vanishes in an exchange
    stragglers: float = 0.0  # share of slow devices (SLOW_SPEED)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise DcxError(f"--dropout {self.dropout}: a probability in [0, 1) (1 would leave no device to report)")
        if not 0.0 <= self.stragglers <= 1.0:
            raise DcxError(f"--stragglers {self.stragglers}: the share of slow devices; choose a number in [0, 1]")

    def vanishes(self, round_no: int, exchange: int, device: int) -> bool:
        if not self.dropout:
            return False
        return bool(np.random.default_rng([self.seed, round_no, exchange, device]).random() < self.dropout)

    def speed(self, device: int) -> float:
        """The device's speed relative to the nominal phone (its step time is the measured one divided by it)."""
        slow, where = np.random.default_rng([self.seed, device, SPEED_DRAW]).random(2)
        low, high = SLOW_SPEED if slow < self.stragglers else NORMAL_SPEED
        return float(math.exp(math.log(low) + where * (math.log(high) - math.log(low))))

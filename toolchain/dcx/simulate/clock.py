"""The virtual clock: how long each device's step takes, and the deadline past which the cloud stops waiting.

- *Step time*: before the rounds, each device program is loaded from its
  exported artifact in the device runtime, on this host, single-threaded, and
  one step (a training step, or one inference) is timed: the median of
  ``TIMED_STEPS`` steps on the program's example inputs after
  ``WARMUP_STEPS``. That is the nominal phone's step time.
- *A device's time* in an exchange: the steps its programs ran there (counted
  as it runs them, ``programs.StepCount``) times their step times, divided by
  its speed (``FaultPlan.speed``). Only program steps take time on this clock:
  transfers do not (their bytes are counted, not timed), nor does work done
  outside a program (CoDA's coarse query).
- *Deadline*: the cloud waits ``deadline`` seconds per exchange; by default
  ``SLACK`` times the longest nominal-speed work among the devices that ran
  (every nominal-class phone makes it; a slow one with a large share of the
  work does not). A device whose time is past the deadline is late: its reply
  is not aggregated. The exchange lasts until the deadline if any device is
  late or vanished (the cloud waits for it in vain), else until the last reply.

The devices still run their whole step (that is how their work is known); only
the clock decides what counts as arrived, so a run is reproducible and, with
the default deadline, the same on every host.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from dcx.errors import DcxError
from dcx.programs import DeviceProgram
from dcx.simulate.programs import ProgramPackage, open_program

SLACK = 2.0
WARMUP_STEPS, TIMED_STEPS = 2, 9


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and not (math.isfinite(deadline) and deadline > 0):
        raise DcxError(f"--deadline {deadline}: seconds on the virtual clock, a number > 0 (or leave it out: "
                       f"{SLACK:g}x the longest device work at nominal speed)")


def measure_step_seconds(programs: Sequence[DeviceProgram], packages: Mapping[str, ProgramPackage],
                         runtime: str) -> dict[str, float]:
    """Each program's step time in seconds: its artifact, as the devices get it, run in ``runtime`` on this host."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="dcx-step-time-") as scratch:
        for program in programs:
            package = packages[program.name]
            path = Path(scratch) / program.name
            path.write_bytes(package.artifact)
            session = open_program(program.name, path, json.loads(package.entry), runtime).session
            step = session.train_step if program.kind == "train" else session.run
            inputs = [t.numpy() for t in program.example_inputs]
            times = []
            for _ in range(WARMUP_STEPS + TIMED_STEPS):
                start = time.perf_counter()
                step(*inputs)
                times.append(time.perf_counter() - start)
            out[program.name] = statistics.median(times[WARMUP_STEPS:])
    return out


@dataclass(frozen=True)
class Closing:
    """One exchange on the virtual clock."""

    deadline: float  # seconds the cloud waited at most
    finished: dict[int, float]  # each device that ran: when its reply arrived (seconds after the downlink)
    late: frozenset[int]  # the devices past the deadline: their replies are not aggregated
    duration: float  # when the cloud closed the exchange


@dataclass(frozen=True)
class Clock:
    step_seconds: dict[str, float]  # program name -> the nominal phone's step time
    deadline: float | None = None  # seconds per exchange; None: SLACK x the longest nominal work

    def __post_init__(self) -> None:
        check_deadline(self.deadline)

    def nominal(self, steps: Mapping[str, int]) -> float:
        """Seconds the nominal phone takes for ``steps`` (program name -> steps run)."""
        return sum(n * self.step_seconds[name] for name, n in steps.items())

    def close(self, steps: Mapping[int, Mapping[str, int]], speeds: Mapping[int, float], vanished: bool) -> Closing:
        """The exchange in which each device that ran made ``steps[device]``; ``vanished``: some device never
        replied."""
        work = {k: self.nominal(s) for k, s in steps.items()}
        deadline = SLACK * max(work.values(), default=0.0) if self.deadline is None else self.deadline
        finished = {k: w / speeds[k] for k, w in work.items()}
        late = frozenset(k for k, t in finished.items() if t > deadline)
        duration = deadline if late or vanished else max(finished.values(), default=0.0)
        return Closing(deadline, finished, late, duration)

"""Engines move the roles' messages; one round loop, here, drives every engine.

- ``local``: every device in this process, one after another; each downlink
  and uplink is serialized and deserialized on the way, as on a wire.
- ``flower``: the same roles as a Flower ``ServerApp`` (this round loop) and
  ``ClientApp`` (the device role) on Flower's simulation engine with its Ray
  backend, so a fleet runs on a real distributed engine. There each message
  also crosses as a Flower message, whose serialized size is measured too.

Whatever the engine, each dcx payload's size is ``len(message.encode())``, per
device, per direction and per round; the seeded fault plan decides who
vanishes and how fast each device is, and the virtual clock (``clock.py``)
who is past the deadline, so the same seed gives the same run on both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from dcx.errors import DcxError
from dcx.simulate.clock import Clock
from dcx.simulate.faults import LATE, REPORTED, VANISHED, FaultPlan
from dcx.simulate.messages import Message, Reply
from dcx.simulate.roles import CloudRole, DeviceSpec

ENGINES = ("local", "flower")
OnRound = Callable[[dict], None]
Tap = Callable[[str, int, str, int, Message], None]  # (direction, round, exchange, device, message) of each message


@dataclass
class Outcome:
    """What came of one device's downlink in one exchange, as the engine saw it."""

    vanished: bool  # the device got the downlink and never ran its step
    up: Message | None = None  # the uplink; None: nothing sent
    report: dict[str, float] = field(default_factory=dict)  # the simulator's held-out measurements
    steps: dict[str, int] = field(default_factory=dict)  # program name -> steps run: the device's work
    flower_down: int | None = None  # bytes of the Flower message that carried the downlink (flower engine)
    flower_up: int | None = None  # bytes of the Flower reply, without the simulator's records (flower engine)


class Transport(Protocol):
    measures_flower: bool  # whether outcomes carry Flower message sizes

    def exchange(self, round_no: int, index: int, downlinks: dict[int, Message]) -> dict[int, Outcome]:
        """Deliver each device's downlink and run its step (not for a device that vanishes); one outcome per
        device."""


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise DcxError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")


def run_rounds(cloud: CloudRole, transport: Transport, plan: FaultPlan, clock: Clock, rounds: int, devices: int,
               on_round: OnRound, tap: Tap | None = None) -> None:
    """``rounds`` rounds of the cloud's exchanges with every device; ``on_round`` gets each finished round and
    ``tap`` every message that crossed (to audit payloads)."""
    speeds = {k: plan.speed(k) for k in range(devices)}
    flower = ("flower_bytes_down", "flower_bytes_up") if transport.measures_flower else ()
    for r in range(1, rounds + 1):
        start = time.perf_counter()
        rows = {k: {"device": k, "status": REPORTED, "speed": round(speeds[k], 4), "steps": 0, "virtual_s": 0.0,
                    "bytes_down": 0, "bytes_up": 0, **dict.fromkeys(flower, 0)} for k in range(devices)}
        active, metrics, deadline, virtual = list(range(devices)), {}, 0.0, 0.0
        for index, exchange in enumerate(cloud.exchanges):
            downlinks = cloud.configure(r, exchange, active)
            for k, message in downlinks.items():
                rows[k]["bytes_down"] += len(message.encode())
                if tap:
                    tap("down", r, exchange, k, message)
            outcomes = transport.exchange(r, index, downlinks)
            ran = {k: o for k, o in outcomes.items() if not o.vanished}
            closing = clock.close({k: o.steps for k, o in ran.items()}, speeds, len(ran) < len(downlinks))
            on_time, late = {}, {}
            for k in sorted(downlinks):
                o, row = outcomes[k], rows[k]
                if flower:
                    row["flower_bytes_down"] += o.flower_down
                    row["flower_bytes_up"] += o.flower_up or 0
                if o.vanished:
                    row["status"] = VANISHED
                    continue
                reply = Reply(o.up, o.report, 0 if o.up is None else len(o.up.encode()))
                if tap and o.up is not None:
                    tap("up", r, exchange, k, o.up)
                row["bytes_up"] += reply.bytes_up
                row["steps"] += sum(o.steps.values())
                row["virtual_s"] = round(row["virtual_s"] + closing.finished[k], 6)
                if k in closing.late:
                    row["status"] = LATE
                    late[k] = reply
                else:
                    on_time[k] = reply
            deadline, virtual = max(deadline, closing.deadline), virtual + closing.duration
            metrics.update(cloud.aggregate(r, exchange, on_time, late))
            active = sorted(on_time)
        table = list(rows.values())
        on_round({
            "round": r, "devices_asked": devices, "devices_reported": len(active),
            "devices_vanished": sum(row["status"] == VANISHED for row in table),
            "devices_late": sum(row["status"] == LATE for row in table),
            "deadline_s": round(deadline, 6), "virtual_s": round(virtual, 6),
            **{key: sum(row[key] for row in table) for key in ("bytes_down", "bytes_up", *flower)},
            "seconds": round(time.perf_counter() - start, 3), "metrics": metrics, "devices": table})


def run(engine: str, cloud: CloudRole, spec: DeviceSpec, plan: FaultPlan, clock: Clock, on_round: OnRound,
        workers: int | None = None, tap: Tap | None = None) -> None:
    """Run ``spec.rounds`` rounds of ``cloud`` with ``spec.devices`` devices on ``engine``."""
    check_engine(engine)
    if engine == "local":
        from dcx.simulate.engines.local import LocalTransport

        run_rounds(cloud, LocalTransport(spec, plan), plan, clock, spec.rounds, spec.devices, on_round, tap)
    else:
        from dcx.simulate.engines.flower import run_flower

        run_flower(cloud, spec, plan, clock, on_round, workers, tap)

"""Engines move the roles' messages; one round loop, here, drives every engine.

- ``local``: every device in this process, one after another; each downlink
  and uplink is serialized and deserialized on the way, as on a wire.
- ``flower``: the same roles as a Flower ``ServerApp`` (this round loop) and
  ``ClientApp`` (the device role) on Flower's simulation engine with its Ray
  backend, so a fleet runs on a real distributed engine.

Whatever the engine, each message's size is ``len(message.encode())``, per
device, per direction and per round, and the seeded fault plan decides who
vanishes and who is late, so the same seed gives the same run on both.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from dcx.errors import DcxError
from dcx.simulate.faults import LATE, REPORTED, VANISHED, FaultPlan
from dcx.simulate.messages import Message, Reply
from dcx.simulate.roles import CloudRole, DeviceSpec

ENGINES = ("local", "flower")
Outcome = tuple[Message | None, dict[str, float]]  # a device's uplink (None: nothing sent) and its report
OnRound = Callable[[dict], None]
Tap = Callable[[str, int, str, int, Message], None]  # (direction, round, exchange, device, message) of each message


class Transport(Protocol):
    def exchange(self, round_no: int, index: int, downlinks: dict[int, Message]) -> dict[int, Outcome]:
        """Deliver each device's downlink and run its step; a device whose fate is ``vanished`` does not run and
        is absent from the result."""


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise DcxError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")


def run_rounds(cloud: CloudRole, transport: Transport, plan: FaultPlan, rounds: int, devices: int,
               on_round: OnRound, tap: Tap | None = None) -> None:
    """``rounds`` rounds of the cloud's exchanges with every device; ``on_round`` gets each finished round and
    ``tap`` every message that crossed (to audit payloads)."""
    for r in range(1, rounds + 1):
        start = time.perf_counter()
        rows = {k: {"device": k, "status": REPORTED, "bytes_down": 0, "bytes_up": 0} for k in range(devices)}
        active, metrics = list(range(devices)), {}
        for index, exchange in enumerate(cloud.exchanges):
            downlinks = cloud.configure(r, exchange, active)
            for k, message in downlinks.items():
                rows[k]["bytes_down"] += len(message.encode())
                if tap:
                    tap("down", r, exchange, k, message)
            outcomes = transport.exchange(r, index, downlinks)
            on_time, late = {}, {}
            for k in sorted(downlinks):
                if k not in outcomes:
                    rows[k]["status"] = VANISHED
                    continue
                up, report = outcomes[k]
                reply = Reply(up, report, 0 if up is None else len(up.encode()))
                if tap and up is not None:
                    tap("up", r, exchange, k, up)
                rows[k]["bytes_up"] += reply.bytes_up
                if plan.fate(r, index, k) == LATE:
                    rows[k]["status"] = LATE
                    late[k] = reply
                else:
                    on_time[k] = reply
            metrics.update(cloud.aggregate(r, exchange, on_time, late))
            active = sorted(on_time)
        table = list(rows.values())
        on_round({
            "round": r, "devices_asked": devices, "devices_reported": len(active),
            "devices_vanished": sum(row["status"] == VANISHED for row in table),
            "devices_late": sum(row["status"] == LATE for row in table),
            "bytes_down": sum(row["bytes_down"] for row in table), "bytes_up": sum(row["bytes_up"] for row in table),
            "seconds": round(time.perf_counter() - start, 3), "metrics": metrics, "devices": table})


def run(engine: str, cloud: CloudRole, spec: DeviceSpec, plan: FaultPlan, on_round: OnRound,
        workers: int | None = None, tap: Tap | None = None) -> None:
    """Run ``spec.rounds`` rounds of ``cloud`` with ``spec.devices`` devices on ``engine``."""
    check_engine(engine)
    if engine == "local":
        from dcx.simulate.engines.local import LocalTransport

        run_rounds(cloud, LocalTransport(spec, plan), plan, spec.rounds, spec.devices, on_round, tap)
    else:
        from dcx.simulate.engines.flower import run_flower

        run_flower(cloud, spec, plan, on_round, workers, tap)

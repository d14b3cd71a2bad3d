"""The local engine: every device in this process; messages serialized and deserialized on the way."""

from __future__ import annotations

from collections import defaultdict

from dcx.simulate.engines import Outcome
from dcx.simulate.faults import FaultPlan
from dcx.simulate.messages import Message
from dcx.simulate.programs import StepCount
from dcx.simulate.roles import DeviceSpec, device_role


class LocalTransport:
    measures_flower = False

    def __init__(self, spec: DeviceSpec, plan: FaultPlan):
        self.role, self.plan = device_role(spec), plan
        self.states: dict[int, Message] = defaultdict(lambda: Message("state"))  # each device's storage

    def exchange(self, round_no: int, index: int, downlinks: dict[int, Message]) -> dict[int, Outcome]:
        out = {}
        for k, down in sorted(downlinks.items()):
            if self.plan.vanishes(round_no, index, k):
                out[k] = Outcome(vanished=True)
                continue
            with StepCount() as count:
                up, report = self.role.handle(k, round_no, Message.decode(down.encode()), self.states[k])
            out[k] = Outcome(False, None if up is None else Message.decode(up.encode()), report, count.steps)
        return out

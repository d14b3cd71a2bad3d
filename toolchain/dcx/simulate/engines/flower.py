"""The Flower engine: the round loop as a ``ServerApp``, the device role as a ``ClientApp``, on Flower's
simulation engine with its Ray backend.

A dcx ``Message`` crosses as Flower records: its arrays as an ``ArrayRecord``,
its metrics as a ``MetricRecord``, its kind and the routing (device, round,
exchange) as a ``ConfigRecord``; the conversion is lossless, so the dcx payload
is counted as ``len(message.encode())`` exactly as on the local engine. Beside
it, each Flower message that crosses is measured (``wire_bytes``): the
downlink as the ServerApp pushes it, the reply as it pulls it, less the
simulator's own records (the device's held-out ``report`` and its ``steps``,
which a phone would not send). Device k is the k-th supernode by node id; its
storage between exchanges (the device state) lives in Flower's per-node
``Context.state``. A device that vanishes is a ``ClientApp`` mod that answers
with an error instead of running the step; that error is not counted.

Ray runs ``workers`` actors (one CPU each) and is shut down before this
returns, whatever happens. Ctrl-C stops the rounds at once; the finished
ones were already handed to ``on_round``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from functools import partial

import numpy as np

from dcx.errors import DcxError
from dcx.simulate.clock import Clock
from dcx.simulate.engines import OnRound, Outcome, Tap, run_rounds
from dcx.simulate.faults import FaultPlan
from dcx.simulate.messages import Message
from dcx.simulate.programs import StepCount
from dcx.simulate.roles import CloudRole, DeviceSpec, device_role

VANISHED_CODE = 4100  # a Flower error code outside Flower's own: the simulated device vanished
ACTION = "train.dcx"
REPORT, STEPS = "report", "steps"  # the simulator's records in a reply: never counted as sent


class _Stopped(Exception):
    """Ctrl-C reached the ServerApp's loop."""


def to_records(message: Message, **route: int):
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    return RecordDict({"arrays": ArrayRecord({k: Array(np.asarray(v, order="C")) for k, v in message.arrays.items()}),
                       "metrics": MetricRecord(dict(message.metrics)),
                       "meta": ConfigRecord({"kind": message.kind, **route})})


def from_records(records) -> Message:
    return Message(str(records["meta"]["kind"]), {k: a.numpy() for k, a in records["arrays"].items()},
                   {k: float(v) for k, v in records["metrics"].items()})


def wire_bytes(message) -> int:
    """A Flower message's size as flwr 1.41 sends it between SuperLink and SuperNode (``Grid.push_messages`` of
    its Deployment Engine): the message's protobuf without its content, its object tree, and every object of
    the tree deflated once (the message, its ``RecordDict``, each record, each ``Array`` and ``ArrayChunk``),
    each with its header of type, children's SHA-256 ids and body length. gRPC framing is not counted."""
    from flwr.app.message.message import remove_content_from_message
    from flwr.common.serde import message_to_proto
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree

    return (message_to_proto(remove_content_from_message(message)).ByteSize() + get_object_tree(message).ByteSize()
            + sum(len(o.deflate()) for o in get_all_nested_objects(message).values()))


def _vanish(plan: FaultPlan, message, context, call_next):
    """Flower mod: a device that vanishes in this exchange does not run its step; the error reply stands for
    the reply that never comes."""
    from flwr.app import Error, Message as FlowerMessage

    meta = message.content["meta"]
    if plan.vanishes(int(meta["round"]), int(meta["exchange"]), int(meta["device"])):
        return FlowerMessage(Error(code=VANISHED_CODE, reason="vanished"), reply_to=message)
    return call_next(message, context)


def _device_step(spec: DeviceSpec, message, context):
    """The ClientApp's handler: the device role on the message, its state kept in the node's context."""
    import torch
    from flwr.app import Message as FlowerMessage, MetricRecord, RecordDict

    torch.set_num_threads(1)
    meta = message.content["meta"]
    state = from_records(context.state) if "meta" in context.state else Message("state")
    with StepCount() as count:
        up, report = device_role(spec).handle(int(meta["device"]), int(meta["round"]),
                                              from_records(message.content), state)
    for key, record in to_records(state).items():
        context.state[key] = record
    content = to_records(up) if up is not None else RecordDict()
    content[REPORT], content[STEPS] = MetricRecord(dict(report)), MetricRecord(count.steps)
    return FlowerMessage(content, reply_to=message)


def client_app(spec: DeviceSpec, plan: FaultPlan):
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=[partial(_vanish, plan)])
    app.train("dcx")(partial(_device_step, spec))
    return app


class FlowerTransport:
    """Pushes a round's downlinks to the supernodes and pulls the replies through Flower's ``Grid``."""

    measures_flower = True

    def __init__(self, grid, devices: int, stop: threading.Event, poll: float = 0.02):
        self.grid, self.stop, self.poll = grid, stop, poll
        while len(nodes := sorted(grid.get_node_ids())) < devices:
            if stop.is_set():
                raise _Stopped()
            time.sleep(poll)
        self.nodes = nodes[:devices]

    def exchange(self, round_no: int, index: int, downlinks: dict[int, Message]) -> dict[int, Outcome]:
        from flwr.app import Message as FlowerMessage

        devices = sorted(downlinks)
        messages = [FlowerMessage(to_records(downlinks[k], device=k, round=round_no, exchange=index),
                                  dst_node_id=self.nodes[k], message_type=ACTION, group_id=str(round_no))
                    for k in devices]
        sent = {k: wire_bytes(m) for k, m in zip(devices, messages)}  # before the engine stamps its delivery
        ids = list(self.grid.push_messages(messages))
        device_of = dict(zip(ids, devices))
        waiting, out = set(ids), {}
        while waiting:
            if self.stop.is_set():
                raise _Stopped()
            for reply in self.grid.pull_messages(waiting):
                source = reply.metadata.reply_to_message_id
                waiting.discard(source)
                k = device_of[source]
                if reply.has_error():
                    if reply.error.code != VANISHED_CODE:
                        raise RuntimeError(f"device {k} failed in Flower: {reply.error.reason}")
                    out[k] = Outcome(vanished=True, flower_down=sent[k])
                    continue
                report, steps = reply.content.pop(REPORT), reply.content.pop(STEPS)
                up = from_records(reply.content) if "meta" in reply.content else None
                out[k] = Outcome(False, up, {n: float(v) for n, v in report.items()},
                                 {n: int(v) for n, v in steps.items()}, sent[k], wire_bytes(reply))
            if waiting:
                time.sleep(self.poll)
        return out


def run_flower(cloud: CloudRole, spec: DeviceSpec, plan: FaultPlan, clock: Clock, on_round: OnRound,
               workers: int | None = None, tap: Tap | None = None) -> None:
    """The rounds on Flower's simulation engine (Ray backend, ``workers`` actors of one CPU each)."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    workers = workers or max(1, min(os.cpu_count() or 1, spec.devices))
    stop = threading.Event()  # the ServerApp's loop must end: Ctrl-C, or the engine ended under it
    interrupted = threading.Event()
    failure: list[BaseException] = []  # raised in the ServerApp's thread, re-raised here
    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:
        try:
            run_rounds(cloud, FlowerTransport(grid, spec.devices, stop), plan, clock, spec.rounds, spec.devices,
                       on_round, tap)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - a user error, a bug or an interrupt: the caller decides
            failure.append(e)

    ray = _start_ray(workers)
    previous = _on_ctrl_c(stop, interrupted)
    try:
        run_simulation(server_app=server, client_app=client_app(spec, plan), num_supernodes=spec.devices,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    finally:
        stop.set()  # a ServerApp thread still waiting for replies (the engine crashed) ends too
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        ray.shutdown()
    if failure:
        raise failure[0]
    if interrupted.is_set():
        raise KeyboardInterrupt


def _start_ray(workers: int):
    """Ray with ``workers`` CPUs, quiet; a failure to start is one line naming Ray and what to do."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    logging.getLogger("flwr").setLevel(logging.ERROR)
    try:
        import ray
    except ImportError:
        raise DcxError("--engine flower needs Ray: pip install 'flwr[simulation]==1.41.*' (or use --engine local)") \
            from None
    try:
        if ray.is_initialized():
            ray.shutdown()
        ray.init(num_cpus=workers, num_gpus=0, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
    except Exception as e:  # Ray raises many kinds (ConnectionError, RuntimeError, ValueError, ...)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DcxError(f"--engine flower: Ray failed to start ({reason}); check that /tmp is writable and "
                       "RAY_ADDRESS is unset, or use --engine local") from None
    return ray


def _on_ctrl_c(stop: threading.Event, interrupted: threading.Event):
    """Ctrl-C sets ``stop`` (the ServerApp loop stops waiting and ends) instead of raising inside Flower's
    threads; returns the previous handler (None off the main thread, where nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame) -> None:
        interrupted.set()
        stop.set()

    return signal.signal(signal.SIGINT, handler)

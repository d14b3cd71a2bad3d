"""DC-CCL as a system: the cloud sends M and S down, devices train S_k through the artifact, the cloud fuses.

- Down, the first time a device is asked (until it has confirmed receipt by
  replying): the training program ``dcccl.train`` with the mimic M frozen
  inside it; every round: S's weights (``S.<parameter>``).
- On the device: S's weights go into the runtime (``set_weights``), the
  program runs ``device_epochs`` epochs of SGD steps over the device's own
  samples in full batches (each epoch a seeded permutation, its last batch
  filled from the permutation's start), and S_k is read back (``get_weights``).
- Up: S_k (``S_k.<parameter>``) and the device's sample count. No image and
  no label ever goes up.
- The cloud fuses the S_k that arrived in time by FedAvg; the served model is
  ``L(x) + S(x)``, scored on each device's class mix.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from dcx.data.fashion_mnist import ImageSet
from dcx.errors import DcxError
from dcx.methods.dcccl.submodels import SummedLogits
from dcx.methods.dcccl.recipe import (DCCCLConfig, Scenario, device_update, fedavg, make_scenario, make_small,
                               make_submodels, model_input, served_accuracy, train_cloud)
from dcx.methods.checkpoint import simulation_cloud_phase
from dcx.simulate.messages import Message, Reply
from dcx.simulate.methods import Method, Setup
from dcx.simulate.programs import install, load
from dcx.simulate.roles import DeviceSpec, derive_seed

PROGRAM = "dcccl.train"
FASHION_MNIST_TRAIN = 60_000


@lru_cache(maxsize=2)
def scenario(cfg: DCCCLConfig, seed: int) -> Scenario:
    """The cloud's and the devices' samples and the devices' test sets, as the recipe makes them."""
    return make_scenario(cfg, seed)


@lru_cache(maxsize=2)
def device_samples(cfg: DCCCLConfig, seed: int) -> list[ImageSet]:
    """Each device's samples (``make_scenario`` without the per-device test sets: about a thousand test images
    per device, 3 GB at a thousand devices, in every worker)."""
    devices = make_scenario(cfg, seed, device_tests=False).devices
    empty = [k for k, d in enumerate(devices) if len(d) == 0]
    if empty:
        raise DcxError(f"--devices {cfg.num_devices}: device {empty[0]} gets no Fashion-MNIST sample under the "
                       f"Dirichlet split (alpha={cfg.alpha}); choose fewer devices")
    return devices


def check_devices(cfg: DCCCLConfig, devices: int) -> None:
    if devices + 1 > FASHION_MNIST_TRAIN:
        raise DcxError(f"--devices {devices}: more devices than Fashion-MNIST's {FASHION_MNIST_TRAIN:,} training "
                       f"samples can share with the cloud; choose at most {FASHION_MNIST_TRAIN - 1:,}")


def local_batches(data: ImageSet, cfg: DCCCLConfig, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``device_epochs`` epochs of full batches: the program's batch size is fixed, so each epoch's
    permutation wraps around to fill its last batch (a device with fewer samples than a batch repeats them)."""
    gen = torch.Generator().manual_seed(seed)
    b, n = cfg.batch_size, len(data)
    steps = math.ceil(n / b)
    batches = []
    for _ in range(cfg.device_epochs):
        order = torch.randperm(n, generator=gen)[torch.arange(steps * b) % n]
        for s in range(steps):
            idx = order[s * b : (s + 1) * b]
            batches.append((model_input(data.images[idx], cfg).numpy(), data.labels[idx].numpy()))
    return batches


class Device:
    def __init__(self, spec: DeviceSpec):
        self.spec, self.store = spec, Path(spec.store)

    def handle(self, device: int, round_no: int, down: Message, state: Message) -> tuple[Message, dict[str, float]]:
        cfg = self.spec.config
        install(down, state, self.store)
        session = load(PROGRAM, state, self.store, self.spec.runtime).session
        session.set_weights({f"small.{k}": v for k, v in down.with_prefix("S.").items()})
        data = device_samples(cfg, self.spec.seed)[device]
        losses = [session.train_step(*batch)
                  for batch in local_batches(data, cfg, derive_seed(self.spec.seed, round_no, device))]
        s_k = {f"S_k.{k.removeprefix('small.')}": v for k, v in session.get_weights().items()}
        return Message("update", s_k, {"samples": float(len(data)), "loss": float(np.mean(losses))}), {}


def served(large: torch.nn.Module, small: torch.nn.Module, sc: Scenario, cfg: DCCCLConfig) -> float:
    """``L + S`` on each device's class mix, averaged over devices."""
    return float(np.mean([served_accuracy(SummedLogits(large, small), t, cfg) for t in sc.device_tests]))


class Cloud:
    exchanges = ("train",)

    def __init__(self, setup: Setup):
        self.setup, self.cfg = setup, setup.recipe.cfg
        device_samples(self.cfg, setup.seed)  # one line, now, if a device would have no sample
        self.sc = scenario(self.cfg, setup.seed) if setup.measure else None
        self.large, self.small = setup.modules["large"], copy.deepcopy(setup.modules["small"])
        self.package = setup.packages[PROGRAM]
        self.has_program: set[int] = set()
        self.accuracy: float | None = None

    def configure(self, round_no: int, exchange: str, devices: list[int]) -> dict[int, Message]:
        s = {f"S.{k}": v.detach().numpy().copy() for k, v in self.small.state_dict().items()}
        return {k: Message("train", {**s, **({} if k in self.has_program else self.package.arrays())},
                           {"round": float(round_no)}) for k in devices}

    def aggregate(self, round_no: int, exchange: str, on_time: dict[int, Reply],
                  late: dict[int, Reply]) -> dict[str, float]:
        self.has_program |= set(on_time) | set(late)
        metrics: dict[str, float] = {}
        if on_time:
            replies = [on_time[k].message for k in sorted(on_time)]
            states = [{k: torch.from_numpy(v) for k, v in m.with_prefix("S_k.").items()} for m in replies]
            self.small.load_state_dict(fedavg(states, [int(m.metrics["samples"]) for m in replies]))
            metrics["device_loss"] = float(np.mean([m.metrics["loss"] for m in replies]))
        if self.setup.measure:
            self.accuracy = metrics["acc_dcccl"] = served(self.large, self.small, self.sc, self.cfg)
        return metrics

    def summary(self) -> dict[str, float]:
        return {} if self.accuracy is None else {"acc_dcccl": self.accuracy}


def baselines(setup: Setup) -> dict[str, float]:
    """Cloud-only ``L + S``; device-only S (from scratch, the device's samples alone); FedAvg of S trained
    without the mimic over the rounds that ran, with the devices that reported in each (uncontrolled); and the
    upper bound, ``L + S`` trained centrally on every raw sample. The recipe's own functions, in eager PyTorch."""
    cfg, seed = setup.recipe.cfg, setup.seed
    sc = scenario(cfg, seed)
    large, small, mimic = setup.modules["large"], setup.modules["small"], setup.modules["mimic"]
    tests = sc.device_tests
    setup.progress("baselines: device-only S on each device")
    fresh = make_small(cfg, seed + 1)
    device_only = [served_accuracy(device_update(mimic, fresh, d, cfg, seed + k, controlled=False), t, cfg)
                   for k, (d, t) in enumerate(zip(sc.devices, tests))]
    setup.progress(f"baselines: uncontrolled FedAvg, {len(setup.reported)} rounds")
    uncontrolled = copy.deepcopy(small)
    for r, ks in enumerate(setup.reported, start=1):
        if ks:
            updates = [device_update(mimic, uncontrolled, sc.devices[k], cfg, derive_seed(seed, r, k),
                                     controlled=False).state_dict() for k in ks]
            uncontrolled.load_state_dict(fedavg(updates, [len(sc.devices[k]) for k in ks]))
    setup.progress("baselines: L + S trained centrally on every raw sample")
    central_large, central_small = make_submodels(cfg, seed)
    everything = ImageSet(torch.cat([sc.cloud.images, *(d.images for d in sc.devices)]),
                          torch.cat([sc.cloud.labels, *(d.labels for d in sc.devices)]))
    train_cloud(central_large, central_small, everything, cfg, seed)
    return {"acc_cloud_only": served(large, small, sc, cfg), "acc_device_only": float(np.mean(device_only)),
            "acc_uncontrolled": served(large, uncontrolled, sc, cfg),
            "acc_central": served(central_large, central_small, sc, cfg)}


def gap_closed(summary: dict[str, float]) -> dict[str, float]:
    """The share of the accuracy gap between cloud-only and the central upper bound that DC-CCL closes."""
    if not all(k in summary for k in ("acc_dcccl", "acc_cloud_only", "acc_central")):
        return {}
    gap = summary["acc_central"] - summary["acc_cloud_only"]
    return {"gap_closed": (summary["acc_dcccl"] - summary["acc_cloud_only"]) / gap} if gap else {}


def verdict(s: dict[str, float]) -> str:
    if "gap_closed" not in s:
        return ""
    held = "reproduces" if s["gap_closed"] >= 0.5 else "does not reproduce"
    return (f"After fusion DC-CCL reaches {s['acc_dcccl']:.3f}: it closes {s['gap_closed']:.0%} of the gap between "
            f"cloud-only ({s['acc_cloud_only']:.3f}) and the central upper bound ({s['acc_central']:.3f}); the aim, "
            f"at least half, {held}. Without the mimic the same rounds reach {s['acc_uncontrolled']:.3f}. Only S_k "
            "and a sample count go up, never an image or a label.")


METHOD = Method(
    name="dcccl", rounds=(5, 3), devices=(10, 3), overrides=lambda n: {"num_devices": n},
    check_devices=check_devices,
    programs=lambda setup: [p for p in setup.recipe.device_programs(setup.seed, setup.modules) if p.name == PROGRAM],
    cloud_role=Cloud, device_role=Device, baselines=baselines, headline="acc_dcccl", derived=gap_closed,
    verdict=verdict, cloud_phase=simulation_cloud_phase)

"""ICIIA as a system: the module goes down once, each device runs it over its own image stream, nothing goes up.

- Down, the first time a device is asked (until it has confirmed receipt):
  the inference program ``iciia.infer`` (backbone + ICIIA, weights inside);
  in later rounds a control message with the round number only.
- On the device: its stream of images (a class subset of the Fashion-MNIST
  test set, as the recipe's evaluation clients), one share per round; for
  each image the program predicts with the device's feature cache, then the
  image's feature joins the cache (FIFO). The cache lives in the device's state.
- Up: nothing. Each device's accuracy on its stream is the simulator's
  measurement (its labels are held out), never a message.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from dcx.data.fashion_mnist import load_fashion_mnist
from dcx.errors import DcxError
from dcx.methods.iciia.recipe import (FeatureCache, ICIIAConfig, backbone_features, client_streams, device_images,
                               evaluate_clients, train_iciia)
from dcx.methods.checkpoint import simulation_cloud_phase
from dcx.simulate.messages import Message, Reply
from dcx.simulate.methods import Method, Setup
from dcx.simulate.programs import install, load
from dcx.simulate.roles import DeviceSpec, LatestReports

PROGRAM = "iciia.infer"
STREAM = 64  # images drawn per device stream (those outside its class subset are dropped), as in evaluate_clients
PARTITIONS = (1, 4, 16)  # the per-P baselines
FASHION_MNIST_TEST = 10_000


@lru_cache(maxsize=2)
def streams(cfg: ICIIAConfig, devices: int, seed: int) -> list[np.ndarray]:
    """Each device's stream of test-image indices: the recipe's evaluation clients for this seed."""
    return client_streams(load_fashion_mnist("test").labels.numpy(), cfg, devices, STREAM, seed + 1)


def check_devices(cfg: ICIIAConfig, devices: int) -> None:
    if cfg.device_cache != "features":
        raise DcxError(f"the checkpoint's ICIIA has device_cache={cfg.device_cache!r}; dcx simulate runs the "
                       "feature-cache program: train with the default device_cache=features")
    if devices > FASHION_MNIST_TEST:
        raise DcxError(f"--devices {devices}: more devices than Fashion-MNIST's {FASHION_MNIST_TEST:,} test images "
                       f"to stream; choose at most {FASHION_MNIST_TEST:,}")


class Device:
    def __init__(self, spec: DeviceSpec):
        self.spec, self.store = spec, Path(spec.store)
        self.test = load_fashion_mnist("test")

    def handle(self, device: int, round_no: int, down: Message, state: Message) -> tuple[None, dict[str, float]]:
        cfg, spec = self.spec.config, self.spec
        install(down, state, self.store)
        session = load(PROGRAM, state, self.store, spec.runtime).session
        stream = streams(cfg, spec.devices, spec.seed)[device]
        cache = FeatureCache(cfg.cache_size, cfg.feature_dim)
        if "cache" in state.arrays:
            cache.rows, cache.seen = torch.from_numpy(state.arrays["cache"].copy()), int(state.metrics["seen"])
        position, hits, predictions = (int(state.metrics.get(k, 0)) for k in ("position", "hits", "predictions"))
        end = math.ceil(len(stream) * round_no / spec.rounds)  # a device that missed rounds catches up
        empty = np.zeros((cfg.cache_size, cfg.feature_dim), np.float32)
        for i in stream[position:end]:
            image = device_images(self.test.images[i : i + 1], cfg).numpy()
            logits, feature = session.run(image, cache.tensor().numpy() if cache.seen else empty)
            if cache.seen:  # with an empty cache the first image only fills it
                predictions += 1
                hits += int(np.argmax(logits)) == int(self.test.labels[i])
            cache.add(torch.from_numpy(np.asarray(feature)).reshape(-1))
        state.arrays["cache"] = cache.rows.numpy()
        state.metrics.update(seen=cache.seen, position=max(position, end), hits=hits, predictions=predictions)
        return None, {"hits": float(hits), "predictions": float(predictions)}


class Cloud:
    exchanges = ("stream",)

    def __init__(self, setup: Setup):
        self.package = setup.packages[PROGRAM]
        self.has_program: set[int] = set()
        self.latest = LatestReports()

    def configure(self, round_no: int, exchange: str, devices: list[int]) -> dict[int, Message]:
        return {k: Message("stream", {} if k in self.has_program else self.package.arrays(), {"round": float(round_no)})
                for k in devices}

    def aggregate(self, round_no: int, exchange: str, on_time: dict[int, Reply],
                  late: dict[int, Reply]) -> dict[str, float]:
        self.has_program |= set(on_time) | set(late)
        self.latest.add(on_time)
        return self.summary()

    def summary(self) -> dict[str, float]:
        rows = self.latest.rows()
        return {"acc_iciia": float(np.mean([r["hits"] / max(r["predictions"], 1.0) for r in rows]))} if rows else {}


def baselines(setup: Setup) -> dict[str, float]:
    """The backbone alone and ICIIA in eager PyTorch on the same device streams, for every P in ``PARTITIONS``
    (the deployed P with the deployed module; the others trained once each, as the recipe's evaluation does)."""
    recipe, seed = setup.recipe, setup.seed
    cfg, backbone = recipe.cfg, setup.modules["backbone"]
    test = load_fashion_mnist("test")
    used = np.unique(np.concatenate(streams(cfg, setup.devices, seed)))
    features = torch.zeros(len(test), cfg.feature_dim)
    features[used] = backbone_features(backbone, test.images[used], cfg)
    data = None
    result = {}
    for p in sorted({*PARTITIONS, cfg.partitions}):
        cfg_p = replace(cfg, partitions=p)
        if p == cfg.partitions:
            module = setup.modules["iciia"]
        else:
            setup.progress(f"baselines: training ICIIA with P={p}")
            data = data if data is not None else recipe.cloud_data(seed)[0]
            module = train_iciia(backbone, data, cfg_p, seed)
        clients = evaluate_clients(backbone, module, test, cfg_p, num_clients=setup.devices, samples=STREAM,
                                   seed=seed + 1, features=features)
        result["acc_backbone"] = float(np.mean([c.backbone for c in clients]))
        result[f"acc_iciia_p{p}"] = float(np.mean([c.iciia for c in clients]))
    return result


def verdict(s: dict[str, float]) -> str:
    if "gain_points" not in s:
        return ""
    held = "reproduces" if s["gain_points"] >= 3 else "does not reproduce"
    per_p = ", ".join(f"P={p} {s[f'acc_iciia_p{p}']:.3f}" for p in PARTITIONS if f"acc_iciia_p{p}" in s)
    return (f"ICIIA run by the devices' artifact reaches {s['acc_iciia']:.3f} against {s['acc_backbone']:.3f} for "
            f"its backbone, {s['gain_points']:+.1f} points; the aim, at least 3, {held} (eager, per P: {per_p}). "
            f"Bytes up: {s['bytes_up_total']:,.0f}.")


METHOD = Method(
    name="iciia", rounds=(4, 2), devices=(50, 10), overrides=lambda n: {}, check_devices=check_devices,
    programs=lambda setup: setup.recipe.device_programs(setup.seed, setup.modules),
    cloud_role=Cloud, device_role=Device, baselines=baselines, headline="acc_iciia",
    derived=lambda s: {"gain_points": 100 * (s["acc_iciia"] - s["acc_backbone"])}
    if {"acc_iciia", "acc_backbone"} <= s.keys() else {}, verdict=verdict, cloud_phase=simulation_cloud_phase)

"""ICIIA: one-time-trained intra-client inter-image attention over a cache of recent unlabelled images.

Roles (docs/methods.md 1.2):
- cloud: trains a backbone once, then trains the ICIIA module once on
  simulated clients (a small class subset each, cache filled from that subset).
  No per-client training ever happens.
- device: keeps a cache of backbone features of its recent unlabelled images
  (FIFO or reservoir) and predicts with attention over ``[h; H]``. Nothing goes up.

Q, K, V and output projections are ``PartitionedLinear`` with feature shuffling,
which divides their parameters and FLOPs by P.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcx.data.fashion_mnist import ImageSet, as_camera_images, load_fashion_mnist
from dcx.data.partition import class_subset_clients
from dcx.errors import DcxError
from dcx.models.convnet import ConvNet
from dcx.methods.iciia.model import ICIIA, ICIIAOnDevice, ICIIAWithKVCache, MobileNetV2Features, forward_flops
from dcx.models.mobilenetv2 import mobilenet_v2_imagenet
from dcx.programs import DeviceProgram, freeze
from dcx.methods import DataUsed, Predict, TrainedModules, register_recipe, register_variant
from dcx.training import fit, predict, seed_everything


@dataclass(frozen=True)
class ICIIAConfig:
    backbone: str = "convnet"  # "convnet": trained here on 28x28 grey; "mobilenet_v2": ImageNet, frozen, RGB
    image_size: int = 28  # the device program's input size (mobilenet_v2: 224, Fashion-MNIST upsampled to it)
    device_cache: str = "features"  # "features": the app keeps raw features H; "kv": it keeps K(H) and V(H)
    channels: tuple[int, int] = (16, 32)  # convnet only
    feature_dim: int = 64  # d (mobilenet_v2: 1280)
    heads: int = 4
    partitions: int = 4  # P
    cache_size: int = 16  # n
    classes_per_client: tuple[int, int] = (2, 4)  # class-subset size, sampled in this range
    backbone_samples: int = 6000
    backbone_epochs: int = 2
    iciia_clients: int = 6000  # simulated (target, cache) training episodes
    iciia_epochs: int = 6
    iciia_lr: float = 2e-3  # Adam; the 1280-d module of mobilenet_v2 needs less (a sweep: 2e-3 diverges at P=1)
    test_clients: int = 50
    batch_size: int = 64


class ImageNetBackbone(nn.Module):
    """The ImageNet MobileNetV2, frozen, up to its 1280-d pooled feature, with a linear head for the task."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.body = MobileNetV2Features(mobilenet_v2_imagenet(num_classes))
        freeze(self.body)
        self.head = nn.Linear(1280, num_classes)
        self.num_classes = num_classes

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


def make_backbone(cfg: ICIIAConfig, num_classes: int = 10) -> nn.Module:
    if cfg.backbone == "convnet":
        if cfg.image_size != 28:
            raise DcxError(f"--set image_size={cfg.image_size}: the convnet backbone takes 28x28 images")
        return ConvNet(cfg.channels, cfg.feature_dim, num_classes)
    if cfg.backbone == "mobilenet_v2":
        if cfg.feature_dim != 1280:
            raise DcxError(f"--set feature_dim={cfg.feature_dim}: MobileNetV2's feature is 1280-d")
        if cfg.image_size < 32:
            raise DcxError(f"--set image_size={cfg.image_size}: MobileNetV2 needs at least 32x32 inputs")
        return ImageNetBackbone(num_classes)
    raise DcxError(f"--set backbone={cfg.backbone!r}: choose convnet or mobilenet_v2")


def device_images(images: torch.Tensor, cfg: ICIIAConfig) -> torch.Tensor:
    """Fashion-MNIST images as the device program takes them (RGB at ``image_size`` for ImageNet backbones)."""
    return images if cfg.backbone == "convnet" else as_camera_images(images, cfg.image_size)


def backbone_features(backbone: nn.Module, images: torch.Tensor, cfg: ICIIAConfig) -> torch.Tensor:
    """h for every image, in chunks (ImageNet backbones see the images upsampled to RGB, one chunk at a time)."""
    return predict(lambda x: backbone.features(device_images(x, cfg)), images,
                   batch_size=1024 if cfg.backbone == "convnet" else 32)


class FeatureCache:
    """The device's cache of recent unlabelled features H (n x d): FIFO or reservoir."""

    def __init__(self, size: int, dim: int, policy: str = "fifo", seed: int = 0):
        if policy not in ("fifo", "reservoir"):
            raise DcxError(f"cache policy must be 'fifo' or 'reservoir', got {policy!r}")
        self.size, self.policy = size, policy
        self.rows = torch.zeros(size, dim)
        self.seen = 0
        self._rng = np.random.default_rng(seed)

    def add(self, feature: torch.Tensor) -> None:
        slot = self.seen if self.seen < self.size else (
            self.seen % self.size if self.policy == "fifo" else int(self._rng.integers(0, self.seen + 1)))
        if slot < self.size:
            self.rows[slot] = feature.detach()
        self.seen += 1

    def tensor(self) -> torch.Tensor:
        """Always n rows: until the cache is full, the filled rows repeat (a fixed shape for the artifact)."""
        filled = min(self.seen, self.size)
        if filled == 0:
            raise DcxError("the feature cache is empty: add at least one image's feature before predicting")
        return self.rows[torch.arange(self.size) % filled]


# ---------------------------------------------------------------- cloud role (one-time training)

def train_backbone(data: ImageSet, cfg: ICIIAConfig, seed: int = 0, features: torch.Tensor | None = None) -> nn.Module:
    """The cloud's backbone: a ConvNet trained on the images, or the frozen ImageNet MobileNetV2 with a linear
    head trained on its features (``features``: precomputed h of ``data``)."""
    seed_everything(seed)
    backbone = make_backbone(cfg)
    if cfg.backbone == "convnet":
        backbone.train()
        fit(lambda x, y: F.cross_entropy(backbone(x), y), list(backbone.parameters()), (data.images, data.labels),
            epochs=cfg.backbone_epochs, batch_size=cfg.batch_size, lr=1e-3, seed=seed)
    else:
        h = features if features is not None else backbone_features(backbone, data.images, cfg)
        fit(lambda h, y: F.cross_entropy(backbone.head(h), y), list(backbone.head.parameters()), (h, data.labels),
            epochs=max(cfg.backbone_epochs, 10), batch_size=cfg.batch_size, lr=1e-3, seed=seed)
    return freeze(backbone)


def simulate_clients(features: torch.Tensor, labels: torch.Tensor, episodes: int, cfg: ICIIAConfig,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target feature, cache, target label) per episode; each episode is a client with a random class subset."""
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    by_class = [np.flatnonzero(labels_np == c) for c in range(int(labels.max()) + 1)]
    lo, hi = cfg.classes_per_client
    targets, caches = np.empty(episodes, dtype=np.int64), np.empty((episodes, cfg.cache_size), dtype=np.int64)
    for e in range(episodes):
        classes = rng.choice(len(by_class), int(rng.integers(lo, hi + 1)), replace=False)
        pool = np.concatenate([by_class[c] for c in classes])
        picks = rng.choice(pool, cfg.cache_size + 1, replace=False)
        targets[e], caches[e] = picks[0], picks[1:]
    return features[targets], features[caches], labels[targets]


def train_iciia(backbone: nn.Module, data: ImageSet, cfg: ICIIAConfig, seed: int = 0,
                features: torch.Tensor | None = None) -> ICIIA:
    """One-time cloud training on simulated class-subset clients (backbone frozen; its head initialises ICIIA's)."""
    seed_everything(seed)
    features = features if features is not None else backbone_features(backbone, data.images, cfg)
    iciia = ICIIA(cfg.feature_dim, cfg.heads, cfg.partitions, backbone.num_classes)
    iciia.classifier.load_state_dict(backbone.head.state_dict())
    for epoch in range(cfg.iciia_epochs):
        h, cache, y = simulate_clients(features, data.labels, cfg.iciia_clients, cfg, seed + 1 + epoch)
        fit(lambda h, c, y: F.cross_entropy(iciia(h, c), y), list(iciia.parameters()), (h, cache, y),
            epochs=1, batch_size=cfg.batch_size, lr=cfg.iciia_lr, seed=seed + epoch)
    return freeze(iciia)


# ---------------------------------------------------------------- evaluation

@dataclass
class ClientAccuracy:
    backbone: float
    iciia: float


def client_streams(labels: np.ndarray, cfg: ICIIAConfig, num_clients: int, samples: int,
                   seed: int) -> list[np.ndarray]:
    """Each client's stream of image indices: a class subset of size in ``classes_per_client``."""
    rng = np.random.default_rng(seed)
    lo, hi = cfg.classes_per_client
    streams = []
    for classes, idx in class_subset_clients(labels, num_clients, hi, samples, seed):
        streams.append(idx[np.isin(labels[idx], classes[: int(rng.integers(lo, hi + 1))])])
    return streams


def evaluate_clients(backbone: nn.Module, iciia: ICIIA, test: ImageSet, cfg: ICIIAConfig,
                     num_clients: int | None = None, samples: int = 64, seed: int = 1,
                     features: torch.Tensor | None = None) -> list[ClientAccuracy]:
    """Per-client accuracy: each client sees a class subset; its cache holds its other recent images.

    ``features``: precomputed h of every test image; without it, h is computed for the streams' images only."""
    labels = test.labels.numpy()
    streams = client_streams(labels, cfg, num_clients or cfg.test_clients, samples, seed)
    if features is None:
        used = np.unique(np.concatenate(streams))
        features = torch.zeros(len(test), cfg.feature_dim)
        features[used] = backbone_features(backbone, test.images[used], cfg)
    results = []
    for idx in streams:
        cache = FeatureCache(cfg.cache_size, cfg.feature_dim, "fifo")
        hits_b = hits_i = 0
        for i in idx:  # a stream: predict, then remember the image's feature
            if cache.seen:
                h = features[i : i + 1]
                y = int(labels[i])
                with torch.no_grad():
                    hits_b += int(backbone.head(h).argmax()) == y
                    hits_i += int(iciia(h, cache.tensor().unsqueeze(0)).argmax()) == y
            cache.add(features[i])
        n = max(len(idx) - 1, 1)
        results.append(ClientAccuracy(hits_b / n, hits_i / n))
    return results


def overhead_pct(program: DeviceProgram, backbone: nn.Module, cfg: ICIIAConfig) -> float:
    """ICIIA's FLOPs per image over the backbone's (with its own head), in percent: computed, not typed."""
    image = program.example_inputs[0]
    base = forward_flops(backbone, image)
    return 100.0 * (program.flops()["forward"] - base) / base


# ---------------------------------------------------------------- device programs

class KVCache:
    """The app's caches of projected keys and values (``device_cache="kv"``): a FIFO of rows for each."""

    def __init__(self, size: int, dim: int):
        self.keys, self.values = FeatureCache(size, dim), FeatureCache(size, dim)

    def add(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.keys.add(k)
        self.values.add(v)

    @property
    def seen(self) -> int:
        return self.keys.seen


@register_recipe
class ICIIARecipe:
    name = "iciia"
    summary = "backbone + partitioned, shuffled attention over the client's feature cache (inference only)"
    Config = ICIIAConfig
    QUICK = {"backbone_samples": 2000, "backbone_epochs": 1, "iciia_clients": 2000, "iciia_epochs": 2}

    def __init__(self, cfg: ICIIAConfig | None = None):
        self.cfg = cfg or ICIIAConfig()
        if self.cfg.device_cache not in ("features", "kv"):
            raise DcxError(f"--set device_cache={self.cfg.device_cache!r}: choose features or kv")

    @property
    def program_names(self) -> tuple[str, ...]:
        return (f"{self.name}.infer",)

    def build_modules(self, seed: int = 0) -> dict[str, nn.Module]:
        cfg = self.cfg
        seed_everything(seed)
        backbone = make_backbone(cfg)
        iciia = ICIIA(cfg.feature_dim, cfg.heads, cfg.partitions, backbone.num_classes)
        return {"backbone": backbone, "iciia": iciia}

    def cloud_data(self, seed: int) -> tuple[ImageSet, ImageSet]:
        """The cloud's training images (``backbone_samples`` of them) and the test split."""
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        return train.subset(np.random.default_rng(seed).choice(len(train), self.cfg.backbone_samples,
                                                               replace=False)), test

    def train(self, seed: int = 0, progress: Callable[[str], None] = lambda s: None) -> TrainedModules:
        """The one-time cloud training: the backbone, then the ICIIA module on simulated class-subset clients."""
        cfg = self.cfg
        data, test = self.cloud_data(seed)
        progress(f"backbone ({cfg.backbone}) on {len(data)} images")
        features = backbone_features(make_backbone(cfg), data.images, cfg) if cfg.backbone != "convnet" else None
        backbone = train_backbone(data, cfg, seed, features)
        progress(f"training ICIIA (P={cfg.partitions}) on {cfg.iciia_clients} simulated clients x "
                 f"{cfg.iciia_epochs} epochs")
        iciia = train_iciia(backbone, data, cfg, seed, features)
        clients = evaluate_clients(backbone, iciia, test, cfg, seed=seed + 1)
        metrics = {"acc_backbone_clients": float(np.mean([c.backbone for c in clients])),
                   "acc_iciia_clients": float(np.mean([c.iciia for c in clients]))}
        used = [DataUsed("fashion-mnist", "train", len(data), "backbone and one-time ICIIA training"),
                DataUsed("fashion-mnist", "test", len(clients), "held-out class-subset clients (streams)")]
        return TrainedModules({"backbone": backbone, "iciia": iciia}, metrics, used)

    def device_programs(self, seed: int = 0, modules: dict[str, nn.Module] | None = None) -> list[DeviceProgram]:
        """``<name>.infer``: one image and the client's cache in, logits and what the app adds to its cache out."""
        cfg = self.cfg
        modules = {**self.build_modules(seed), **(modules or {})}
        backbone, iciia = copy.deepcopy(modules["backbone"]), copy.deepcopy(modules["iciia"])
        gen = torch.Generator().manual_seed(seed)
        channels = 1 if cfg.backbone == "convnet" else 3
        image = torch.rand(1, channels, cfg.image_size, cfg.image_size, generator=gen)
        rows = torch.randn(cfg.cache_size, cfg.feature_dim, generator=gen).relu()
        summary = f"{cfg.backbone} + ICIIA (P={cfg.partitions}) over an n={cfg.cache_size} cache"
        if cfg.device_cache == "features":
            program = DeviceProgram(
                f"{self.name}.infer", "infer", freeze(ICIIAOnDevice(backbone, iciia)), (image, rows),
                ("image", "cache"), ("logits", "feature"), summary + " of raw features",
                notes={"cache": "the app keeps the n x d cache (FIFO/reservoir) from the 'feature' output"},
                recipe=self.name)
        else:
            device = ICIIAWithKVCache(BackboneFeatures(backbone), iciia)
            with torch.no_grad():
                k, v = device.encode(rows)
            program = DeviceProgram(
                f"{self.name}.infer", "infer", freeze(device), (image, k, v), ("image", "k_cache", "v_cache"),
                ("logits", "k_new", "v_new"), summary + " of projected keys and values",
                notes={"cache": "the app keeps K and V caches (n x d each, FIFO) and appends k_new, v_new per image",
                       "input": "image: RGB, ImageNet mean/std normalised" if channels == 3 else "image: grey in [0, 1]"},
                recipe=self.name)
        program.metrics["iciia_overhead_flops_pct"] = overhead_pct(program, modules["backbone"], cfg)
        return [program]

    def score(self, program_name: str, predict: Predict, seed: int = 0) -> dict[str, float]:
        """``<name>.infer`` as an app runs it: per client, a stream of test images; each prediction uses the cache
        the program's own outputs built from that client's earlier images. Mean per-client accuracy."""
        if program_name != f"{self.name}.infer":
            return {}
        cfg = self.cfg
        test = load_fashion_mnist("test")
        labels = test.labels.numpy()
        accs = []
        for idx in client_streams(labels, cfg, 20, 48, seed + 1):
            cache = FeatureCache(cfg.cache_size, cfg.feature_dim) if cfg.device_cache == "features" else \
                KVCache(cfg.cache_size, cfg.feature_dim)
            hits = 0
            for i in idx:
                image = device_images(test.images[i : i + 1], cfg).numpy()
                if cfg.device_cache == "features":
                    rows = cache.tensor().numpy() if cache.seen else np.zeros((cfg.cache_size, cfg.feature_dim),
                                                                               np.float32)
                    logits, *new = predict(image, rows)
                else:
                    empty = np.zeros((cfg.cache_size, cfg.feature_dim), np.float32)
                    logits, *new = predict(image, *((cache.keys.tensor().numpy(), cache.values.tensor().numpy())
                                                    if cache.seen else (empty, empty)))
                if cache.seen:  # with an empty cache the first image only fills it
                    hits += int(np.argmax(logits)) == int(labels[i])
                cache.add(*(torch.from_numpy(np.asarray(t)).reshape(-1) for t in new))
            accs.append(hits / max(len(idx) - 1, 1))
        return {"accuracy_per_client": float(np.mean(accs)), "clients": float(len(accs))}

    def evaluate(self, seed: int = 0, partitions: tuple[int, ...] = (1, 4, 16)) -> dict[str, float]:
        """One-time training on Fashion-MNIST, then mean per-client accuracy on class-subset test clients.

        One backbone; one ICIIA module per P (the configured P is reported as ``acc_iciia``), each with its
        FLOPs overhead over the backbone for one image, computed on the device program.
        """
        data, test = self.cloud_data(seed)
        features = backbone_features(make_backbone(self.cfg), data.images, self.cfg) \
            if self.cfg.backbone != "convnet" else None
        backbone = train_backbone(data, self.cfg, seed, features)
        labels = test.labels.numpy()
        used = np.unique(np.concatenate(client_streams(labels, self.cfg, self.cfg.test_clients, 64, seed + 1)))
        test_features = torch.zeros(len(test), self.cfg.feature_dim)  # only the streams' images are ever read
        test_features[used] = backbone_features(backbone, test.images[used], self.cfg)
        result: dict[str, float] = {}
        for p in sorted({*partitions, self.cfg.partitions}):
            cfg = replace(self.cfg, partitions=p)
            iciia = train_iciia(backbone, data, cfg, seed, features)
            clients = evaluate_clients(backbone, iciia, test, cfg, seed=seed + 1, features=test_features)
            program = ICIIARecipe(cfg).device_programs(seed, {"backbone": backbone, "iciia": iciia})[0]
            result["acc_backbone"] = float(np.mean([c.backbone for c in clients]))
            result[f"acc_iciia_p{p}"] = float(np.mean([c.iciia for c in clients]))
            result[f"flops_overhead_pct_p{p}"] = program.metrics["iciia_overhead_flops_pct"]
        for p in (2 ** i for i in range(9)):  # the FLOPs overhead of every P up to 256 (costs no training)
            if self.cfg.feature_dim % p == 0 and f"flops_overhead_pct_p{p}" not in result:
                program = ICIIARecipe(replace(self.cfg, partitions=p)).device_programs(seed, {"backbone": backbone})[0]
                result[f"flops_overhead_pct_p{p}"] = program.metrics["iciia_overhead_flops_pct"]
        result["acc_iciia"] = result[f"acc_iciia_p{self.cfg.partitions}"]
        return result


class BackboneFeatures(nn.Module):
    """A backbone as the feature extractor the KV-cache program runs (image -> h)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(image)


register_variant("iciia_mnv2", ICIIARecipe, ICIIAConfig(
    backbone="mobilenet_v2", image_size=224, device_cache="kv", feature_dim=1280, heads=8, partitions=4,
    cache_size=16, backbone_samples=3000, backbone_epochs=10, iciia_clients=3000, iciia_epochs=4, iciia_lr=5e-4,
    test_clients=30,
    batch_size=64),
    "ICIIA on the ImageNet MobileNetV2 at 224x224 RGB (d=1280), the cache kept as projected keys and values",
    quick={"backbone_samples": 300, "iciia_clients": 600, "iciia_epochs": 1, "test_clients": 6})

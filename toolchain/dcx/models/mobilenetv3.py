"""MobileNetV3-Small (Howard et al. 2019): inverted residuals with depthwise convolutions, squeeze-excitation,
hardswish and batch norm, the layout of torchvision's ``mobilenet_v3_small``; ``width`` scales every layer.
Randomly initialised: no ImageNet weights for it install offline here."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcx.models.mobilenetv2 import divisible
from dcx.models.registry import Architecture, Size, register
from dcx.models.tasks import ImageClassification

# (kernel, expanded channels, output channels, squeeze-excitation, hardswish, stride), as in the paper's table 2.
SMALL = ((3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
         (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
         (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
         (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1))


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            activation: type[nn.Module] | None = nn.Hardswish) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([activation()] if activation else []))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        squeezed = divisible(channels / 4)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * F.hardsigmoid(scale)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, hardswish: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers = [conv_bn(cin, expanded, activation=act)] if expanded != cin else []
        layers.append(conv_bn(expanded, expanded, kernel, stride, groups=expanded, activation=act))
        if se:
            layers.append(SqueezeExcitation(expanded))
        layers.append(conv_bn(expanded, cout, activation=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV3Small(nn.Module):
    def __init__(self, num_classes: int = 1000, width: float = 1.0, head: int = 1024):
        super().__init__()
        cin = divisible(16 * width)
        layers: list[nn.Module] = [conv_bn(3, cin, 3, 2)]
        for kernel, expanded, cout, se, hs, stride in SMALL:
            layers.append(InvertedResidual(cin, kernel, divisible(expanded * width), divisible(cout * width), se, hs,
                                           stride))
            cin = divisible(cout * width)
        last = divisible(576 * width)
        layers.append(conv_bn(cin, last))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(last, head), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))

    def blocks(self) -> list[nn.Module]:
        """Input to output, the units that fine-tuning the last k blocks trains."""
        return [*self.features, self.classifier]


register(Architecture(
    "mobilenetv3_small", "MobileNetV3-Small: hardswish, squeeze-excitation, depthwise convolutions, batch norm",
    MobileNetV3Small, full=Size(ImageClassification(224, 1000), batch=8),
    quick=Size(ImageClassification(32, 10), batch=4, model={"width": 0.25, "head": 64})))

"""ResNet-18 (He et al. 2016): a 7x7 stem and max pool, four stages of two BasicBlocks (3x3 convolutions, batch
norm, residual adds; a 1x1 projection where the shape changes), global average pool, linear head. ``width``
scales every stage. Randomly initialised."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcx.models.registry import Architecture, Size, register
from dcx.models.tasks import ImageClassification

STAGES = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
            if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000, width: float = 1.0):
        super().__init__()
        channels = [max(8, int(c * width)) for c in STAGES]
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 7, 2, 3, bias=False), nn.BatchNorm2d(channels[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], channels[0]
        for i, c in enumerate(channels):
            layers += [BasicBlock(cin, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))

    def blocks(self) -> list[nn.Module]:
        """Input to output, the units that fine-tuning the last k blocks trains."""
        return [self.stem, *self.layers, self.fc]


register(Architecture(
    "resnet18", "ResNet-18: BasicBlocks, batch norm, residual adds, max pool", ResNet18,
    full=Size(ImageClassification(224, 1000), batch=8),
    quick=Size(ImageClassification(32, 10), batch=4, model={"width": 0.125})))

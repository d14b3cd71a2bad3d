"""A small CNN whose every layer can be split by width (DC-CCL's base, large and small submodels; the split is
``dcx.methods.dcccl.submodels``).

Stride-2 convolutions instead of pooling keep the graph to ops that every
backend can train through (conv, ReLU, inner product), including Core ML's
updatable-model rules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcx.errors import DcxError


class ConvNet(nn.Module):
    """conv3x3/2 -> ReLU -> conv3x3/2 -> ReLU -> flatten -> fc -> ReLU -> fc (logits)."""

    def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 128, num_classes: int = 10,
                 in_channels: int = 1, image_size: int = 28):
        super().__init__()
        if image_size % 4:
            raise DcxError(f"ConvNet: image_size must be divisible by 4, got {image_size}")
        c1, c2 = channels
        self.channels, self.hidden, self.num_classes = (c1, c2), hidden, num_classes
        self.in_channels, self.image_size = in_channels, image_size
        self.spatial = (image_size // 4) ** 2
        self.conv1 = nn.Conv2d(in_channels, c1, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(c2 * self.spatial, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation (dimension ``hidden``)."""
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return F.relu(self.fc1(torch.flatten(x, 1)))

    @property
    def head(self) -> nn.Linear:
        """The classifier on ``features`` (what ICIIA's classifier starts from)."""
        return self.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))

"""A small CNN whose every layer can be split by width (DC-CCL's base, large and small submodels).

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


class SummedLogits(nn.Module):
    """Parallel submodels with no cross-connections: ``B(x) = L(x) + S(x)``."""

    def __init__(self, large: nn.Module, small: nn.Module):
        super().__init__()
        self.large, self.small = large, small

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.large(x) + self.small(x)


def split_widths(base: ConvNet, ratio: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(c1, c2, hidden) of the large and of the small group for a width ratio r."""
    if not 0.0 < ratio < 1.0:
        raise DcxError(f"width split ratio must be in (0, 1), got {ratio}")
    full = (*base.channels, base.hidden)
    small = tuple(max(1, round(w * ratio)) for w in full)
    if any(s >= w for s, w in zip(small, full)):
        raise DcxError(f"width split ratio {ratio} leaves no channels for the large submodel of widths {full}")
    large = tuple(w - s for w, s in zip(full, small))
    return large, small  # type: ignore[return-value]


def _group_slices(base: ConvNet, ratio: float) -> tuple[ConvNet, ConvNet, list[slice], list[slice]]:
    (l1, l2, lh), (s1, s2, sh) = split_widths(base, ratio)
    kw = dict(num_classes=base.num_classes, in_channels=base.in_channels, image_size=base.image_size)
    large, small = ConvNet((l1, l2), lh, **kw), ConvNet((s1, s2), sh, **kw)
    # Channel groups of conv1, conv2 and fc1 outputs: large first, small last.
    large_groups = [slice(0, l1), slice(0, l2), slice(0, lh)]
    small_groups = [slice(l1, None), slice(l2, None), slice(lh, None)]
    return large, small, large_groups, small_groups


@torch.no_grad()
def split_by_width(base: ConvNet, ratio: float) -> tuple[ConvNet, ConvNet]:
    """Slice a trained base model into parallel large and small submodels.

    Every layer's channels are cut into a large group and a small group (a
    fraction ``ratio``); weights that connect the two groups are dropped. When
    those cross-group weights are zero, ``L(x) + S(x) == base(x)`` exactly.
    The final bias goes to the large submodel.
    """
    large, small, lg, sg = _group_slices(base, ratio)
    sp = base.spatial
    for sub, (g1, g2, gh), is_large in ((large, lg, True), (small, sg, False)):
        sub.conv1.weight.copy_(base.conv1.weight[g1])
        sub.conv1.bias.copy_(base.conv1.bias[g1])
        sub.conv2.weight.copy_(base.conv2.weight[g2, g1])
        sub.conv2.bias.copy_(base.conv2.bias[g2])
        # fc1 reads the flattened conv2 output channel by channel (spatial positions contiguous).
        cols = base.fc1.weight.view(base.hidden, base.channels[1], sp)[gh, g2].reshape(sub.hidden, -1)
        sub.fc1.weight.copy_(cols)
        sub.fc1.bias.copy_(base.fc1.bias[gh])
        sub.fc2.weight.copy_(base.fc2.weight[:, gh])
        sub.fc2.bias.copy_(base.fc2.bias if is_large else torch.zeros_like(base.fc2.bias))
    return large, small


@torch.no_grad()
def zero_cross_group_weights(base: ConvNet, ratio: float) -> None:
    """Zero the weights that ``split_by_width`` drops, making the split exact."""
    _, _, (l1, l2, lh), (s1, s2, sh) = _group_slices(base, ratio)
    sp = base.spatial
    base.conv2.weight[l2, s1] = 0
    base.conv2.weight[s2, l1] = 0
    fc1 = base.fc1.weight.view(base.hidden, base.channels[1], sp)
    fc1[lh, s2] = 0
    fc1[sh, l2] = 0

"""A MobileNet-style network small enough to train on the phone (DC-CCL's S and mimic M at 224x224 RGB).

Depthwise-separable blocks as in MobileNetV1: a 3x3 depthwise convolution +
BN + ReLU6, then a 1x1 pointwise convolution + BN + ReLU6; a stride-2 stem,
global average pooling and a linear head. On the device the module is in
eval mode (``DeviceProgram`` puts it there), so each BN is a per-channel
affine map with frozen statistics whose scale and shift can still train.

``width`` scales every layer's channels (rounded to multiples of 8);
``depth`` is the number of stride-1 blocks repeated at the 512-channel
stage. The defaults (width 0.25, depth 5: MobileNetV1-0.25's layout) give
0.22 M parameters and 82 MFLOPs at 224x224 with 10 classes
(``FlopCounterMode``, 2 FLOPs per multiply-add); width 0.25, depth 1 gives
0.14 M and 54 MFLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcx.errors import DcxError
from dcx.models.mobilenetv2 import conv_bn_relu6

STEM = 32
# (output channels at width 1, stride) before and after the repeated stage of (512, 1) blocks.
HEAD_STAGES = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))
TAIL_STAGES = ((1024, 2), (1024, 1))


def depthwise_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 depthwise conv + BN + ReLU6, then 1x1 pointwise conv + BN + ReLU6."""
    return nn.Sequential(conv_bn_relu6(cin, cin, 3, stride, groups=cin), conv_bn_relu6(cin, cout, kernel=1))


class MobileNetSmall(nn.Module):
    """Stem conv3x3/2 -> depthwise-separable blocks -> global average pool -> linear logits."""

    def __init__(self, num_classes: int = 10, width: float = 0.25, depth: int = 5, in_channels: int = 3):
        super().__init__()
        if width <= 0 or depth < 0:
            raise DcxError(f"MobileNetSmall: width must be > 0 and depth >= 0, got width={width}, depth={depth}")
        self.num_classes, self.width, self.depth, self.in_channels = num_classes, width, depth, in_channels
        stages = (*HEAD_STAGES, *((512, 1),) * depth, *TAIL_STAGES)
        cin = self.channels(STEM)
        layers: list[nn.Module] = [conv_bn_relu6(in_channels, cin, stride=2)]
        for c, s in stages:
            layers.append(depthwise_separable(cin, self.channels(c), s))
            cin = self.channels(c)
        self.features = nn.Sequential(*layers)
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)

    def channels(self, c: int) -> int:
        return max(8, int(round(c * self.width / 8)) * 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))

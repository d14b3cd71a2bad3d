"""DC-CCL's parallel submodels: ``B(x) = L(x) + S(x)``, and the width split of the built-in ConvNet into them."""

from __future__ import annotations

import torch
from torch import nn

from dcx.methods.dcccl.split import split_by_width, zero_cross_group_weights
from dcx.models.convnet import ConvNet


class SummedLogits(nn.Module):
    """Parallel submodels with no cross-connections: ``B(x) = L(x) + S(x)``."""

    def __init__(self, large: nn.Module, small: nn.Module):
        super().__init__()
        self.large, self.small = large, small

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.large(x) + self.small(x)


def split_convnet(base: ConvNet, ratio: float) -> tuple[ConvNet, ConvNet]:
    """``split_by_width`` of a ConvNet, returned as ConvNets whose attributes give their widths."""
    large, small = split_by_width(base, ratio, _example_input(base))
    return _as_convnet(base, large), _as_convnet(base, small)


def zero_convnet_cross_group_weights(base: ConvNet, ratio: float) -> None:
    """Zero the weights that ``split_convnet`` drops, making the split exact."""
    zero_cross_group_weights(base, ratio, _example_input(base))


def _example_input(base: ConvNet) -> torch.Tensor:
    return torch.zeros(1, base.in_channels, base.image_size, base.image_size)


def _as_convnet(base: ConvNet, sub: ConvNet) -> ConvNet:
    net = ConvNet((sub.conv1.out_channels, sub.conv2.out_channels), sub.fc1.out_features, base.num_classes,
                  base.in_channels, base.image_size)
    net.load_state_dict(sub.state_dict())
    return net

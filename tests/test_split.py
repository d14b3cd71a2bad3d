"""The width split for any CNN (``dcx.methods.dcccl.split``): ``L(x) + S(x) == B(x)`` once the cross-group weights are zero.

Exact on DC-CCL's ConvNet (with the channel layout it always had), on ImageNet MobileNetV2, on the small
MobileNet, and on a residual network with grouped and depthwise convolutions, pooling and hardswish; the
channel groups follow residual adds, depthwise convolutions, flatten and batch norm. Models, ratios and
inputs the split cannot take are one-line errors naming the op, layer or input.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcx.errors import DcxError
from dcx.models.convnet import ConvNet
from dcx.models.mobilenet_small import MobileNetSmall
from dcx.models.mobilenetv2 import mobilenet_v2_imagenet
from dcx.methods.dcccl.split import split_by_width, zero_cross_group_weights

RATIO = 1 / 8


def randomize_batch_norms(model: nn.Module, seed: int) -> nn.Module:
    """Running statistics and affine parameters away from identity, so batch norm matters to the check."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            for t, (lo, hi) in ((bn.running_mean, (-0.3, 0.3)), (bn.running_var, (0.5, 2.0)),
                                (bn.weight, (0.5, 1.5)), (bn.bias, (-0.3, 0.3))):
                t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    return model


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (identity, or a strided 1x1 conv + BN), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int = 1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))


class ResidualNet(nn.Module):
    """Stem + max pool, residual blocks (one with a grouped conv), a depthwise conv with channel multiplier 2,
    hardswish, average pooling, then global mean and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2, groups=2), Block(32, 32, 1))
        self.depthwise = nn.Sequential(nn.Conv2d(32, 64, 3, 1, 1, groups=32), nn.BatchNorm2d(64), nn.Hardswish())
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.max_pool2d(self.stem(x), 3, 2, 1))
        x = F.avg_pool2d(self.depthwise(x), 2)
        return self.fc(x.mean((2, 3)))


def check_exact_split(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    model.eval()
    zero_cross_group_weights(model, RATIO, x[:1])
    large, small = split_by_width(model, RATIO, x[:1])
    with torch.no_grad():
        expected = model(x)
        got = large.eval()(x) + small.eval()(x)
    assert type(large) is type(model) and type(small) is type(model)
    assert (got - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in large.parameters())
    return large, small


# ---------------------------------------------------------------- exact splits

def test_convnet_split_keeps_its_channel_layout():
    """Large group first, small group last; fc1's columns follow the flattened conv2 channels (49 positions
    each); the output layer keeps 10 logits in both, with its bias in L."""
    torch.manual_seed(0)
    base = ConvNet((32, 64), 128)
    large, small = check_exact_split(base, torch.rand(4, 1, 28, 28))
    assert small.conv1.weight.shape[0] == 4 and small.conv2.weight.shape[:2] == (8, 4)
    assert torch.equal(large.conv1.weight, base.conv1.weight[:28])
    assert torch.equal(small.conv2.weight, base.conv2.weight[56:, 28:])
    assert torch.equal(small.fc1.weight, base.fc1.weight.view(128, 64, 49)[112:, 56:].reshape(16, 8 * 49))
    assert torch.equal(small.fc2.weight, base.fc2.weight[:, 112:])
    assert torch.equal(large.fc2.bias, base.fc2.bias) and not small.fc2.bias.any()


def test_imagenet_mobilenet_v2_splits_exactly():
    model = mobilenet_v2_imagenet(10)
    large, small = check_exact_split(model, torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    for name, conv in small.named_modules():
        if isinstance(conv, nn.Conv2d):
            full = model.get_submodule(name)
            assert conv.out_channels == round(full.out_channels * RATIO), name
            if full.groups > 1:  # depthwise stays depthwise, on its own group's channels
                assert conv.groups == conv.in_channels == conv.out_channels
    assert small.classifier[1].out_features == large.classifier[1].out_features == 10


def test_small_mobilenet_splits_exactly():
    model = randomize_batch_norms(MobileNetSmall(10, width=0.5, depth=1), seed=2)
    check_exact_split(model, torch.rand(2, 3, 64, 64))


def test_residual_network_splits_exactly():
    torch.manual_seed(0)
    model = randomize_batch_norms(ResidualNet(), seed=3)
    large, small = check_exact_split(model, torch.rand(2, 3, 32, 32))
    # residual adds share one grouping: 2 of 16 and 4 of 32 channels in every block of S
    assert [b.conv2.out_channels for b in small.blocks] == [2, 4, 4]
    assert small.blocks[1].conv1.groups == 2 and small.blocks[1].conv1.weight.shape[:2] == (4, 1)
    dw = small.depthwise[0]
    assert dw.groups == 4 and dw.out_channels == 8  # channel multiplier 2: each input channel keeps its two outputs


def test_split_without_zeroing_drops_the_cross_weights():
    torch.manual_seed(0)
    model = randomize_batch_norms(ResidualNet(), seed=4).eval()
    x = torch.rand(2, 3, 32, 32)
    large, small = split_by_width(model, RATIO, x[:1])
    with torch.no_grad():
        assert not torch.allclose(large.eval()(x) + small.eval()(x), model(x), atol=1e-3)


def test_split_keeps_training_mode_and_batch_statistics():
    model = randomize_batch_norms(MobileNetSmall(10, width=0.5, depth=0), seed=5).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    large, small = split_by_width(model, RATIO, torch.rand(1, 3, 32, 32))
    assert model.training and large.training and small.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- errors

def one_line_error(match: str, fn, *args) -> str:
    with pytest.raises(DcxError, match=match) as err:
        fn(*args)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_op_on_split_channels_is_named():
    class CumSum(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 16, 3), nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(torch.cumsum(self.conv(x), 1).mean((2, 3)))

    one_line_error(r"node cumsum calls aten\.cumsum", split_by_width, CumSum(), RATIO, torch.rand(1, 3, 8, 8))


def test_ratio_that_empties_a_group_names_the_layer():
    one_line_error(r"small group empty in layer conv1 \(width 4\)", split_by_width, ConvNet((4, 64), 128), 0.1,
                   torch.rand(1, 1, 28, 28))
    one_line_error(r"large group empty in layer conv1 \(width 4\)", split_by_width, ConvNet((4, 64), 128), 0.9,
                   torch.rand(1, 1, 28, 28))
    one_line_error(r"ratio must be in \(0, 1\)", split_by_width, ConvNet(), 1.5, torch.rand(1, 1, 28, 28))


def test_example_input_the_model_cannot_take():
    one_line_error(r"cannot take the example input \(\(1, 3, 28, 28\)\)", split_by_width, ConvNet(), RATIO,
                   torch.rand(1, 3, 28, 28))


def test_non_linear_op_on_the_logits_is_refused():
    class Rectified(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = ConvNet()

        def forward(self, x):
            return F.relu(self.net(x))

    one_line_error("node relu_3 applies aten.relu.default to the output logits", split_by_width, Rectified(), RATIO,
                   torch.rand(1, 1, 28, 28))

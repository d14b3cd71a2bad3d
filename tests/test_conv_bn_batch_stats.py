"""The MobileNet layer in training mode on the dcx kernels: convolution -> batch norm on the batch's statistics ->
clamp, forward and backward as ``dcx::conv2d_bn_batch_stats`` and its backward (kernels/training/conv_bn/), put in
place by the fast-training rules of ``fast_training.conv_bn_batch``: the kernels against their reference and
autograd at odd shapes, the rules on a MobileNet-style program in train() mode (exported, trained 20 steps,
verified against eager), their variants (ReLU, a convolution bias, no clamp), what they leave stock and why, and
numerical checks that can fail."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dcx
from dcx.backends.executorch.passes.fast_training import FastTraining
from dcx.backends.executorch.passes.fast_training.conv_bn_batch import ConvBnBatchBackward, ConvBnBatchForward
from dcx.backends.executorch.passes.fast_training.rewriter import Rewriter
from dcx.manifest import read_manifest


@pytest.fixture(scope="module")
def ops(kernels_build):
    from dcx.kernels import training

    assert training.is_built(), f"the dcx training kernels did not load: {training.load_error()}"
    return torch.ops.dcx


# ------------------------------------------------------------------------------------ the kernels

SHAPES = {  # x [n, c, h, w], weight [o, c / groups, k, k], stride, padding, groups
    "stride2": ((3, 4, 9, 11), (6, 4, 3, 3), 2, 1, 1),
    "depthwise": ((2, 8, 15, 15), (8, 1, 3, 3), 2, 1, 8),
    "pointwise": ((2, 16, 7, 5), (12, 16, 1, 1), 1, 0, 1),
    "one-channel": ((4, 1, 6, 7), (1, 1, 3, 3), 1, 1, 1),
    "one-image": ((1, 3, 5, 6), (5, 3, 3, 3), 1, 1, 1),
}
CLAMPS = {"relu6": (0.0, 6.0), "relu": (0.0, math.inf), "none": (-math.inf, math.inf)}


@pytest.mark.parametrize("clamp", CLAMPS)
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_reference_and_autograd(ops, shape, clamp):
    from dcx.kernels.ops import OPS

    xs, ws, stride, padding, groups = SHAPES[shape]
    low, high = CLAMPS[clamp]
    g = torch.Generator().manual_seed(len(shape) * 7 + len(clamp))
    x, w = torch.randn(xs, generator=g), torch.randn(ws, generator=g)
    b = torch.randn(ws[0], generator=g) + 3.0  # a mean away from zero
    bn_w, bn_b = torch.rand(ws[0], generator=g) + 0.5, torch.randn(ws[0], generator=g)
    geo = ([stride] * 2, [padding] * 2, [1, 1], groups)
    conv, y, mean, var = ops.conv2d_bn_batch_stats(x, w, b, bn_w, bn_b, 1e-5, *geo, low, high, True)
    want = OPS["conv2d_bn_batch_stats"].reference(x, w, b, bn_w, bn_b, 1e-5, *geo, low, high, True)
    for got, ref, what in zip((conv, y, mean, var), want, ("conv", "y", "mean", "var")):
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4), (what, (got - ref).abs().max())
    assert ops.conv2d_bn_batch_stats(x, w, b, bn_w, bn_b, 1e-5, *geo, low, high, False)[0].numel() == 0

    gy = torch.randn(y.shape, generator=g)
    got = ops.conv2d_bn_batch_stats_backward(gy, y, conv, x, w, bn_w, mean, var, 1e-5, *geo, low, high, True, True,
                                             True)
    ref = OPS["conv2d_bn_batch_stats_backward"].reference(gy, y, conv, x, w, bn_w, mean, var, 1e-5, *geo, low, high,
                                                          True, True, True)
    leaves = [t.clone().requires_grad_() for t in (x, w, b, bn_w, bn_b)]
    out = F.batch_norm(F.conv2d(leaves[0], leaves[1], leaves[2], *geo), None, None, leaves[3], leaves[4], True, 0.1,
                       1e-5).clamp(low, high)
    auto = torch.autograd.grad(out, leaves, gy)
    for i, what in enumerate(("grad x", "grad weight", "grad bias", "grad bn weight", "grad bn bias")):
        scale = 1.0 + float(ref[i].abs().max())
        assert float((got[i] - ref[i]).abs().max()) <= 2e-5 * scale, (what, "reference")
        assert float((got[i] - auto[i]).abs().max()) <= 1e-4 * scale, (what, "autograd")
    grad_x, _, grad_b, _, _ = ops.conv2d_bn_batch_stats_backward(gy, y, conv, x, w, None, mean, var, 1e-5, *geo, low,
                                                                 high, False, False, False)
    assert grad_x.numel() == 0 and grad_b.numel() == 0


# ------------------------------------------------------------------------------------ the rules, end to end

class Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))  # no clamp

    def forward(self, x):
        return x + self.pw(self.dw(x))


class MobileNetStyle(nn.Module):
    """A stride-2 stem, two depthwise-separable residual blocks, the global pool and a linear head."""

    def __init__(self, c: int = 8, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU6())
        self.blocks = nn.Sequential(Block(c), Block(c))
        self.head = nn.Linear(c, classes)

    def forward(self, x, y):
        return F.cross_entropy(self.head(self.blocks(self.stem(x)).mean((2, 3))), y)


def _batches(n: int, shape=(4, 3, 16, 16), classes: int = 5):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(shape, generator=g), torch.randint(0, classes, shape[:1], generator=g)) for _ in range(n)]


def test_mobilenet_in_train_mode_runs_on_the_fused_kernels_and_trains_like_eager(ops, tmp_path):
    torch.manual_seed(0)
    batches = _batches(20)
    program = dcx.training_program("mnet_bn.train", MobileNetStyle().train(), batches[0], ("image", "label"),
                                   optimizer=dcx.optim.SGD(0.05, momentum=0.9), batches=batches)
    summary = dcx.export_programs([program], tmp_path, formats=["executorch"])
    assert not summary.failed, summary.failed
    (entry,) = read_manifest(tmp_path).artifacts
    report = next(p.changes for p in entry.passes if p.name == "fast_training")
    assert report["ops"]["dcx::conv2d_bn_batch_stats"] == 5, report["ops"]
    assert report["ops"]["dcx::conv2d_bn_batch_stats_backward"] == 5, report["ops"]
    stock = report["stock_ops"]
    # what stays: the running statistics' update (mul, add, copy), the residual adds, the state outputs, and the
    # head's global mean over (2, 3) without keepdim (the pool rule takes keepdim=True)
    assert not {"aten.rsqrt", "aten.pow.Tensor_Scalar", "aten.sub.Tensor", "aten.convolution",
                "aten.convolution_backward", "aten.hardtanh", "aten.where.self", "aten.neg",
                "aten.sum.dim_IntList"} & set(stock), stock
    assert stock.get("aten.mean.dim") == 1 and stock.get("aten.copy") == 10, stock
    assert report["left_alone"] == [], report["left_alone"]

    rows = dcx.verify(tmp_path)
    assert [(r.check, r.error, r.tolerance) for r in rows if r.verdict != "pass"] == []
    checks = {r.check: r for r in rows if r.format == "executorch"}
    for check in ("loss", "weights", "state"):
        assert checks[f"train_20_steps_{check}"].error <= 1e-5, (check, checks[f"train_20_steps_{check}"].error)


# ------------------------------------------------------------------------------------ variants, declines, checks

class Layer(nn.Module):
    """One layer in front of a linear head: ``body`` after a trainable per-channel scale of the input."""

    def __init__(self, body: nn.Module, c_in: int = 3, c: int = 6, hw: int = 6):
        super().__init__()
        self.scale = nn.Parameter(torch.rand(1, c_in, 1, 1) + 0.5)
        self.body, self.head = body, nn.Linear(c * hw * hw, 3)

    def forward(self, x, y):
        return F.cross_entropy(self.head(self.body(x * self.scale).flatten(1)), y)


def _conv(bias=False):
    return nn.Conv2d(3, 6, 3, padding=1, bias=bias)


VARIANTS = {  # name -> (body, the batch-statistics ops it gets, a word of the reason its norm stays stock)
    "relu": (lambda: nn.Sequential(_conv(), nn.BatchNorm2d(6), nn.ReLU()), 1, None),
    "conv-bias": (lambda: nn.Sequential(_conv(bias=True), nn.BatchNorm2d(6), nn.ReLU6()), 1, None),
    "no-affine": (lambda: nn.Sequential(_conv(), nn.BatchNorm2d(6, affine=False), nn.ReLU6()), 0, "affine"),
    "no-conv": (lambda: nn.Sequential(_conv(), nn.ReLU(), nn.BatchNorm2d(6)), 0, "other than a convolution"),
}


def _joint(name: str):
    torch.manual_seed(0)
    body = VARIANTS[name][0]() if name in VARIANTS else nn.Sequential(_conv(), nn.BatchNorm2d(6), nn.ReLU6())
    batches = _batches(1, (4, 3, 6, 6), 3)
    program = dcx.training_program(f"{name}.train", Layer(body).train(), batches[0], ("x", "y"), lr=0.1)
    return joint_before_fast_training(program), batches[0], program


def joint_before_fast_training(program):
    """The joint graph the ExecuTorch exporter hands the fast-training pass: the norms in training mode as
    elementary ops (``BatchStatistics``), captured, forward and backward."""
    from dcx.backends.executorch.exporter import EXPORTER
    from dcx.backends.executorch.options import ExecuTorchOptions
    from dcx.passes import PassContext, run_passes

    options = ExecuTorchOptions()
    passes = EXPORTER.passes(program, options)
    upto = [p.name for p in passes].index(FastTraining.name)
    return run_passes(passes[:upto], program.module, PassContext(program, options, "executorch"))


def _outputs(ep, inputs) -> list[torch.Tensor]:
    consts = [ep.state_dict.get(s.target, ep.constants.get(s.target)).clone() for s in ep.graph_signature.input_specs
              if s.kind.name != "USER_INPUT"]
    return [t.detach() for t in ep.graph_module(*consts, *inputs)]


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_are_fused_or_left_stock_with_a_reason(ops, name):
    joint, inputs, _ = _joint(name)
    ep, report = FastTraining().rewrite(joint)
    fused, reason = VARIANTS[name][1:]
    assert report["ops"].get("dcx::conv2d_bn_batch_stats", 0) == fused, report["ops"]
    assert report["ops"].get("dcx::conv2d_bn_batch_stats_backward", 0) == fused, report["ops"]
    if reason:
        reasons = [r["reason"] for r in report["left_alone"] if r["op"] == "aten.rsqrt"]
        assert len(reasons) == 1 and reason in reasons[0], report["left_alone"]
        assert "aten.rsqrt" in report["stock_ops"]
    else:
        assert "aten.rsqrt" not in report["stock_ops"] and report["left_alone"] == [], report
    for i, (want, got) in enumerate(zip(_outputs(joint, inputs), _outputs(ep, inputs))):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (i, (got - want).abs().max())


def _mutant(target):
    """A rewriter over the layer's joint graph (after its cse), and the graph's first node of ``target``."""
    import copy

    rw = Rewriter(copy.deepcopy(_joint("mutant")[0]))
    rw.cse()
    return rw, next(n for n in rw.graph.nodes if n.op == "call_function" and n.target is target)


def test_the_numerical_checks_can_fail(ops):
    A = torch.ops.aten
    # the backward's 1 / M of the mean's gradient off by one: the backward is declined, so is the forward (the
    # stock backward still reads the norm's intermediate values), and nothing is rewritten
    rw, node = _mutant(A.div.Scalar)
    node.args = (node.args[0], node.args[1] - 1)
    rw.apply([ConvBnBatchBackward()])
    rw.graph.eliminate_dead_code()
    rw.apply([ConvBnBatchForward()])
    assert rw.ops == {} and any("do not compute" in r for r in rw.declined.values()), rw.declined
    # with the backward fused, a forward that centres on twice the mean (sub's alpha, which no structure shows)
    rw, node = _mutant(A.sub.Tensor)
    rw.apply([ConvBnBatchBackward()])
    rw.graph.eliminate_dead_code()
    assert rw.ops == {"dcx::conv2d_bn_batch_stats_backward": 1}
    node.kwargs = {"alpha": 2.0}
    rw.apply([ConvBnBatchForward()])
    assert "dcx::conv2d_bn_batch_stats" not in rw.ops
    assert any("do not compute a convolution + batch norm (batch statistics) + clamp" in r
               for r in rw.declined.values()), rw.declined

"""Each fast-training rule on its own (``dcx.backends.executorch.passes.fast_training``): applied alone to
a tiny joint program, it replaces the stock nodes of its op family with its dcx op and the program's
outputs (the loss and every gradient) stay what they were; a region it does not take is declined with
its reason in the report. The whole pass over the recipes' programs is tested in test_training_kernels.py."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcx.backends.executorch.passes.fast_training import PHASES, FastTraining, Phase
from dcx.backends.executorch.passes.fast_training.conv import ConvBackward, ConvForward
from dcx.backends.executorch.passes.fast_training.conv_bn import (
    ConvBnBackward, ConvBnForward, FrozenBatchNormBackward)
from dcx.backends.executorch.passes.fast_training.conv_bn_batch import ConvBnBatchBackward, ConvBnBatchForward
from dcx.backends.executorch.passes.fast_training.embedding import EmbeddingBackward
from dcx.backends.executorch.passes.fast_training.layer_norm import LayerNormBackward
from dcx.backends.executorch.passes.fast_training.linear import LinearBackward, LinearForward
from dcx.backends.executorch.passes.fast_training.losses import BinaryCrossEntropy, CrossEntropy
from dcx.backends.executorch.passes.fast_training.mask import ReluMask
from dcx.backends.executorch.passes.fast_training.mean import GlobalMean, GlobalMeanBackward
from dcx.backends.executorch.passes.fast_training.pool import Pool2d
from dcx.backends.executorch.passes.fast_training.transposes import DoubleTranspose
from dcx.passes.batch_statistics import BatchStatisticsNorm
from dcx.passes.graph_capture import capture_module, joint_graph

@pytest.fixture(scope="module", autouse=True)
def kernels_loaded(kernels_build):
    """The set-up builds the kernels: one that did not load fails here instead of skipping."""
    from dcx.kernels import training

    assert training.is_built(), f"the dcx training kernels did not load: {training.load_error()}"


N = 6  # batch


class Scaled(nn.Module):
    """A trainable per-channel scale in front of ``body`` (so that the body's backward exists), then a
    cross entropy over a linear head."""

    def __init__(self, body, channels: int, features: int):
        super().__init__()
        self.scale = nn.Parameter(torch.rand(1, channels, 1, 1) + 0.5)
        self.body, self.head = body, nn.Linear(features, 3)

    def forward(self, x, y):
        return F.cross_entropy(self.head(self.body(x * self.scale).flatten(1)), y)


class Lambda(nn.Module):
    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for k, m in modules.items():
            setattr(self, k, m)

    def forward(self, *args):
        return self.fn(self, *args)


def _images(c=2, hw=6):
    return torch.randn(N, c, hw, hw), torch.randint(0, 3, (N,))


def _bn(c: int, affine: bool = True) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, affine=affine)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return bn


PROGRAMS = {  # name -> (module, inputs), built at seed 0
    "ce": lambda: (Lambda(lambda s, x, y: F.cross_entropy(s.fc(x), y), fc=nn.Linear(5, 4)),
                   (torch.randn(N, 5), torch.randint(0, 4, (N,)))),
    "ce_nlc": lambda: (Lambda(lambda s, x, y: F.cross_entropy(s.fc(x).transpose(1, 2), y), fc=nn.Linear(5, 3)),
                       (torch.randn(N, 4, 5), torch.randint(0, 3, (N, 4)))),
    "bce": lambda: (Lambda(lambda s, x, t: F.binary_cross_entropy_with_logits(s.fc(x).squeeze(1), t), fc=nn.Linear(5, 1)),
                    (torch.randn(N, 5), torch.rand(N))),
    "bce_2d": lambda: (Lambda(lambda s, x, t: F.binary_cross_entropy_with_logits(s.fc(x), t), fc=nn.Linear(5, 2)),
                       (torch.randn(N, 5), torch.rand(N, 2))),
    "mlp": lambda: (Lambda(lambda s, x, y: F.cross_entropy(s.fc2(F.relu(s.fc1(x))), y), fc1=nn.Linear(5, 7),
                           fc2=nn.Linear(7, 3)), (torch.randn(N, 5), torch.randint(0, 3, (N,)))),
    "mlp64": lambda: (Lambda(lambda s, x: s.fc(x).square().mean(), fc=nn.Linear(5, 3).double()),
                      (torch.randn(N, 5, dtype=torch.float64),)),
    "conv": lambda: (Scaled(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2)), 2, 64),
                     _images()),
    "conv_t": lambda: (Scaled(nn.ConvTranspose2d(2, 2, 2, stride=2), 2, 288), _images()),
    "conv_bn": lambda: (Scaled(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), _bn(4), nn.ReLU6()), 2, 144),
                        _images()),
    "conv_bn_frozen": lambda: (Lambda(lambda s, x, y: F.cross_entropy(s.head(s.layer(x).flatten(1)), y),
                                      layer=nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), _bn(4), nn.ReLU6()).requires_grad_(False),
                                      head=nn.Linear(144, 3)), _images()),
    # a batch norm in training mode, as the batch_statistics pass writes it (whatever the module's mode)
    "conv_bn_batch": lambda: (Scaled(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), BatchStatisticsNorm(_bn(4)),
                                                   nn.ReLU6()), 2, 144), _images()),
    "conv_bn_batch_frozen": lambda: (Lambda(lambda s, x, y: F.cross_entropy(s.head(s.layer(x).flatten(1)), y),
                                            layer=nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), BatchStatisticsNorm(_bn(4)),
                                                                nn.ReLU6()).requires_grad_(False),
                                            head=nn.Linear(144, 3)), _images()),
    "bn": lambda: (Scaled(_bn(2), 2, 72), _images()),
    "bn_plain": lambda: (Scaled(_bn(2, affine=False), 2, 72), _images()),
    "pool": lambda: (Scaled(Lambda(lambda s, h: F.avg_pool2d(F.max_pool2d(h, 2), 3, stride=1, padding=1)), 2, 18),
                     _images()),
    "pool_ceil": lambda: (Scaled(Lambda(lambda s, h: F.max_pool2d(h, 3, stride=2, ceil_mode=True)), 2, 18), _images()),
    "mean": lambda: (Scaled(Lambda(lambda s, h: h.mean((2, 3), keepdim=True)), 2, 2), _images()),
    "ln": lambda: (Lambda(lambda s, x, y: F.cross_entropy(s.fc2(s.ln(s.fc1(x))), y), fc1=nn.Linear(5, 8),
                          ln=nn.LayerNorm(8), fc2=nn.Linear(8, 3)), (torch.randn(N, 5), torch.randint(0, 3, (N,)))),
    "ln_2d": lambda: (Lambda(lambda s, x, y: F.cross_entropy(s.ln(s.fc1(x).view(N, 2, 4)).flatten(1), y),
                             fc1=nn.Linear(5, 8), ln=nn.LayerNorm((2, 4))),
                      (torch.randn(N, 5), torch.randint(0, 8, (N,)))),
    "emb": lambda: (Lambda(lambda s, i, y: F.cross_entropy(s.fc(s.emb(i).mean(1)), y), emb=nn.Embedding(10, 4),
                           fc=nn.Linear(4, 3)), (torch.randint(0, 10, (N, 5)), torch.randint(0, 3, (N,)))),
}


@functools.lru_cache(maxsize=None)
def _program(name: str):
    torch.manual_seed(0)
    module, inputs = PROGRAMS[name]()
    return joint_graph(capture_module(module.eval(), inputs)), inputs


def _run(ep, inputs) -> list[torch.Tensor]:
    """The joint program's outputs: the loss, then the gradients."""
    consts = [ep.state_dict.get(s.target, ep.constants.get(s.target)) for s in ep.graph_signature.input_specs
              if s.kind.name != "USER_INPUT"]
    return list(ep.graph_module(*consts, *inputs))


def _targets(ep) -> list[str]:
    return [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]


def _apply(name: str, *rules):
    """(the program with no rule applied, with ``rules`` applied, the report, the inputs); the pass merges
    identical nodes (cse) before any rule, so the first is what the rules start from."""
    joint, inputs = _program(name)
    fast = FastTraining()
    fast.phases = ()
    base, _ = fast.rewrite(joint)
    fast.phases = (Phase("test", rules),)
    ep, report = fast.rewrite(joint)
    return base, ep, report, inputs


CASES = [  # program, the rule alone, the dcx ops it emits, aten ops it leaves fewer of
    ("ce", CrossEntropy(), {"dcx::cross_entropy_loss": 1}, ["aten._log_softmax.default", "aten.gather.default"]),
    ("bce", BinaryCrossEntropy(), {"dcx::bce_with_logits_loss": 1}, ["aten.sigmoid.default"]),
    ("mlp", LinearBackward(), {"dcx::linear_backward": 2}, ["aten.mm.default"]),
    ("mlp", LinearForward(), {"dcx::linear": 3}, ["aten.addmm.default", "aten.relu.default"]),  # gx's mm is one too
    ("mlp", ReluMask(), {"dcx::threshold_backward": 1}, ["aten.where.self"]),
    ("conv", ConvBackward(), {"dcx::conv2d_backward": 2}, ["aten.convolution_backward.default", "aten.where.self"]),
    ("conv", ConvForward(), {"dcx::conv2d": 2}, ["aten.convolution.default", "aten.relu.default"]),
    ("conv_bn", ConvBnBackward(), {"dcx::conv2d_bn_backward": 1},
     ["aten.convolution_backward.default", "aten.rsqrt.default", "aten.where.self"]),
    ("conv_bn_frozen", ConvBnForward(), {"dcx::conv2d_bn": 1},  # its backward mask would be read, else
     ["aten.convolution.default", "aten._native_batch_norm_legit_no_training.default", "aten.hardtanh.default"]),
    ("bn", FrozenBatchNormBackward(), {"dcx::batch_norm_frozen_backward": 1}, ["aten.rsqrt.default"]),
    ("conv_bn_batch", ConvBnBatchBackward(), {"dcx::conv2d_bn_batch_stats_backward": 1},
     ["aten.convolution_backward.default", "aten.where.self", "aten.sum.dim_IntList"]),
    ("conv_bn_batch_frozen", ConvBnBatchForward(), {"dcx::conv2d_bn_batch_stats": 1},  # no backward reads the norm
     ["aten.convolution.default", "aten.mean.dim", "aten.rsqrt.default", "aten.hardtanh.default"]),
    ("pool", Pool2d(backward=True), {"dcx::max_pool2d_backward": 1, "dcx::avg_pool2d_backward": 1},
     ["aten.max_pool2d_with_indices_backward.default", "aten.avg_pool2d_backward.default"]),
    ("pool", Pool2d(), {"dcx::max_pool2d": 1, "dcx::avg_pool2d": 1},
     ["aten.max_pool2d_with_indices.default", "aten.avg_pool2d.default"]),
    ("mean", GlobalMean(), {"dcx::avg_pool2d": 1}, ["aten.mean.dim"]),
    ("mean", GlobalMeanBackward(), {"dcx::avg_pool2d_backward": 1}, ["aten.expand.default", "aten.div.Scalar"]),
    ("ln", LayerNormBackward(), {"dcx::layer_norm_backward": 1}, ["aten.div.Tensor", "aten.sum.dim_IntList"]),
    ("emb", EmbeddingBackward(), {"dcx::embedding_backward": 1}, ["aten.index_put.default"]),
]


@pytest.mark.parametrize("name,rule,ops,gone", CASES, ids=[f"{type(c[1]).__name__}-{c[0]}" for c in CASES])
def test_rule_alone_replaces_its_nodes_and_keeps_the_outputs(name, rule, ops, gone):
    joint, ep, report, inputs = _apply(name, rule)
    assert report["ops"] == ops, report
    before, after = _targets(joint), _targets(ep)
    for target in gone:
        assert after.count(target) < before.count(target), (target, after)
    assert {f"dcx.{op.split('::')[1]}.default" for op in ops} <= set(after)
    for i, (want, got) in enumerate(zip(_run(joint, inputs), _run(ep, inputs))):
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5), (i, (got - want).abs().max())


def test_double_transposes_read_their_source():
    joint, ep, report, inputs = _apply("mlp", DoubleTranspose())
    double = lambda g: [n for n in g.nodes if n.op == "call_function" and str(n.target) == "aten.permute.default"  # noqa: E731
                        and str(n.args[0].target) == "aten.permute.default"]
    assert double(joint.graph) and not double(ep.graph) and report["ops"] == {}
    for want, got in zip(_run(joint, inputs), _run(ep, inputs)):
        assert torch.equal(got, want)


DECLINED = [  # program, the rule alone, the stock op it leaves, a word of the reason
    ("ce_nlc", CrossEntropy(), "aten._log_softmax", "[n, classes]"),
    ("bce_2d", BinaryCrossEntropy(), "aten.sigmoid", "over [n] logits"),
    ("mlp64", LinearForward(), "aten.addmm", "float32 x [n, in]"),
    ("mlp64", LinearBackward(), "aten.addmm", "float32 x [n, in]"),
    ("conv_t", ConvForward(), "aten.convolution", "transposed"),
    ("conv_t", ConvBackward(), "aten.convolution_backward", "transposed"),
    ("bn_plain", FrozenBatchNormBackward(), "aten.rsqrt", "without an affine weight"),
    ("pool_ceil", Pool2d(), "aten.max_pool2d_with_indices", "ceil_mode"),
    ("ln_2d", LayerNormBackward(), "aten.native_layer_norm", "for the last dim"),
]


@pytest.mark.parametrize("name,rule,op,reason", DECLINED, ids=[f"{type(c[1]).__name__}-{c[0]}" for c in DECLINED])
def test_rule_declines_what_its_kernel_does_not_take(name, rule, op, reason):
    joint, ep, report, inputs = _apply(name, rule)
    assert report["ops"] == {}
    reasons = [r["reason"] for r in report["left_alone"] if r["op"] == op]
    assert reasons and reason in reasons[0], report["left_alone"]
    assert report["replaced"] == {} and _targets(ep) == _targets(joint)  # nothing changed


def test_every_rule_is_in_one_phase_and_small():
    import inspect

    rules = [type(r) for p in PHASES for r in p.rules]
    tested = {type(c[1]) for c in CASES} | {DoubleTranspose}
    assert set(rules) == tested and len(rules) == len(set(rules)) + 1  # Pool2d: forward and backward
    for cls in set(rules):
        assert cls.__doc__ and len(inspect.getsource(cls).splitlines()) <= 120, cls

"""``split_reductions`` (and TFLite's ``broadcast_binary`` gradient): long multi-dim sums and means become
one-dim chains with the same values, ExecuTorch's portable kernels then sum them closer to float64, and a network
training on batch statistics with AdamW trains as eager PyTorch does in ExecuTorch and TFLite."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import dcx
from dcx.passes import PassContext
from dcx.passes.graph_capture import capture_module
from dcx.passes.split_reductions import SPLIT_ABOVE, SplitReductions

A = torch.ops.aten


class Reductions(nn.Module):
    def forward(self, x: torch.Tensor):
        return x.mean([0, 2, 3]), x.sum((0, 2, 3), keepdim=True), x.mean((2, 3)), x.sum(-1)


def _reduced(ep) -> list[int]:
    """Elements per output value of each multi-dim sum/mean of the graph."""
    return [math.prod(n.args[0].meta["val"].shape[d] for d in n.args[1]) for n in ep.graph.nodes
            if n.target in (A.sum.dim_IntList, A.mean.dim) and len(n.args[1]) > 1]


def _split(module: nn.Module, x: torch.Tensor):
    ep = capture_module(module, (x,))
    ctx = PassContext(program=None, options=None, format="test")
    return ep, SplitReductions().run(ep, ctx), ctx


def test_long_reductions_become_one_dim_chains_with_the_same_values():
    x = torch.randn(8, 4, 32, 32)  # 8192 values per channel; 1024 per (sample, channel)
    before = _reduced(capture_module(Reductions(), (x,)))
    ep, after, ctx = _split(Reductions(), x)
    assert sorted(before) == [1024, 8192, 8192] and _reduced(after) == [1024]  # at SPLIT_ABOVE: left alone
    assert 1024 == SPLIT_ABOVE and ctx.records[0].changes == {"reductions": 2}
    for got, want in zip(after.module()(x), Reductions()(x)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _portable_mean(module: nn.Module, x: torch.Tensor, split: bool) -> np.ndarray:
    from executorch.exir import to_edge
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    ep = capture_module(module, (x,))
    if split:
        ep = SplitReductions().run(ep, PassContext(program=None, options=None, format="executorch"))
    buffer = to_edge(ep).to_executorch().buffer  # the loaded program reads it: keep it alive while it runs
    program = _load_for_executorch_from_buffer(buffer)
    return program.forward((x,))[0].numpy().copy()


class ChannelMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean([0, 2, 3])


def test_the_portable_kernels_sum_closer_to_float64_after_the_pass():
    g = torch.Generator().manual_seed(0)
    x = 1.0 + 1e-3 * torch.randn(8, 4, 64, 64, generator=g)  # a batch norm's statistics: 32768 values each
    exact = x.double().mean([0, 2, 3]).numpy()
    plain = np.abs(_portable_mean(ChannelMean(), x, split=False) - exact).max()
    split = np.abs(_portable_mean(ChannelMean(), x, split=True) - exact).max()
    assert split < 1e-6 < plain and split < plain / 10, (plain, split)


class BatchStatisticsNet(nn.Module):
    """Convolutions on batch statistics (train() mode) with hardswish: where the long reductions decide."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.Hardswish(),
                                      nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8),
                                      nn.Hardswish(), nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.head(self.features(x).mean((2, 3))), y)


@pytest.mark.parametrize("fmt, fast_training", [("executorch", False), ("executorch", True), ("tflite", True)])
def test_a_batch_statistics_network_trains_with_adamw_as_eager_does(tmp_path, fmt, fast_training):
    """Without the pass, stock ExecuTorch's weights came 2.7e-5 from eager's (tolerance 1e-5); without
    ``broadcast_binary``'s gradient, TFLite's 2.4e-5; with them, both 1.2e-6."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 48, 48, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(5)]
    program = dcx.training_program("bn.train", BatchStatisticsNet().train(), batches[0], ("image", "label"),
                                   optimizer=dcx.optim.AdamW(lr=1e-3, weight_decay=0.01), batches=batches)
    summary = dcx.export_programs([program], tmp_path, [fmt], force=True, reference_steps=5,
                                  fast_training=fast_training)
    (entry,) = summary.written
    assert next(p.changes for p in entry.passes if p.name == "split_reductions")["reductions"] > 0
    rows = dcx.verify(tmp_path)
    assert [(r.check, r.error, r.tolerance) for r in rows if r.verdict == "FAIL"] == []
    assert {r.check for r in rows if r.verdict == "pass"} >= {"train_5_steps_loss", "train_5_steps_weights"}


def test_tflite_broadcast_gradient_sums_one_axis_at_a_time():
    import tensorflow as tf

    from dcx.backends.tflite.passes.tf_builtin_gradients import broadcast_binary

    g = np.random.default_rng(0)
    a = tf.constant(g.standard_normal((8, 4, 16, 16)), tf.float32)
    b = tf.constant(g.standard_normal((1, 4, 1, 1)), tf.float32)
    for op, plain in (("add", tf.add), ("sub", tf.subtract), ("mul", tf.multiply)):
        grads = []
        for f in (lambda x, y: broadcast_binary(op, x, y), plain):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                y = f(a, b)
                loss = tf.reduce_sum(y * y)
            grads.append((y, *tape.gradient(loss, [a, b])))
        for got, want in zip(*grads):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
        assert grads[0][2].shape == b.shape

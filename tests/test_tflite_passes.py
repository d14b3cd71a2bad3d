"""Unit tests of the TFLite export passes, one at a time (litert-torch style).

- aten_to_tf: every ATen builder against the PyTorch op it lowers, and the
  refusals (unequal depthwise strides, dilation, partial pooling windows) by name;
- tf_builtin_gradients: every custom gradient against PyTorch autograd (depthwise
  and grouped convolutions, batch norm with frozen statistics, ReLU6/clamp and
  hardswish at their kinks, average and max pooling with ties), and the gradient
  graphs convert with TFLITE_BUILTINS only and run in LiteRT (TF's own ones do not);
- tf_signatures: the train/infer/save/restore functions of a tiny program, run in TF;
- dcx.backends.tflite.spec: reading operator codes, rejecting Flex ops.
"""

from __future__ import annotations

import operator
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tensorflow as tf  # noqa: E402  (installed by the set-up)

from dcx.errors import DcxError  # noqa: E402
from dcx.backends.tflite.passes import aten_to_tf  # noqa: E402
from dcx.backends.tflite.passes import tf_builtin_gradients as bg  # noqa: E402
from dcx.backends.tflite.passes.aten_to_tf import ATEN_TO_TF, lower_aten_to_tf, lower_op  # noqa: E402
from dcx.backends.tflite.spec import (  # noqa: E402
    check_builtin_ops_only, non_builtin_ops, operator_codes, operator_histogram)
from dcx.backends.tflite.passes.tf_signatures import build_tf_signatures  # noqa: E402
from dcx.optim import SGD  # noqa: E402
from dcx.programs import DeviceProgram  # noqa: E402

aten = torch.ops.aten
g = torch.Generator().manual_seed(0)


def rand(*shape, low=-1.0, high=1.0):
    return torch.rand(*shape, generator=g) * (high - low) + low


def to_tf(x):
    if isinstance(x, torch.Tensor):
        return tf.constant(x.numpy())
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return [to_tf(t) for t in x]
    return x


def close(tf_out, torch_out, atol=1e-5):
    if isinstance(torch_out, (tuple, list)):
        assert len(tf_out) == len(torch_out)
        for a, b in zip(tf_out, torch_out):
            close(a, b, atol)
        return
    a = np.asarray(tf_out)
    b = torch_out.detach().numpy() if isinstance(torch_out, torch.Tensor) else np.asarray(torch_out)
    assert a.shape == b.shape, (a.shape, b.shape)
    if b.dtype == np.bool_ or np.issubdtype(b.dtype, np.integer):
        assert a.dtype == b.dtype, (a.dtype, b.dtype)
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)


# ---------------------------------------------------------------- aten_to_tf: op by op

x34, x234 = rand(3, 4), rand(2, 3, 4)
labels = torch.tensor([3, -100, 0, 9, 2])
OP_CASES = [
    (aten.convolution.default, (rand(2, 3, 9, 9), rand(4, 3, 3, 3), rand(4), [2, 2], [1, 1], [1, 1], False, [0, 0], 1)),
    (aten.convolution.default, (rand(2, 3, 8, 7), rand(5, 3, 2, 3), None, [1, 2], [0, 1], [1, 1], False, [0, 0], 1)),
    (aten.convolution.default, (rand(2, 4, 9, 9), rand(4, 1, 3, 3), rand(4), [2, 2], [1, 1], [1, 1], False, [0, 0], 4)),
    (aten.convolution.default, (rand(2, 3, 8, 7), rand(6, 1, 3, 3), None, [1, 1], [1, 0], [1, 1], False, [0, 0], 3)),
    (aten.convolution.default, (rand(2, 4, 8, 7), rand(6, 2, 3, 3), rand(6), [1, 2], [0, 1], [1, 1], False, [0, 0], 2)),
    (aten._native_batch_norm_legit_no_training.default,
     (rand(2, 4, 3, 3), rand(4), rand(4), rand(4), rand(4, low=0.5, high=2), 0.1, 1e-5)),
    (aten._native_batch_norm_legit_no_training.default, (rand(3, 4), None, None, rand(4), rand(4, low=0.5), 0.1, 1e-3)),
    (aten.hardtanh.default, (rand(3, 4, low=-2, high=8), 0.0, 6.0)),
    (aten.hardtanh.default, (rand(3, 4, low=-2, high=2),)),
    (aten.clamp.default, (rand(3, 4, low=-2, high=8), 0)),
    (aten.clamp.default, (rand(3, 4, low=-2, high=8), None, 6)),
    (aten.clamp.default, (rand(3, 4, low=-2, high=8), -1.0, 1.0)),
    (aten.avg_pool2d.default, (rand(2, 3, 8, 8), [2, 2])),
    (aten.avg_pool2d.default, (rand(2, 3, 9, 9), [3, 3], [2, 2], [1, 1])),
    (aten.max_pool2d_with_indices.default, (rand(2, 3, 8, 8), [2, 2], [2, 2])),
    (aten.max_pool2d_with_indices.default, (rand(2, 3, 9, 9), [3, 3], [2, 2], [1, 1])),
    (aten.addmm.default, (rand(5), rand(3, 4), rand(4, 5))),
    (aten.mm.default, (rand(3, 4), rand(4, 5))),
    (aten.bmm.default, (rand(4, 3, 16), rand(4, 16, 16))),
    (aten.view.default, (x234, [4, -1])),
    (aten._unsafe_view.default, (x234, [6, 4])),
    (aten.reshape.default, (x234, [-1])),
    (aten.permute.default, (x234, [2, 0, 1])),
    (aten.t.default, (x34,)),
    (aten.unsqueeze.default, (x34, -1)),
    (aten.squeeze.dims, (rand(3, 1, 4, 1), [1, 2, -1])),
    (aten.squeeze.dim, (rand(3, 1), 1)),
    (aten.squeeze.default, (rand(1, 3, 1),)),
    (aten.expand.default, (rand(1, 16), [32, -1])),
    (aten.expand.default, (rand(3, 1), [2, 3, 4])),
    (aten.cat.default, ([rand(2, 3), rand(2, 5)], 1)),
    (aten.slice.Tensor, (x234, 2, 1, -1)),
    (aten.slice.Tensor, (x234, 0, 0, 9223372036854775807)),
    (aten.select.int, (x234, 1, -1)),
    (aten.split_with_sizes.default, (rand(2, 12), [4, 4, 4], 1)),
    (aten.split_with_sizes_copy.default, (x234, [1, 2], -2)),
    (aten.constant_pad_nd.default, (rand(2, 3, 5, 4), [0, 1, 1, 2])),
    (aten.constant_pad_nd.default, (x234, [2, 0], -1.5)),
    (aten.clone.default, (x34,)),
    (aten.alias.default, (x34,)),
    (aten.lift_fresh_copy.default, (x34,)),
    (aten._to_copy.default, (torch.tensor([1, 2, 3]),), {"dtype": torch.float32}),
    (aten.scalar_tensor.default, (0,), {"dtype": torch.int64}),
    (aten.full.default, ([2, 3], 0.5), {"dtype": torch.float32}),
    (aten.full_like.default, (x34, 0)),
    (aten.full_like.default, (x34, float("-inf"))),
    (aten.arange.start_step, (0, 8)),
    (aten.arange.start_step, (1, 8, 3), {"dtype": torch.float32}),
    (aten.add.Tensor, (x34, rand(4)), {"alpha": 2}),
    (aten.add.Scalar, (x34, 3)),
    (aten.sub.Tensor, (1, x34)),
    (aten.sub.Scalar, (x34, 0.5)),
    (aten.rsub.Scalar, (x34, 2.0)),
    (aten.mul.Tensor, (x34, rand(3, 1))),
    (aten.mul.Scalar, (x34, -2.0)),
    (aten.div.Tensor, (x34, 4.0)),
    (aten.div.Tensor, (torch.tensor(7), torch.tensor(2))),
    (aten.div.Scalar, (x34, 3)),
    (aten.neg.default, (x34,)),
    (aten.abs.default, (x34,)),
    (aten.exp.default, (x34,)),
    (aten.log.default, (rand(3, 4, low=0.1, high=2),)),
    (aten.log1p.default, (rand(3, 4, low=0.0, high=1.0),)),
    (aten.sqrt.default, (rand(3, 4, low=0.1, high=2),)),
    (aten.rsqrt.default, (rand(3, 4, low=0.1, high=2),)),
    (aten.relu.default, (x34,)),
    (aten.sigmoid.default, (x34,)),
    (aten.tanh.default, (x34,)),
    (aten.gelu.default, (rand(3, 4, low=-4, high=4),)),
    (aten.gelu.default, (rand(3, 4, low=-4, high=4),), {"approximate": "tanh"}),
    (aten.logical_not.default, (x34 > 0,)),
    (aten.logical_and.default, (x34 > 0, x34 < 0.5)),
    (aten.minimum.default, (torch.tensor(0.0), x34)),
    (aten.maximum.default, (x34, rand(3, 4))),
    (aten.pow.Tensor_Scalar, (x34, 2)),
    (aten.pow.Tensor_Scalar, (rand(3, 4, low=0.1, high=2), 1.5)),
    (aten.where.self, (labels != -100, labels, torch.tensor(0))),
    (aten.ne.Scalar, (labels, -100)),
    (aten.ne.Tensor, (x34, x34.flip(0))),
    (aten.eq.Scalar, (labels, 0)),
    (aten.eq.Tensor, (labels, labels.flip(0))),
    (aten.gt.Scalar, (x34, 0.0)),
    (aten.gt.Tensor, (x34, rand(3, 4))),
    (aten.ge.Scalar, (x34, 0.0)),
    (aten.ge.Tensor, (x34, rand(3, 4))),
    (aten.lt.Scalar, (x34, 0.0)),
    (aten.lt.Tensor, (x34, rand(3, 4))),
    (aten.le.Scalar, (x34, 0.0)),
    (aten.le.Tensor, (x34, rand(3, 4))),
    (aten.sum.dim_IntList, (labels != -100, [])),
    (aten.sum.dim_IntList, (x234, [0, -1], True)),
    (aten.sum.default, (x234,)),
    (aten.mean.dim, (x234, [-1])),
    (aten.mean.default, (x234,)),
    (aten.amax.default, (x234, [1])),
    (aten.any.dim, (x234 > 0.9, -1, True)),
    (aten.any.dims, (x234 > 0.9, [0, 2])),
    (aten.any.default, (x34,)),
    (aten._softmax.default, (x234, -1, False)),
    (aten._log_softmax.default, (x34, 1, False)),
    (aten.native_layer_norm.default, (rand(2, 64), [64], rand(64), rand(64), 1e-5)),
    (aten.embedding.default, (rand(10, 4), torch.tensor([3, 3, 0, 9], dtype=torch.int32))),
    (aten.gather.default, (torch.log_softmax(rand(5, 10), 1), 1, labels.clamp(min=0).unsqueeze(1))),
    (aten.gather.default, (rand(4, 3), 0, torch.tensor([[3, 0, 1], [2, 2, 0]]))),
]


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: str(c[0]))
def test_aten_builder_matches_torch(case):
    target, args, kwargs = (*case, {}) if len(case) == 2 else case
    expected = target(*args, **kwargs)
    got = lower_op(target, *[to_tf(a) for a in args], **kwargs)
    if isinstance(got, tuple):  # outputs without a lowering (max-pool indices) are None
        got, expected = zip(*[(a, b) for a, b in zip(got, expected) if a is not None])
    close(got, expected)


@pytest.mark.parametrize("target,args,match", [
    (aten.convolution.default, (rand(1, 4, 9, 9), rand(4, 1, 3, 3), None, [2, 1], [0, 0], [1, 1], False, [0, 0], 4),
     "equal strides"),
    (aten.convolution.default, (rand(1, 2, 9, 9), rand(2, 2, 3, 3), None, [1, 1], [0, 0], [2, 2], False, [0, 0], 1),
     "dilation"),
    (aten.avg_pool2d.default, (rand(1, 2, 8, 8), [3, 3], [2, 2], [1, 1], False, False), "count_include_pad"),
    (aten.avg_pool2d.default, (rand(1, 2, 8, 8), [3, 3], [2, 2], [0, 0], True), "ceil_mode"),
    (aten.max_pool2d_with_indices.default, (rand(1, 2, 8, 8), [2, 2], [2, 2], [0, 0], [2, 2]), "dilation"),
    (aten.constant_pad_nd.default, (rand(1, 2, 8, 8), [1, -1]), "negative padding"),
], ids=["depthwise-strides", "conv-dilation", "avg-count-include-pad", "avg-ceil-mode", "max-dilation", "pad-crop"])
def test_aten_builder_refuses_by_name(target, args, match):
    with pytest.raises(DcxError, match=match) as err:
        lower_op(target, *[to_tf(a) for a in args])
    assert "\n" not in str(err.value)


def test_max_pool_indices_are_refused_when_used():
    """The graph never asks for them after ``max_pool2d``; if it does, the error names what has no lowering."""
    out = lower_op(aten.max_pool2d_with_indices.default, to_tf(rand(1, 2, 4, 4)), [2, 2])
    with pytest.raises(DcxError, match="indices"):
        lower_op(operator.getitem, out, 1)


def test_every_builder_has_a_case():
    tested = {c[0] for c in OP_CASES} | {operator.getitem}
    assert set(ATEN_TO_TF) <= tested, sorted(map(str, set(ATEN_TO_TF) - tested))


def test_lowering_rejects_unknown_ops_by_name():
    class CumSum(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 0)

    ep = torch.export.export(CumSum(), (rand(3),)).run_decompositions()
    with pytest.raises(DcxError, match="cumsum"):
        lower_aten_to_tf(ep)


def test_lowered_graph_matches_module():
    """The graph interpreter: state placeholders by PyTorch name, user inputs in order, tuple outputs."""

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.register_buffer("shift", torch.arange(3.0))

        def forward(self, x, y):
            h = self.fc(x) + self.shift
            return F.layer_norm(h, (3,)), (h * y).sum(1)

    m = Two().eval()
    x, y = rand(2, 4), rand(2, 3)
    graph = lower_aten_to_tf(torch.export.export(m, (x, y)).run_decompositions())
    state = {n: tf.constant(t.detach().numpy()) for n, t in [*m.named_parameters(), *m.named_buffers()]}
    close(graph(state, to_tf(x), to_tf(y)), m(x, y))


# ---------------------------------------------------------------- tf_builtin_gradients

def tf_grads(fn, *tensors, upstream=None):
    vs = [tf.Variable(t.numpy()) for t in tensors]
    with tf.GradientTape() as tape:
        y = fn(*vs)
        loss = tf.reduce_sum(y * upstream) if upstream is not None else tf.reduce_sum(y)
    return y, tape.gradient(loss, vs)


def torch_grads(fn, *tensors, upstream=None):
    ts = [t.clone().requires_grad_(True) for t in tensors]
    y = fn(*ts)
    loss = (y * upstream).sum() if upstream is not None else y.sum()
    return y, torch.autograd.grad(loss, ts)


UNARY = [
    (bg.relu, torch.relu, torch.tensor([[-1.0, 0.0, 2.0], [0.5, -0.0, -3.0]])),
    (bg.sigmoid, torch.sigmoid, rand(3, 4, low=-4, high=4)),
    (bg.tanh, torch.tanh, rand(3, 4, low=-3, high=3)),
    (bg.rsqrt, torch.rsqrt, rand(3, 4, low=0.1, high=3)),
    (bg.sqrt, torch.sqrt, rand(3, 4, low=0.1, high=3)),
    (bg.log1p, torch.log1p, rand(3, 4, low=0.0, high=1.0)),
    (partial(bg.gelu, approximate="none"), F.gelu,  # and near 0, where the gradient reads Phi(x) off its series
     torch.cat([rand(3, 4, low=-6, high=6), rand(3, 4, low=-2e-3, high=2e-3),
                torch.tensor([[0.0, -0.0, 1e-30, -1e-30]])])),
    (partial(bg.gelu, approximate="tanh"), partial(F.gelu, approximate="tanh"), rand(3, 4, low=-6, high=6)),
]


@pytest.mark.parametrize("tf_fn,torch_fn,x", UNARY, ids=lambda v: getattr(v, "__name__", ""))
def test_unary_gradient_matches_torch(tf_fn, torch_fn, x):
    up = rand(*x.shape)
    (y, (gx,)), (ty, (tgx,)) = tf_grads(tf_fn, x, upstream=to_tf(up)), torch_grads(torch_fn, x, upstream=up)
    close(y, ty)
    close(gx, tgx)


def test_pad_and_split_gradients_match_torch():
    """TensorFlow's "same" padding (EfficientNet-Lite) and a GRU's gate chunks train through builtin ops."""
    x, up = rand(2, 3, 5, 4), rand(2, 3, 8, 5)

    def tf_fn(x):
        a, b = lower_op(aten.split_with_sizes.default, x, [1, 2], 1)
        return tf.concat([lower_op(aten.constant_pad_nd.default, a * 2.0, [0, 1, 1, 2]),
                          lower_op(aten.constant_pad_nd.default, b, [0, 1, 1, 2], 0.5)], 1)

    def torch_fn(x):
        a, b = torch.split(x, [1, 2], 1)
        return torch.cat([F.pad(a * 2.0, [0, 1, 1, 2]), F.pad(b, [0, 1, 1, 2], value=0.5)], 1)

    (y, (gx,)), (ty, (tgx,)) = tf_grads(tf_fn, x, upstream=to_tf(up)), torch_grads(torch_fn, x, upstream=up)
    close(y, ty)
    close(gx, tgx)


@pytest.mark.parametrize("n,c,h,w,o,k,stride", [
    (4, 1, 30, 30, 4, 3, (2, 2)),  # DC-CCL's conv1 after padding: (H - k) % stride != 0
    (3, 2, 7, 9, 5, 3, (1, 1)),
    (2, 3, 11, 8, 2, 2, (3, 2)),
])
def test_conv2d_gradients_match_torch(n, c, h, w, o, k, stride):
    x, wt = rand(n, c, h, w), rand(o, c, k, k)
    up = rand(*F.conv2d(x, wt, stride=stride).shape)

    def tf_conv(x, w):
        return tf.transpose(bg.conv2d(tf.transpose(x, [0, 2, 3, 1]), tf.transpose(w, [2, 3, 1, 0]), stride),
                            [0, 3, 1, 2])

    (y, (gx, gw)) = tf_grads(tf_conv, x, wt, upstream=to_tf(up))
    (ty, (tgx, tgw)) = torch_grads(lambda x, w: F.conv2d(x, w, stride=stride), x, wt, upstream=up)
    close(y, ty)
    close(gx, tgx)
    close(gw, tgw, atol=2e-5)


@pytest.mark.parametrize("n,c,h,w,cout,groups,k,stride,pad", [
    (2, 4, 9, 9, 4, 4, 3, 2, 1),  # MobileNet's stride-2 depthwise
    (2, 3, 10, 10, 3, 3, 3, 2, 0),  # (H - k) % stride != 0: the last row gets no gradient
    (3, 3, 8, 7, 6, 3, 3, 1, 1),  # depthwise with channel multiplier 2
    (2, 2, 11, 11, 2, 2, 5, 2, 2),
    (2, 4, 8, 7, 6, 2, 3, 1, 1),  # grouped, not depthwise
])
def test_grouped_and_depthwise_conv_gradients_match_torch(n, c, h, w, cout, groups, k, stride, pad):
    x, wt, b = rand(n, c, h, w), rand(cout, c // groups, k, k), rand(cout)
    conv_args = ([stride] * 2, [pad] * 2, [1, 1], False, [0, 0], groups)
    up = rand(*aten.convolution.default(x, wt, b, *conv_args).shape)
    y, grads = tf_grads(lambda x, w, b: lower_op(aten.convolution.default, x, w, b, *conv_args), x, wt, b,
                        upstream=to_tf(up))
    ty, tgrads = torch_grads(lambda x, w, b: aten.convolution.default(x, w, b, *conv_args), x, wt, b, upstream=up)
    close(y, ty)
    for got, expected in zip(grads, tgrads):
        close(got, expected, atol=2e-5)


def test_depthwise_filter_gradient_in_channel_slices_matches_torch(monkeypatch):
    """The filter gradient folds the batch into the channels; past LiteRT's row buffer it is computed in slices
    (here 5 output channels a slice: 12 = 5 + 5 + 2, multiplier 1 and 2)."""
    monkeypatch.setattr(bg, "LITERT_DEPTHWISE_MAX_OUTPUT_CHANNELS", 5)
    test_grouped_and_depthwise_conv_gradients_match_torch(3, 4, 9, 9, 4, 4, 3, 2, 1)
    test_grouped_and_depthwise_conv_gradients_match_torch(3, 3, 8, 7, 6, 3, 3, 1, 1)


LITERT_WIDE_DEPTHWISE = """
import sys, torch, dcx
from torch import nn

class Wide(nn.Module):  # a depthwise layer of 1250 channels at batch 4: 5000 folded channels
    def __init__(self):
        super().__init__()
        self.dw, self.fc = nn.Conv2d(1250, 1250, 3, groups=1250), nn.Linear(1250, 2)

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.fc(self.dw(x).mean((2, 3))), y)

batches = [(torch.randn(4, 1250, 4, 4), torch.tensor([0, 1, 1, 0])) for _ in range(2)]
program = dcx.training_program("wide.train", Wide(), batches[0], ("x", "y"), lr=0.1, batches=batches)
dcx.export_programs([program], sys.argv[1], ["tflite"], reference_steps=2)
print(sorted({r.verdict for r in dcx.verify(sys.argv[1])}))
"""


def test_litert_trains_a_depthwise_layer_wider_than_its_row_buffer(tmp_path):
    """Folded into one depthwise convolution of 5000 channels, LiteRT's kernel never returns (its loop steps by
    4832 // channels = 0); in slices, the training step returns and verifies."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", LITERT_WIDE_DEPTHWISE, str(tmp_path / "out")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "['pass']", r.stdout[-2000:]


def test_batch_norm_inference_gradients_match_torch():
    """Frozen statistics make batch norm a per-channel affine map: dx = g * scale, and scale and shift train."""
    x, wt, b, mean, var = rand(2, 4, 3, 3), rand(4), rand(4), rand(4), rand(4, low=0.5, high=2)
    up = rand(2, 4, 3, 3)
    y, grads = tf_grads(lambda x, w, b: lower_op(aten._native_batch_norm_legit_no_training.default, x, w, b,
                                                 to_tf(mean), to_tf(var), 0.1, 1e-5)[0], x, wt, b, upstream=to_tf(up))
    ty, tgrads = torch_grads(lambda x, w, b: F.batch_norm(x, mean, var, w, b, training=False, eps=1e-5), x, wt, b,
                             upstream=up)
    close(y, ty)
    for got, expected in zip(grads, tgrads):
        close(got, expected)


KINKS = torch.tensor([[-4.0, -3.0, -1.0, 0.0, 1.0, 2.5, 3.0, 5.0, 6.0, 7.0]])


@pytest.mark.parametrize("target,args,torch_fn", [
    (aten.hardtanh.default, (0.0, 6.0), F.relu6),
    (aten.clamp.default, (0.0, 6.0), lambda x: torch.clamp(x, 0.0, 6.0)),
    (aten.clamp.default, (None, 6.0), lambda x: torch.clamp(x, max=6.0)),
    (aten.clamp.default, (-3.0,), lambda x: torch.clamp(x, min=-3.0)),
], ids=["relu6", "clamp", "clamp-max", "clamp-min"])
def test_clamp_gradients_match_torch_at_the_bounds(target, args, torch_fn):
    """ReLU6 (hardtanh) passes the gradient strictly inside its bounds, clamp on them too: as PyTorch does."""
    up = rand(*KINKS.shape)
    y, (gx,) = tf_grads(lambda x: lower_op(target, x, *args), KINKS, upstream=to_tf(up))
    ty, (tgx,) = torch_grads(torch_fn, KINKS, upstream=up)
    close(y, ty)
    close(gx, tgx)


def test_hardswish_lowers_through_its_decomposition():
    """Core ATen turns hardswish into x * clamp(x + 3, 0, 6) / 6; value and gradient match PyTorch's except at
    exactly x = +-3, where eager PyTorch's hardswish_backward and its own decomposition differ."""

    class HardSwish(nn.Module):
        def forward(self, x):
            return F.hardswish(x)

    graph = lower_aten_to_tf(torch.export.export(HardSwish(), (KINKS,)).run_decompositions())
    up = rand(*KINKS.shape)
    y, (gx,) = tf_grads(lambda x: graph({}, x)[0], KINKS, upstream=to_tf(up))
    ty, (tgx,) = torch_grads(F.hardswish, KINKS, upstream=up)
    close(y, ty)
    away = (KINKS.abs() != 3).numpy()
    close(np.asarray(gx)[away], tgx[torch.from_numpy(away)])


POOL_CASES = [
    (aten.avg_pool2d.default, ([2, 2],), rand(2, 3, 8, 8)),
    (aten.avg_pool2d.default, ([3, 3], [2, 2], [1, 1]), rand(2, 3, 9, 9)),
    # values in {0, 1, 2}: most windows hold ties, and each must send its gradient to its first maximum only
    (aten.max_pool2d_with_indices.default, ([2, 2], [2, 2]), torch.randint(0, 3, (2, 3, 8, 8), generator=g).float()),
    (aten.max_pool2d_with_indices.default, ([3, 3], [2, 2], [1, 1]),
     torch.randint(0, 3, (2, 3, 9, 9), generator=g).float()),
    (aten.max_pool2d_with_indices.default, ([3, 3], [1, 1], [1, 1]), rand(1, 2, 6, 6)),
]


def _pooled(op, *args):
    """max_pool2d_with_indices returns (values, indices): the values."""
    out = op(*args)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("target,args,x", POOL_CASES, ids=["avg", "avg-padded", "max-ties", "max-overlap-ties",
                                                            "max-stride-1"])
def test_pooling_gradients_match_torch(target, args, x):
    up = rand(*_pooled(target, x, *args).shape)
    y, (gx,) = tf_grads(lambda v: _pooled(partial(lower_op, target), v, *args), x, upstream=to_tf(up))
    ty, (tgx,) = torch_grads(lambda v: _pooled(target, v, *args), x, upstream=up)
    close(y, ty)
    close(gx, tgx)


def test_gather_rows_gradient_sums_repeated_rows():
    table, idx = rand(6, 3), torch.tensor([[1, 1], [5, 0]], dtype=torch.int32)
    up = rand(2, 2, 3)
    (y, (gt,)) = tf_grads(lambda t: bg.gather_rows(t, to_tf(idx)), table, upstream=to_tf(up))
    (ty, (tgt,)) = torch_grads(lambda t: F.embedding(idx, t), table, upstream=up)
    close(y, ty)
    close(gt, tgt)


@pytest.mark.parametrize("shape,target", [((1, 16), [32, 16]), ((3, 1), [2, 3, 4])])
def test_broadcast_to_gradient_reduces_broadcast_axes(shape, target):
    x = rand(*shape)
    up = rand(*target)
    (y, (gx,)) = tf_grads(lambda v: bg.broadcast_to(v, target), x, upstream=to_tf(up))
    (ty, (tgx,)) = torch_grads(lambda v: v.expand(*target), x, upstream=up)
    close(y, ty)
    close(gx, tgx)


@pytest.mark.parametrize("dim,start,end,step", [(0, 1, 2, 1), (1, 0, 7, 2), (1, 2, 9223372036854775807, 3),
                                                  (-1, 1, -1, 1), (1, 5, 5, 1)])
def test_slice_gradient_puts_the_gradient_back_in_place(dim, start, end, step):
    """The lowered ``aten.slice`` differentiates without StridedSliceGrad (a Flex op), as PyTorch does."""
    x = rand(3, 7, 4)
    up = rand(*aten.slice.Tensor(x, dim, start, end, step).shape)
    (y, (gx,)) = tf_grads(lambda v: lower_op(aten.slice.Tensor, v, dim, start, end, step), x, upstream=to_tf(up))
    (ty, (tgx,)) = torch_grads(lambda v: aten.slice.Tensor(v, dim, start, end, step), x, upstream=up)
    close(y, ty)
    close(gx, tgx)


def _convert(fn, specs, builtins_only=True):
    cf = tf.function(fn, input_signature=specs).get_concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf])
    conv.target_spec.supported_ops = ([tf.lite.OpsSet.TFLITE_BUILTINS] if builtins_only else
                                      [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS])
    return conv.convert()


def _conv_relu_grads(conv, relu):
    def fn(x, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            y = tf.reduce_sum(relu(conv(x, w, (2, 2))))
        return tape.gradient(y, w)

    return fn


def _tf_conv(x, w, s):
    return tf.nn.conv2d(x, w, [1, *s, 1], "VALID")


CONV_SPECS = [tf.TensorSpec([2, 9, 9, 3], tf.float32), tf.TensorSpec([3, 3, 3, 4], tf.float32)]


def test_builtin_gradients_convert_with_builtins_only():
    model = _convert(_conv_relu_grads(bg.conv2d, bg.relu), CONV_SPECS)
    assert non_builtin_ops(model) == []
    assert {"CONV_2D", "TRANSPOSE"} <= set(operator_histogram(model))


def test_tf_own_gradients_are_not_builtins():
    """Why the pass exists: TF's ReluGrad / Conv2DBackpropFilter are Flex ops."""
    with pytest.raises(Exception, match="ReluGrad|Conv2DBackpropFilter"):
        _convert(_conv_relu_grads(_tf_conv, tf.nn.relu), CONV_SPECS)


def _mobile_block_grads(lower):
    """Gradients of sum(y^2) for y = avgpool(maxpool(relu6(BN(depthwise conv(x))))), NCHW, via ``lower(op, ...)``."""
    mean, var = np.linspace(-0.5, 0.5, 4, dtype=np.float32), np.linspace(0.5, 2.0, 4, dtype=np.float32)

    def fn(x, w, gamma):
        y = lower(aten.convolution.default, x, w, None, [2, 2], [1, 1], [1, 1], False, [0, 0], 4)
        y = lower(aten._native_batch_norm_legit_no_training.default, y, gamma, None, mean, var, 0.1, 1e-5)[0]
        y = lower(aten.hardtanh.default, y, 0.0, 6.0)
        y = lower(aten.max_pool2d_with_indices.default, y, [3, 3], [2, 2], [1, 1])[0]
        return lower(aten.avg_pool2d.default, y, [2, 2]), y

    return fn


MOBILE_SPECS = [tf.TensorSpec([2, 4, 16, 16], tf.float32), tf.TensorSpec([4, 1, 3, 3], tf.float32),
                tf.TensorSpec([4], tf.float32)]


def _tf_mobile_block_grads(x, w, gamma):
    consts = lambda *a: [tf.constant(v) if isinstance(v, np.ndarray) else v for v in a]  # noqa: E731
    with tf.GradientTape() as tape:
        tape.watch([x, w, gamma])
        y, _ = _mobile_block_grads(lambda op, *a: lower_op(op, *consts(*a)))(x, w, gamma)
        loss = tf.reduce_sum(y * y)
    return tape.gradient(loss, [x, w, gamma])


def test_mobile_block_gradients_are_builtins_and_run_in_litert():
    """Depthwise conv, BN, ReLU6, max and average pooling: the gradient graph converts with TFLITE_BUILTINS only,
    and LiteRT computes PyTorch's gradients."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = _convert(_tf_mobile_block_grads, MOBILE_SPECS)
    assert non_builtin_ops(model) == []
    ops = set(operator_histogram(model))
    assert {"DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "ARG_MAX", "ONE_HOT"} <= ops
    x, w, gamma = rand(2, 4, 16, 16), rand(4, 1, 3, 3), rand(4)
    interp = Interpreter(model_content=model,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    for detail, value in zip(interp.get_input_details(), (x, w, gamma)):
        interp.set_tensor(detail["index"], value.numpy())
    interp.invoke()
    got = [interp.get_tensor(d["index"]) for d in interp.get_output_details()]
    ts = [t.clone().requires_grad_(True) for t in (x, w, gamma)]
    y, _ = _mobile_block_grads(lambda op, *a: op(*[torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                                                   for v in a]))(*ts)
    expected = torch.autograd.grad((y * y).sum(), ts)
    assert sorted(g.shape for g in got) == sorted(tuple(e.shape) for e in expected)
    for e in expected:  # LiteRT does not keep the output order: match by shape
        close(next(g for g in got if g.shape == tuple(e.shape)), e, atol=1e-4)


def test_tf_own_mobile_gradients_are_not_builtins():
    """Why those gradients are custom: TF's own ones are Flex ops."""

    def fn(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = tf.nn.relu6(tf.nn.depthwise_conv2d(x, w, [1, 2, 2, 1], "VALID"))
            y = tf.nn.avg_pool2d(tf.nn.max_pool2d(y, 3, 2, "VALID"), 2, 2, "VALID")
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, w])

    with pytest.raises(Exception) as err:
        _convert(fn, [tf.TensorSpec([2, 33, 33, 4], tf.float32), tf.TensorSpec([3, 3, 4, 1], tf.float32)])
    for op in ("DepthwiseConv2dNativeBackpropFilter", "DepthwiseConv2dNativeBackpropInput", "MaxPoolGrad",
               "AvgPoolGrad", "Relu6Grad"):
        assert op in str(err.value)


# ---------------------------------------------------------------- dcx.backends.tflite.spec

@pytest.fixture(scope="module")
def flex_model() -> bytes:
    """A model that needs the Flex delegate: TF's own ReLU gradient."""
    return _convert(_conv_relu_grads(bg.conv2d, tf.nn.relu), CONV_SPECS, builtins_only=False)


def test_operator_codes_of_a_builtin_model():
    model = _convert(lambda x: tf.nn.relu(x) * 2.0, [tf.TensorSpec([3], tf.float32)])
    assert all(builtin for _, builtin in operator_codes(model))
    assert operator_histogram(model)["MUL"] + operator_histogram(model)["RELU"] >= 1
    check_builtin_ops_only(model)  # no error


def test_builtin_only_check_rejects_flex(flex_model):
    assert non_builtin_ops(flex_model) == ["FlexReluGrad"]
    with pytest.raises(DcxError, match=r"some/where\.tflite.*FlexReluGrad"):
        check_builtin_ops_only(flex_model, "some/where.tflite")


# ---------------------------------------------------------------- tf_signatures

class _TinyLoss(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.frozen = nn.Linear(5, 4).requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))

    def forward(self, x, y):
        return F.cross_entropy(self.head(torch.relu(self.frozen(x))), y)


def _tiny_program():
    x, y = rand(8, 5), torch.randint(0, 3, (8,), generator=g)
    return DeviceProgram("tiny.train", "train", _TinyLoss(), (x, y), ("x", "label"), ("loss",), "tiny",
                         optimizer=SGD(0.5))


def test_signatures_train_like_pytorch_sgd():
    program = _tiny_program()
    specs = build_tf_signatures(program, lower_aten_to_tf(torch.export.export(
        program.module, program.example_inputs).run_decompositions()))
    assert set(specs.functions) == {"train", "infer", "save", "restore"}
    batches = [(rand(8, 5), torch.randint(0, 3, (8,), generator=g)) for _ in range(5)]
    run = program.reference_training(batches)
    losses, weights = run.losses, run.weights
    initial = {k: v.numpy() for k, v in specs.functions["save"]().items()}
    tf_losses = [float(specs.functions["train"](*[to_tf(t) for t in b])["loss"]) for b in batches]
    np.testing.assert_allclose(tf_losses, losses, rtol=1e-5)
    saved = specs.functions["save"]()
    assert set(saved) == set(program.trainable)  # frozen weights are constants, not variables
    for name, w in weights.items():
        close(saved[name], w)
    restored = specs.functions["restore"](**{n: tf.constant(v) for n, v in initial.items()})
    for name, v in initial.items():
        close(restored[name], torch.from_numpy(v))
    close(specs.functions["infer"](*[to_tf(t) for t in batches[0]])["loss"], torch.tensor(losses[0]))


def test_inference_program_gets_infer_only():
    m = nn.Sequential(nn.Linear(4, 2)).requires_grad_(False)
    program = DeviceProgram("tiny.infer", "infer", m, (rand(1, 4),), ("x",), ("y",), "tiny")
    specs = build_tf_signatures(program, lower_aten_to_tf(torch.export.export(m, program.example_inputs)
                                                          .run_decompositions()))
    assert set(specs.functions) == {"infer"}
    close(specs.functions["infer"](to_tf(program.example_inputs[0]))["y"], m(program.example_inputs[0]))


def test_aten_to_tf_module_has_no_hand_written_model():
    """The lowering is a table of ATen ops: it names no model, layer or recipe."""
    import inspect

    src = inspect.getsource(aten_to_tf)
    for word in ("ConvNet", "ICIIA", "Recommender", "SampleClassifier", "dcx.methods", "dcx.models"):
        assert word not in src

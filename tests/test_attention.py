"""Attention blocks train and infer on the device: a small transformer block through ``dcx.export_programs`` and
``dcx.verify``.

``AttentionBlock``: LayerNorm, ``nn.MultiheadAttention`` (batch_first; its inference program runs PyTorch's MHA
fast path, eval mode under no_grad: one fused op no exporter takes), ``F.scaled_dot_product_attention`` called
directly (causal, and with a boolean ``attn_mask``), an exact-GELU MLP, residuals, then mean-pool, tanh GELU and
a Linear head (+ cross-entropy for training). One block keeps the exports few: it trains in ExecuTorch and TFLite
(builtin ops only) and infers in every format, and verify passes every check that runs here (Core ML's
execution needs macOS). An operator a backend cannot take fails that format with one line naming op, format and
program.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dcx

SEQ, DIM, HEADS, BATCH, CLASSES = 8, 16, 2, 4, 3
TRAIN_FORMATS = ("executorch", "tflite")
INFER_FORMATS = ("executorch", "tflite", "coreml", "onnx")


class MaskedAttention(nn.Module):
    """One QKV projection attended twice through ``F.scaled_dot_product_attention``: causally, and under a
    boolean mask (True: attend)."""

    def __init__(self):
        super().__init__()
        self.qkv, self.out = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        mask = torch.rand(SEQ, SEQ, generator=torch.Generator().manual_seed(1)) > 0.3
        self.register_buffer("mask", mask | torch.eye(SEQ, dtype=torch.bool))

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True) + \
            F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        return self.out(a.transpose(1, 2).reshape(b, s, d))


class AttentionBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(DIM), nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.sdpa = MaskedAttention()
        self.fc1, self.fc2 = nn.Linear(DIM, 2 * DIM), nn.Linear(2 * DIM, DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.mha(h, h, h, need_weights=False)[0]
        x = x + self.sdpa(self.norm2(x))
        x = x + self.fc2(F.gelu(self.fc1(self.norm3(x))))
        return self.head(F.gelu(x.mean(1), approximate="tanh"))


class CrossEntropy(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, y):
        return F.cross_entropy(self.net(x), y)


def programs() -> list:
    torch.manual_seed(0)
    net = AttentionBlock()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(BATCH, SEQ, DIM, generator=g), torch.randint(0, CLASSES, (BATCH,), generator=g)
    return [dcx.training_program("block.train", CrossEntropy(net), (x, y), ("tokens", "label"), lr=0.1),
            dcx.inference_program("block.infer", net, (x,), ("tokens",), ("logits",))]


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list:
    """The training program exported to ExecuTorch and TFLite, the inference program to every format; the
    verify rows of both."""
    out = tmp_path_factory.mktemp("attention")
    train, infer = programs()
    for program, formats in ((train, TRAIN_FORMATS), (infer, INFER_FORMATS)):
        summary = dcx.export_programs([program], out / program.name, formats=list(formats))
        assert not summary.failed, summary.failed
        assert {e.format for e in summary.written} == set(formats)
    return [r for program in (train, infer) for r in dcx.verify(out / program.name)]


def test_verify_passes_every_check_that_runs_here(rows):
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    not_run = {(r.format, r.check) for r in rows if r.verdict == "not run"}
    assert not_run <= ({("coreml", "execution")} if sys.platform != "darwin" else set()), not_run


def test_attention_block_trains_like_pytorch(rows):
    passed = {(r.artifact, r.check) for r in rows if r.verdict == "pass"}
    for suffix in (".pte", ".tflite"):
        assert {("block.train" + suffix, "train_20_steps_loss"), ("block.train" + suffix, "train_20_steps_weights")} \
            <= passed, suffix


def test_attention_block_infers_in_every_format(rows):
    passed = {(r.format, r.check) for r in rows if r.artifact.startswith("block.infer") and r.verdict == "pass"}
    assert {(f, "forward") for f in ("executorch", "tflite", "onnx")} <= passed
    assert {("coreml", "coreml_mil_validates"), ("coreml", "weights")} <= passed


def test_coreml_training_spec_predicts_like_pytorch_in_the_reference_interpreter():
    """The layers coremltools writes for the block (mvn and scale for LayerNorm, sliceStatic, transpose,
    batchedMatmul, gelu, reduceMean) have reference semantics: the updatable spec's logits are PyTorch's."""
    from dcx.backends.coreml.exporter import build_updatable
    from dcx.backends.coreml.interpreter import NNInterpreter

    train, _ = programs()
    build = build_updatable(train)
    x = train.example_inputs[0]
    with torch.no_grad():
        logits = NNInterpreter(build.spec).forward_batch({"tokens": x[:, None]}, blobs=["logits"])["logits"]
        np.testing.assert_allclose(logits.reshape(BATCH, CLASSES), train.module.net(x), atol=1e-5)
    assert build.updatable_layers == ["net.head"]


class Determinant(nn.Module):
    def forward(self, x):
        return torch.linalg.det(x.reshape(2, 2)).reshape(1)


def test_an_unsupported_op_is_named_with_format_and_program(tmp_path):
    """ExecuTorch's SpecViolationError (an op outside core ATen), TFLite's missing lowering and coremltools'
    conversion error each become one line naming the op, the format and the program."""
    program = dcx.inference_program("det.infer", Determinant(), (torch.rand(1, 4),), ("x",), ("det",))
    summary = dcx.export_programs([program], tmp_path / "det", formats=["executorch", "tflite", "coreml"])
    assert {f.format: f.op for f in summary.failed} == {"executorch": "aten._linalg_det.default",
                                                        "tflite": "aten._linalg_det.default", "coreml": "linalg_det"}
    for failure in summary.failed:
        assert "\n" not in failure.error and failure.op in failure.error, failure.error
        assert failure.format in failure.error and "det.infer" in failure.error, failure.error


class SineLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, CLASSES)

    def forward(self, x, y):
        return F.cross_entropy(self.head(torch.sin(self.fc(x))), y)


def test_a_coreml_layer_without_reference_semantics_is_named(tmp_path):
    """Core ML training is measured and verified in dcx's reference interpreter: a layer it cannot run fails the
    export, naming the layer, the format and the program."""
    program = dcx.training_program("sine.train", SineLoss(), (torch.rand(2, 4), torch.tensor([0, 2])), ("x", "y"),
                                   lr=0.1)
    (failure,) = dcx.export_programs([program], tmp_path / "sine", formats=["coreml"]).failed
    assert failure.op == "sin" and "\n" not in failure.error
    assert failure.error.startswith("coreml cannot take op sin in program sine.train"), failure.error

"""MobileNet-class models for the device, and their TFLite artifacts.

- ``MobileNetSmall`` (DC-CCL's S and mimic M at 224x224) is phone-sized and made of depthwise-separable blocks;
- ``ICIIAWithKVCache`` gives the reference ICIIA's logits over a FIFO stream of real MobileNetV2 (ImageNet)
  features while the app keeps projected keys and values, and its FLOPs overhead over MobileNetV2-224 stays
  under the paper's +1.62 % from P = 4 on;
- a small MobileNet exports to TFLite through the exporter for inference and for training (depthwise convs
  and batch norm with frozen statistics in the trainable part), builtin-only, and in ai-edge-litert its
  forward matches PyTorch to 1e-5 and 10 training steps match eager PyTorch SGD. The cached ICIIA exports too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import dcx
from dcx.errors import DcxError
from dcx.backends.tflite.spec import operator_histogram
from dcx.backends.tflite.exporter import EXPORTER
from dcx.methods.iciia.model import ICIIA, ICIIAWithKVCache, MobileNetV2Features, forward_flops, iciia_flops_overhead
from dcx.models.mobilenet_small import MobileNetSmall
from dcx.models.mobilenetv2 import mobilenet_v2_imagenet
from dcx.methods.dcccl.recipe import ControlledLoss

PAPER_OVERHEAD_PCT = 1.62  # ICIIA's FLOPs overhead on MobileNetV3-L in the paper (docs/methods.md 1.2)
SIZE = 32  # export tests run the small MobileNet at 32x32 to stay fast
STEPS = 10


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- the small MobileNet

def test_small_mobilenet_is_phone_sized_at_224():
    net = MobileNetSmall(10).eval()
    flops = forward_flops(net, torch.rand(1, 3, 224, 224))
    assert 100_000 < parameter_count(net) < 500_000  # a few hundred K parameters
    assert 10e6 < flops < 100e6  # tens of MFLOPs
    assert parameter_count(MobileNetSmall(10, width=0.125, depth=1)) < parameter_count(net) / 3


def test_small_mobilenet_is_depthwise_separable():
    convs = [m for m in MobileNetSmall(10).modules() if isinstance(m, nn.Conv2d)]
    stem, blocks = convs[0], convs[1:]
    assert stem.stride == (2, 2) and stem.kernel_size == (3, 3)
    depthwise, pointwise = blocks[0::2], blocks[1::2]
    assert all(c.groups == c.in_channels == c.out_channels and c.kernel_size == (3, 3) for c in depthwise)
    assert all(c.groups == 1 and c.kernel_size == (1, 1) for c in pointwise)
    assert len(depthwise) == len(pointwise) == 6 + 5 + 2


def test_small_mobilenet_takes_any_input_size():
    net = MobileNetSmall(7, width=0.125, depth=0).eval()
    for size in (SIZE, 224):
        assert net(torch.rand(2, 3, size, size)).shape == (2, 7)


def test_small_mobilenet_rejects_bad_sizes():
    with pytest.raises(DcxError, match="width") as err:
        MobileNetSmall(10, width=0)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- ICIIA with cached keys and values

@pytest.fixture(scope="module")
def mnv2() -> nn.Module:
    return mobilenet_v2_imagenet(1000).eval()


def test_cached_kv_iciia_gives_the_reference_logits_over_a_stream(mnv2):
    """Each image's logits equal ``ICIIA.forward(h, H)`` with H the raw features of the previous n images,
    while the app only keeps their keys and values (appending each image's k_new, v_new, FIFO)."""
    torch.manual_seed(0)
    iciia = ICIIA(1280, 8, 4, 1000).eval()
    backbone = MobileNetV2Features(mnv2)
    device = ICIIAWithKVCache(backbone, iciia).eval()
    n = 4
    images = torch.rand(n + 3, 3, 224, 224)
    with torch.no_grad():
        raw = backbone(images[:n])
        k_cache, v_cache = device.encode(raw)
        for image in images[n:]:
            logits, k_new, v_new = device(image[None], k_cache, v_cache)
            h = backbone(image[None])
            expected = iciia(h, raw[None])
            assert k_new.shape == v_new.shape == (1280,)
            assert (logits - expected).abs().max() <= 1e-5
            assert not torch.allclose(logits, mnv2(image[None]), atol=1e-3)  # the attention does change them
            raw = torch.cat([raw[1:], h])
            k_cache, v_cache = torch.cat([k_cache[1:], k_new[None]]), torch.cat([v_cache[1:], v_new[None]])


def test_cached_kv_iciia_takes_one_image_per_call(mnv2):
    device = ICIIAWithKVCache(MobileNetV2Features(mnv2), ICIIA(1280, 8, 4, 10))
    kv = torch.zeros(3, 1280)
    with pytest.raises(DcxError, match="one image"):
        device(torch.rand(2, 3, 64, 64), kv, kv)


def test_partitions_must_divide_the_feature_dim():
    with pytest.raises(DcxError, match="partitions=3") as err:
        ICIIA(1280, 8, 3, 10)
    assert "\n" not in str(err.value)


def test_iciia_flops_overhead_on_mobilenet_v2(mnv2):
    """The cached formulation costs O(d^2/P) per image, the reference O(n d^2/P); at P >= 4 the cached one is
    within the paper's +1.62 % for n up to 128."""
    partitions, sizes = (1, 4, 16, 256), (16, 128)
    rows = iciia_flops_overhead(mnv2, MobileNetV2Features(mnv2), torch.rand(1, 3, 224, 224),
                                [ICIIA(1280, 8, p, 1000) for p in partitions], sizes)
    table = {(r["partitions"], r["cache_size"]): r for r in rows}
    for n in sizes:
        cached = [table[p, n]["cached"] for p in partitions]
        assert all(0 < c for c in cached) and cached == sorted(cached, reverse=True)
        assert all(table[p, n]["cached"] <= PAPER_OVERHEAD_PCT for p in partitions if p >= 4)
        assert all(table[p, n]["cached"] < table[p, n]["reference"] for p in partitions)
    growth = {p: {k: table[p, 128][k] - table[p, 16][k] for k in ("cached", "reference")} for p in partitions}
    assert all(g["reference"] > g["cached"] > 0 for g in growth.values())
    assert growth[1]["reference"] > 10 * growth[1]["cached"]  # where the projections dominate: O(n d^2) vs O(n d)


# ---------------------------------------------------------------- TFLite: inference and builtin-only training

def small_mobilenet(seed: int, width: float = 0.25, depth: int = 0) -> MobileNetSmall:
    """Random weights and random batch-norm statistics, so every BN is a real per-channel affine map."""
    torch.manual_seed(seed)
    net = MobileNetSmall(10, width, depth)
    with torch.no_grad():
        for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return net


def litert(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(model_path=str(path),
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """The small MobileNet's inference program and DC-CCL's controlled step with it (S trains, M frozen)."""
    out = tmp_path_factory.mktemp("mobile-tflite")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, SIZE, SIZE, generator=gen)
    y = torch.randint(0, 10, (4,), generator=gen)
    batches = [(torch.rand(4, 3, SIZE, SIZE, generator=gen), torch.randint(0, 10, (4,), generator=gen))
               for _ in range(STEPS)]
    programs = {
        "infer": dcx.inference_program("mobile.infer", small_mobilenet(0), (x[:1],), ("image",), ("logits",)),
        "train": dcx.training_program("mobile.train",
                                      ControlledLoss(small_mobilenet(1, width=0.125), small_mobilenet(2)).eval(),
                                      (x, y), ("image", "label"), lr=0.05, batches=batches),
    }
    result = {}
    for kind, program in programs.items():
        path = out / f"{kind}.tflite"
        info = EXPORTER.export(program, path, None)
        result[kind] = (program, path, info)
    return result


def test_small_mobilenet_exports_builtin_only_with_depthwise_convs(exported):
    for program, path, info in exported.values():
        ops = operator_histogram(path.read_bytes())
        assert "DEPTHWISE_CONV_2D" in ops and "CONV_2D" in ops
        assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops)
    train_ops = operator_histogram(exported["train"][1].read_bytes())
    assert {"ASSIGN_VARIABLE", "READ_VARIABLE", "TRANSPOSE_CONV"} <= set(train_ops)


def test_small_mobilenet_inference_matches_pytorch(exported):
    program, path, _ = exported["infer"]
    images = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    got = litert(path).get_signature_runner("infer")(image=images.numpy())["logits"]
    with torch.no_grad():
        expected = program.module(images)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)


def test_small_mobilenet_trains_in_litert_like_pytorch_sgd(exported):
    """The trainable part holds depthwise convs and batch norm with frozen statistics (its scale and shift train)."""
    program, path, _ = exported["train"]
    trainable = program.trainable
    depthwise = {n for n, p in trainable.items() if p.dim() == 4 and p.shape[1] == 1}
    batch_norm = {n for n, p in trainable.items() if p.dim() == 1 and ".features." in n}  # BN scales and shifts
    assert depthwise and batch_norm and not any(n.startswith("mimic.") for n in trainable)
    batches = program.example_batches(STEPS)
    run = program.reference_training(batches)
    ref_losses, ref_weights = run.losses, run.weights
    interp = litert(path)
    train = interp.get_signature_runner("train")
    losses = [float(train(image=x.numpy(), label=y.numpy())["loss"]) for x, y in batches]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    weights = interp.get_signature_runner("save")()
    assert set(weights) == set(ref_weights)
    for name, w in ref_weights.items():
        np.testing.assert_allclose(weights[name], w.numpy(), atol=1e-5, rtol=0, err_msg=name)
    moved = {n for n, p in trainable.items() if np.abs(weights[n] - p.detach().numpy()).max() > 1e-4}
    assert moved & depthwise and moved & batch_norm


def test_cached_kv_iciia_exports_to_tflite(tmp_path):
    """The device's ICIIA program (image, k_cache, v_cache) -> (logits, k_new, v_new), on a small backbone."""
    torch.manual_seed(0)
    net = small_mobilenet(3)
    backbone = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    device = ICIIAWithKVCache(backbone, ICIIA(net.feature_dim, 4, 4, 10))
    n, d = 16, net.feature_dim
    inputs = (torch.rand(1, 3, SIZE, SIZE), torch.randn(n, d), torch.randn(n, d))
    program = dcx.inference_program("iciia_cached.infer", device, inputs, ("image", "k_cache", "v_cache"),
                                    ("logits", "k_new", "v_new"))
    path = tmp_path / "iciia.tflite"
    EXPORTER.export(program, path, None)
    got = litert(path).get_signature_runner("infer")(**{k: v.numpy() for k, v in zip(program.input_names, inputs)})
    with torch.no_grad():
        expected = program.run(*inputs)
    for name, e in zip(program.output_names, expected):
        np.testing.assert_allclose(got[name], e.numpy(), atol=1e-5, rtol=0, err_msg=name)

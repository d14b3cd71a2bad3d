"""The mobile-scale recipe variants at 224x224 RGB: ``iciia_mnv2`` and ``dcccl_mnv2`` in every format.

Fresh programs (ImageNet MobileNetV2 weights, untrained ICIIA / S / M) are enough to prove the export paths and
their parity; the training program runs at its default batch of 8 for 5 reference steps (the full 20 steps of every
recipe and variant: ``dcx bench verify``).
"""

import numpy as np
import pytest
import torch

from dcx.errors import DcxError
from dcx.methods.export import export_recipe
from dcx.manifest import read_manifest
from dcx.methods.iciia.model import ICIIA, ICIIAWithKVCache
from dcx.methods import get_recipe, recipe_names
from dcx.methods.iciia.recipe import BackboneFeatures
from dcx.verification import verify

FORMATS = {"executorch", "tflite", "coreml", "onnx"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("mobile")
    iciia = export_recipe("iciia_mnv2", "all", out / "iciia")
    dcccl = export_recipe("dcccl_mnv2", "all", out / "dcccl", reference_steps=5)
    assert not iciia.failed and not dcccl.failed, (iciia.failed, dcccl.failed)
    return out


def test_variants_are_listed_by_name_but_not_in_all():
    assert {"iciia_mnv2", "dcccl_mnv2"} <= set(recipe_names())
    assert not {"iciia_mnv2", "dcccl_mnv2"} & set(recipe_names(only_all=True))


def test_mobile_programs_take_224_rgb_and_report_their_costs():
    (iciia,) = get_recipe("iciia_mnv2").device_programs(0)
    assert [tuple(s.shape) for s in iciia.input_specs()] == [(1, 3, 224, 224), (16, 1280), (16, 1280)]
    assert iciia.output_names == ("logits", "k_new", "v_new")
    assert 5e8 < iciia.flops()["forward"] < 7e8  # a MobileNetV2-224 pass is ~600 MFLOPs
    train, infer = get_recipe("dcccl_mnv2").device_programs(0)
    assert tuple(train.example_inputs[0].shape) == (8, 3, 224, 224)
    assert train.flops()["backward"] < 3 * train.flops()["forward"]  # grouped-conv gradients counted right
    assert train.activation_bytes()["saved_for_backward"] > 0 and infer.activation_bytes()["forward_peak"] > 0
    assert any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in train.module.small.modules())


def test_iciia_overhead_per_partition_is_computed_and_under_the_papers():
    """ICIIA's per-image FLOPs over the MobileNetV2-224 backbone, from the device program, for each P."""
    overhead = {p: get_recipe("iciia_mnv2", partitions=p).device_programs(0)[0].metrics["iciia_overhead_flops_pct"]
                for p in (1, 4, 16, 256)}
    assert overhead[1] > overhead[4] > overhead[16] > overhead[256] > 0
    assert all(v <= 1.62 for p, v in overhead.items() if p >= 4), overhead  # the paper: +1.62 % on MobileNetV3-L


def test_cached_kv_program_gives_the_reference_logits():
    """The device program (K, V cached) against ICIIA.forward over the raw features of the same images."""
    recipe = get_recipe("iciia_mnv2")
    modules = recipe.build_modules(0)
    device = ICIIAWithKVCache(BackboneFeatures(modules["backbone"]), modules["iciia"]).eval()
    torch.manual_seed(0)
    images = torch.randn(5, 3, 224, 224)
    with torch.no_grad():
        h = modules["backbone"].features(images)
        k, v = device.encode(h[1:])
        got, k_new, v_new = device(images[:1], k, v)
        expected = modules["iciia"](h[:1], h[1:].unsqueeze(0))
        own_k = device.encode(h[:1])[0][0]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(k_new.numpy(), own_k.numpy(), atol=1e-5)


def test_both_variants_export_to_every_format_and_verify(exported):
    for name in ("iciia", "dcccl"):
        manifest = read_manifest(exported / name)
        assert {e.format for e in manifest.artifacts} == FORMATS
        rows = verify(exported / name)
        assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]
        passed = {(r.format, r.check) for r in rows if r.verdict == "pass"}
        assert {("executorch", "forward"), ("tflite", "forward"), ("onnx", "forward")} <= passed
    passed = {(r.format, r.check) for r in verify(exported / "dcccl") if r.verdict == "pass"}
    assert {("executorch", "train_5_steps_weights"), ("tflite", "train_5_steps_weights"),
            ("coreml", "coreml_training_gap")} <= passed


def test_tflite_training_uses_builtin_depthwise_and_core_ml_says_what_cannot_train(exported):
    manifest = read_manifest(exported / "dcccl")
    tflite = manifest.entry("dcccl_mnv2.train", "tflite")
    assert "DEPTHWISE_CONV_2D" in tflite.notes["ops"]
    coreml = manifest.entry("dcccl_mnv2.train", "coreml")
    frozen = {p for d in coreml.deviations for p in d.parameters}
    assert "small.classifier.weight" not in frozen and "small.features.1.0.0.weight" in frozen
    measured = [d.measured for d in coreml.deviations if d.measured]
    assert measured and measured[0].steps == 5


def test_bad_mobile_configs_are_one_line_errors():
    with pytest.raises(DcxError, match="partitions=3"):
        get_recipe("iciia_mnv2", partitions=3).device_programs(0)
    with pytest.raises(DcxError, match="image_size"):
        get_recipe("iciia_mnv2", image_size=16).build_modules(0)
    with pytest.raises(DcxError, match="heterogeneous"):
        get_recipe("dcccl", device_arch="mobilenet_small").build_modules(0)
    with pytest.raises(DcxError, match="ICIIA: feature_dim"):
        ICIIA(1280, 7, 1, 10)

"""Core ML backend: exporter, its passes, Core ML's updatable-model rules, and the measured deviation.

Runs on Linux: prediction needs macOS (one test skips there), everything else
— export of every program, static checks, the rule checker, and the
reference-interpreter measurement of how the Core ML formulations train — runs
here.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcx.errors import DcxError
from dcx.methods import resolve_recipes

import coremltools as ct  # noqa: E402  (installed by the set-up)

from dcx.backends.coreml.exporter import EXPORTER, build_updatable  # noqa: E402
from dcx.backends.coreml.passes.backprop_layers import to_backprop_layers  # noqa: E402
from dcx.backends.coreml.passes.frozen_offset import split_frozen_offset  # noqa: E402
from dcx.backends.coreml.passes.split_loss import placeholder_names, split_loss  # noqa: E402
from dcx.backends.coreml.passes.static_shapes import specialize_shapes, trace_named  # noqa: E402
from dcx.backends.coreml.spec import gradient_matching_target  # noqa: E402
from dcx.backends.coreml.interpreter import NNInterpreter  # noqa: E402
from dcx.backends.coreml.updatable_rules import backprop_reachable, check_updatable_model  # noqa: E402
from dcx.manifest import read_manifest  # noqa: E402
from dcx.reference import ProgramReference  # noqa: E402
from dcx.backends.coreml.runtime import RUNTIME  # noqa: E402
from dcx.backends.runtime import train_on_reference  # noqa: E402
from dcx.verification import DEFAULT_TOLERANCE  # noqa: E402

MACOS = sys.platform == "darwin"


@pytest.fixture(scope="module")
def programs():
    return {p.name: p for r in resolve_recipes("all") for p in r.device_programs(seed=0)}


@pytest.fixture(scope="module")
def exported(programs, exported_all):
    """Every device program exported to Core ML: name -> (program, path, entry, reference)."""
    out = exported_all
    return {e.program: (programs[e.program], out / e.file, e, ProgramReference.load(out / e.reference.file))
            for e in read_manifest(out).artifacts if e.format == "coreml"}


# ---------------------------------------------------------------- the exporter, end to end

def test_suffixes(programs):
    assert EXPORTER.suffix_for(programs["dcccl.train"]) == ".mlmodel"
    assert EXPORTER.suffix_for(programs["dcccl.infer"]) == ".mlpackage"
    assert all(EXPORTER.supports(p) is None for p in programs.values())


def test_every_program_exports(exported):
    assert set(exported) == {"dcccl.train", "dcccl.infer", "iciia.infer", "coda.classifier.train",
                             "coda.classifier.infer", "coda.recommender.train", "coda.recommender.infer"}
    for name, (program, path, entry, _) in exported.items():
        assert path.exists(), name
        if program.kind == "train":
            assert path.is_file() and path.suffix == ".mlmodel"
            assert set(entry.signatures) == {"predict", "train"}
            assert set(program.trainable) <= set(entry.weights)
        else:
            assert path.is_dir() and (path / "Manifest.json").exists()
            assert [(o.name, list(o.shape), o.dtype) for o in entry.outputs] == \
                [(n, list(t.shape), "float32") for n, t in zip(program.output_names,
                                                               program.run(*program.example_inputs))]


def test_static_checks_pass_on_every_artifact(exported):
    for name, (_, path, entry, _) in exported.items():
        rows = RUNTIME.static_checks(path, entry)
        failed = [r for r in rows if not r.ok]
        assert not failed, f"{name}: {failed}"
        checks = {r.check for r in rows}
        if entry.kind == "train":
            assert {"coreml_updatable_layers", "coreml_loss_layer", "coreml_optimizer", "coreml_updatable_rules",
                    "coreml_reference_execution"} <= checks
        else:
            assert {"coreml_mil_validates", "coreml_inputs", "coreml_outputs"} <= checks


def test_training_artifacts_are_updatable_as_designed(exported):
    spec = ct.utils.load_spec(str(exported["dcccl.train"][1]))
    nn = spec.neuralNetwork
    assert spec.isUpdatable
    assert [layer.name for layer in nn.layers if layer.isUpdatable] == \
        ["small.conv1", "small.conv2", "small.fc1", "small.fc2"]
    assert not any(layer.isUpdatable for layer in nn.layers if layer.name.startswith("mimic."))
    assert nn.updateParams.lossLayers[0].WhichOneof("LossLayerType") == "meanSquaredErrorLossLayer"
    assert [o.name for o in spec.description.output] == ["small_logits", "mimic_logits", "logits"]
    sgd = nn.updateParams.optimizer.sgdOptimizer
    assert sgd.learningRate.defaultValue == pytest.approx(0.05) and sgd.miniBatchSize.defaultValue == 32

    spec = ct.utils.load_spec(str(exported["coda.recommender.train"][1]))
    assert [layer.name for layer in spec.neuralNetwork.layers if layer.isUpdatable] == ["model.mlp.0", "model.mlp.2"]
    entry = exported["coda.recommender.train"][2]
    assert any({"model.user_vec", "model.genre.weight"} <= set(d.parameters) for d in entry.deviations)


def test_static_checks_catch_a_mismatch(exported, tmp_path):
    _, path, entry, _ = exported["coda.classifier.train"]
    wrong_lr = dataclasses.replace(entry, optimizer=dataclasses.replace(entry.optimizer, lr=0.1))
    assert not {r.check: r for r in RUNTIME.static_checks(path, wrong_lr)}["coreml_optimizer"].ok
    wrong_shape = dataclasses.replace(entry, inputs=[dataclasses.replace(entry.inputs[0], shape=(32, 2)),
                                                     *entry.inputs[1:]])
    assert not {r.check: r for r in RUNTIME.static_checks(path, wrong_shape)}["coreml_inputs"].ok
    _, ipath, ientry, _ = exported["dcccl.infer"]
    renamed = dataclasses.replace(ientry, outputs=[dataclasses.replace(ientry.outputs[0], name="scores"),
                                                   *ientry.outputs[1:]])
    assert not {r.check: r for r in RUNTIME.static_checks(ipath, renamed)}["coreml_outputs"].ok
    broken = tmp_path / "broken.mlmodel"
    broken.write_bytes(b"not a protobuf")
    (row,) = RUNTIME.static_checks(broken, entry)
    assert row.check == "coreml_spec_loads" and not row.ok and "broken.mlmodel" in row.detail


# ---------------------------------------------------------------- Core ML's updatable-model rule

def _tiny_updatable(with_add: bool, updatable_kind: str = "innerProduct"):
    """ip (updatable) [+ frozen constant branch] -> softmax -> categorical CE, built with coremltools' builder."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder, SgdParams

    b = NeuralNetworkBuilder([("x", datatypes.Array(3))], [("y", None)])
    rng = np.random.default_rng(0)
    b.add_inner_product("ip", W=rng.normal(size=(3, 3)), b=np.zeros(3), input_channels=3, output_channels=3,
                        has_bias=True, input_name="x", output_name="h")
    b.add_inner_product("frozen_branch", W=rng.normal(size=(3, 3)), b=None, input_channels=3, output_channels=3,
                        has_bias=False, input_name="x", output_name="offset")
    logits = "h"
    if with_add:
        b.add_elementwise("sum", input_names=["h", "offset"], output_name="summed", mode="ADD")
        logits = "summed"
    b.add_softmax("softmax", input_name=logits, output_name="y")
    b.make_updatable(["ip"])
    b.set_categorical_cross_entropy_loss("loss", input="y")
    b.set_sgd_optimizer(SgdParams(lr=0.01, batch=4))
    b.set_epochs(1)
    if updatable_kind != "innerProduct":
        b.spec.neuralNetwork.layers[-1].isUpdatable = True  # the softmax
    return b.spec


def test_rule_checker_rejects_add_between_updatable_layer_and_loss():
    assert check_updatable_model(_tiny_updatable(with_add=False)) == []
    problems = check_updatable_model(_tiny_updatable(with_add=True))
    assert len(problems) == 1
    assert "(sum, add), which does not support backpropagation" in problems[0] and "(ip)" in problems[0]


def test_rule_checker_rejects_other_invalid_models():
    spec = _tiny_updatable(with_add=False, updatable_kind="softmax")
    assert any("neither convolution nor inner-product" in p for p in check_updatable_model(spec))

    spec = _tiny_updatable(with_add=False)
    spec.neuralNetwork.updateParams.lossLayers[0].categoricalCrossEntropyLossLayer.input = "h"
    assert any("not generated from a softmax output" in p for p in check_updatable_model(spec))

    spec = _tiny_updatable(with_add=False)
    spec.neuralNetwork.updateParams.ClearField("epochs")
    assert any("Epochs" in p for p in check_updatable_model(spec))

    spec = _tiny_updatable(with_add=False)
    spec.neuralNetwork.layers[0].innerProduct.bias.isUpdatable = False
    assert any("not marked as updatable" in p for p in check_updatable_model(spec))

    spec = _tiny_updatable(with_add=False)
    spec.neuralNetwork.layers[1].name = "ip"
    assert any("name collision" in p for p in check_updatable_model(spec))


def test_direct_dcccl_objective_is_rejected(programs):
    """Core ML's rule, reproduced from the real program: softmax(mimic + small) -> CE is not updatable."""
    naive = build_updatable(programs["dcccl.train"], "direct")
    problems = check_updatable_model(naive.spec)
    assert problems and all("(logits, add)" in p for p in problems)
    assert {p.split("updatable marked layer (")[1].split(")")[0] for p in problems} == \
        {"small.conv1", "small.conv2", "small.fc1", "small.fc2"}


def test_backprop_reachable_stops_at_concat(programs):
    model = build_updatable(programs["coda.recommender.train"])
    assert backprop_reachable(model.spec) >= {"model.mlp.0", "model.mlp.2"}
    assert "model.genre" not in backprop_reachable(model.spec)
    assert set(model.frozen_trainables) == {"model.genre.weight", "model.user_vec"}


# ---------------------------------------------------------------- the passes

def test_static_shapes_fold_shape_lookups(programs):
    p = programs["coda.recommender.train"]
    one = tuple(t[:1] for t in p.example_inputs)
    gm = specialize_shapes(trace_named(p.module, p.input_names), one)
    assert not [n for n in gm.graph.nodes if n.op == "call_function" and n.target is getattr]
    assert placeholder_names(gm) == list(p.input_names)
    torch.testing.assert_close(gm(*one), p.module(*one))


def test_split_loss_returns_logits_and_loss_kind(programs):
    p = programs["coda.classifier.train"]
    gm, head = split_loss(trace_named(p.module, p.input_names), p.name)
    assert head.kind == "bce_with_logits" and head.target == "is_local"
    assert placeholder_names(gm) == ["item", "genres", "liked"]
    item, genres, liked, target = p.example_inputs
    logits = gm(item, genres, liked)
    torch.testing.assert_close(F.binary_cross_entropy_with_logits(logits, target), p.module(*p.example_inputs))


def test_split_loss_refuses_unsupported_losses():
    class L1(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1)

        def forward(self, x, y):
            return F.l1_loss(self.fc(x), y)

    with pytest.raises(DcxError, match="cross_entropy"):
        split_loss(trace_named(L1(), ("x", "y")), "toy")


def test_frozen_offset_splits_the_summed_logits(programs):
    p = programs["dcccl.train"]
    gm, _ = split_loss(trace_named(p.module, p.input_names), p.name)
    names = split_frozen_offset(gm, set(p.trainable))
    assert (names.trainable_output, names.frozen_output, names.sum_output) == \
        ("small_logits", "mimic_logits", "logits")
    x = p.example_inputs[0][:4]
    s, m, z = gm(x)
    torch.testing.assert_close(s, p.module.small(x))
    torch.testing.assert_close(m, p.module.mimic(x))
    torch.testing.assert_close(z, m + s)
    assert split_frozen_offset(split_loss(trace_named(programs["coda.classifier.train"].module,
                                                      programs["coda.classifier.train"].input_names))[0],
                               set(programs["coda.classifier.train"].trainable)) is None


def test_backprop_layers_keep_numerics_and_outputs(programs, exported):
    """Everything between the loss and the image supports backprop, and no output changes value or shape."""
    from dcx.backends.coreml.updatable_rules import supports_backprop

    p = programs["dcccl.train"]
    spec = ct.utils.load_spec(str(exported["dcccl.train"][1]))
    producer = {o: layer for layer in spec.neuralNetwork.layers for o in layer.output}
    loss_input = spec.neuralNetwork.updateParams.lossLayers[0].meanSquaredErrorLossLayer.input
    path, blobs = [], [loss_input]
    while blobs:
        blob = blobs.pop()
        if blob in producer:
            path.append(producer[blob])
            blobs.extend(producer[blob].input)
    kinds = [layer.WhichOneof("layer") for layer in path]
    assert "flatten" in kinds and "reshapeStatic" not in kinds
    assert all(supports_backprop(layer) for layer in path)
    outputs = {o.name: tuple(o.type.multiArrayType.shape) for o in spec.description.output}
    assert outputs == {"small_logits": (1, 10), "mimic_logits": (1, 10), "logits": (1, 10)}
    x = p.example_inputs[0][:3]
    out = NNInterpreter(spec).forward_batch({"image": x[:, None]}, blobs=list(outputs))
    torch.testing.assert_close(out["small_logits"][:, 0], p.module.small(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["mimic_logits"][:, 0], p.module.mimic(x), rtol=1e-5, atol=1e-5)


def test_backprop_layers_is_a_no_op_without_a_chain():
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder([("x", datatypes.Array(1, 3))], [("y", None)], disable_rank5_shape_mapping=True)
    b.add_elementwise("twice", input_names=["x", "x"], output_name="y", mode="ADD")
    assert to_backprop_layers(b.spec, "y") == "y"


def test_interpreter_layers_follow_the_builders_layouts():
    """Layer forms the attention blocks do not produce: batchedMatmul with its own (transposed) weights, MVN
    across channels, a per-channel scale."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    g = torch.Generator().manual_seed(0)
    w, bias, gamma, beta = (torch.rand(*s, generator=g) for s in ((4, 3), (3,), (2,), (2,)))
    b = NeuralNetworkBuilder([("x", datatypes.Array(2, 5, 4))], [("y", None)], disable_rank5_shape_mapping=True)
    b.add_batched_mat_mul("mm", ["x"], "h", weight_matrix_rows=4, weight_matrix_columns=3, W=w.numpy(),
                          bias=bias.numpy())
    b.add_mvn("mvn", "h", "n", across_channels=True, normalize_variance=True, epsilon=1e-5)
    b.add_scale("scale", gamma.numpy(), beta.numpy(), has_bias=True, input_name="n", output_name="y",
                shape_scale=[2], shape_bias=[2])
    x = torch.rand(2, 5, 4, generator=g)
    h = x @ w + bias
    n = (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + 1e-5)
    want = n * gamma[:, None, None] + beta[:, None, None]
    torch.testing.assert_close(NNInterpreter(b.spec).forward({"x": x})["y"], want, rtol=1e-5, atol=1e-5)


def test_gradient_matching_target_has_the_exact_ce_gradient():
    torch.manual_seed(0)
    s = torch.randn(6, 10, requires_grad=True)
    m = torch.randn(6, 10)
    y = torch.randint(0, 10, (6,))
    (ce_grad,) = torch.autograd.grad(F.cross_entropy(m + s, y), s)
    target = torch.as_tensor(gradient_matching_target(s.detach().numpy(), m.numpy(), y.numpy(), 5.0),
                             dtype=torch.float32)
    mse = torch.mean(torch.mean((s - target) ** 2, dim=1))  # the interpreter's Core ML MSE
    (mse_grad,) = torch.autograd.grad(mse, s)
    torch.testing.assert_close(mse_grad, ce_grad, rtol=1e-5, atol=1e-7)


def test_two_class_head_equals_binary_cross_entropy(exported):
    """softmax([0, z]) + categorical CE in the artifact == BCE-with-logits on z, in value."""
    program, path, entry, reference = exported["coda.classifier.train"]
    session = RUNTIME.load_reference(path, entry)
    got = session.train_step(*reference.batch_arrays(0))
    assert got == pytest.approx(float(reference.losses[0]), rel=1e-5)


# ---------------------------------------------------------------- training semantics and the measured deviation

@pytest.mark.parametrize("name", ["dcccl.train", "coda.classifier.train"])
def test_exact_formulations_train_like_pytorch(exported, name):
    """dcx verify's own training check, with the artifact's spec run by the reference interpreter."""
    _, path, entry, reference = exported[name]
    run = train_on_reference(RUNTIME.load_reference(path, entry), reference)
    assert run.loss_error <= DEFAULT_TOLERANCE.loss and run.weight_error <= DEFAULT_TOLERANCE.weights, run
    assert run.losses[-1] < run.losses[0] + 0.5
    rows = RUNTIME.reference_checks(path, entry, reference, DEFAULT_TOLERANCE)
    assert [r.check for r in rows] == ["coreml_parameters_train", "coreml_training_gap"] and all(r.ok for r in rows)


def test_reference_session_predicts_like_pytorch(exported):
    program, path, entry, _ = exported["dcccl.train"]
    x = program.example_inputs[0][:5]
    small, mimic, logits = RUNTIME.load_reference(path, entry).run(x.numpy())
    np.testing.assert_allclose(small, program.module.small(x).detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(logits, (program.module.mimic(x) + program.module.small(x)).detach().numpy(),
                               atol=1e-5)


def test_deviation_is_measured_and_reported(exported, record_property, capsys):
    report = {}
    for name in ("dcccl.train", "coda.classifier.train", "coda.recommender.train"):
        (gap,) = [d.measured for d in exported[name][2].deviations if d.measured]
        assert gap.steps == 20 and gap.samples_for_accuracy == 640
        measured = dataclasses.asdict(gap)
        for key in ("loss_max_abs_diff", "weight_max_abs_diff", "accuracy_coreml_formulation", "accuracy_exact"):
            assert isinstance(measured[key], float), (name, key)
        report[name] = measured
        record_property(f"{name} deviation", json.dumps(measured))
    dcccl = report["dcccl.train"]
    assert dcccl["formulation"] == "mse_gradient_matching"
    assert dcccl["weight_max_abs_diff"] < 1e-5 and dcccl["loss_max_rel_diff"] < 1e-5
    assert dcccl["accuracy_abs_diff"] == 0.0
    alt = dcccl["alternative_drop_frozen_offset"]
    assert alt["weight_max_abs_diff"] > 100 * max(dcccl["weight_max_abs_diff"], 1e-7)
    assert report["coda.classifier.train"]["weight_max_abs_diff"] < 1e-5
    rec = report["coda.recommender.train"]
    assert rec["weight_max_abs_diff"] > DEFAULT_TOLERANCE.weights  # user_vec, genre frozen in Core ML: documented
    by_param = rec["weight_max_abs_diff_by_param"]
    assert by_param["model.user_vec"] > by_param["model.mlp.2.weight"]
    with capsys.disabled():
        for name, m in report.items():
            print(f"\n[coreml deviation] {name} ({m['formulation']}): loss max abs diff {m['loss_max_abs_diff']}, "
                  f"weight max abs diff {m['weight_max_abs_diff']}, accuracy {m['accuracy_coreml_formulation']} vs "
                  f"exact {m['accuracy_exact']}"
                  + (f"; naive alternative (CE on S only): weight diff "
                     f"{m['alternative_drop_frozen_offset']['weight_max_abs_diff']}, "
                     f"loss diff {m['alternative_drop_frozen_offset']['loss_max_abs_diff']}"
                     if m["alternative_drop_frozen_offset"] else ""))


def test_documented_frozen_parameters_are_reported_not_failed(exported):
    """verify's reference check on coda.recommender.train: the gap comes from the documented deviation."""
    _, path, entry, reference = exported["coda.recommender.train"]
    moves, gap = RUNTIME.reference_checks(path, entry, reference, DEFAULT_TOLERANCE)
    assert moves.ok and gap.ok and gap.error > DEFAULT_TOLERANCE.weights and "model.user_vec" in moves.detail
    undocumented = dataclasses.replace(entry, deviations=[d for d in entry.deviations if not d.parameters])
    assert not all(r.ok for r in RUNTIME.reference_checks(path, undocumented, reference, DEFAULT_TOLERANCE))


def test_the_gap_may_not_grow_past_what_export_measured(exported):
    """A gap recorded smaller than verify measures again (an artifact that trains further from PyTorch than it
    did at export) fails, naming the parameter."""
    _, path, entry, reference = exported["coda.recommender.train"]
    (deviation,) = [d for d in entry.deviations if d.measured]
    recorded = deviation.measured.weight_max_abs_diff_by_param
    smaller = dataclasses.replace(deviation.measured, weight_max_abs_diff_by_param={
        n: (v / 10 if n == "model.user_vec" else v) for n, v in recorded.items()})
    altered = dataclasses.replace(entry, deviations=[dataclasses.replace(d, measured=smaller) if d is deviation else d
                                                     for d in entry.deviations])
    _, gap = RUNTIME.reference_checks(path, altered, reference, DEFAULT_TOLERANCE)
    assert not gap.ok and "model.user_vec" in gap.detail


# ---------------------------------------------------------------- the runtime on this host

@pytest.mark.skipif(MACOS, reason="checks the non-macOS behaviour")
def test_runtime_says_prediction_needs_macos(exported):
    reason = RUNTIME.available()
    assert reason and "macOS" in reason
    _, path, entry, _ = exported["dcccl.infer"]
    with pytest.raises(DcxError, match="macOS"):
        RUNTIME.load(path, entry)


@pytest.mark.skipif(not MACOS, reason="Core ML prediction needs macOS")
def test_coreml_predicts_like_pytorch(exported):
    for name, (program, path, entry, _) in exported.items():
        session = RUNTIME.load(path, entry)
        if program.kind == "infer":
            got = session.run(*(t.numpy() for t in program.example_inputs))
            for g, e in zip(got, program.run(*program.example_inputs)):
                np.testing.assert_allclose(g, e.detach().numpy(), atol=1e-4)
        else:
            ref = RUNTIME.load_reference(path, entry).run(*(t.numpy() for t in program.example_inputs))
            for g, e in zip(session.run(*(t.numpy() for t in program.example_inputs)), ref):
                np.testing.assert_allclose(g, e, atol=1e-4)


def test_a_parameter_documented_frozen_that_moves_fails(exported):
    """The manifest says a parameter cannot train in Core ML, but the artifact's steps move it: verify fails."""
    _, path, entry, reference = exported["coda.recommender.train"]
    claims = [dataclasses.replace(d, parameters=[*d.parameters, "model.mlp.0.bias"]) if d.parameters else d
              for d in entry.deviations]
    moves, _ = RUNTIME.reference_checks(path, dataclasses.replace(entry, deviations=claims), reference,
                                        DEFAULT_TOLERANCE)
    assert not moves.ok and "model.mlp.0.bias moved" in moves.detail

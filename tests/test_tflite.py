"""The TFLite backend end to end: every device program exports, runs and trains in LiteRT like PyTorch.

Each program is converted once per session (module-scoped fixture). Training
programs are trained 50 steps in ai-edge-litert on real-data batches and
compared step for step with ``program.reference_training``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import ai_edge_litert  # noqa: E402,F401  (installed by the set-up: a missing one must fail, not skip)
import tensorflow  # noqa: E402,F401

from dcx.errors import DcxError  # noqa: E402
from dcx.backends import get_exporter, get_runtime  # noqa: E402
from dcx.backends.tflite import exporter as tflite_export  # noqa: E402
from dcx.manifest import read_manifest  # noqa: E402
from dcx.methods import resolve_recipes  # noqa: E402

PROGRAMS = {p.name: p for r in resolve_recipes("all") for p in r.device_programs(seed=0)}
TRAIN = [n for n, p in PROGRAMS.items() if p.kind == "train"]
STEPS = 50
EXPORTER = get_exporter("tflite")
RUNTIME = get_runtime("tflite")


@pytest.fixture(scope="module")
def artifacts(exported_all) -> dict[str, tuple]:
    """Every program exported to TFLite: name -> (program, path, manifest entry)."""
    return {e.program: (PROGRAMS[e.program], exported_all / e.file, e) for e in read_manifest(exported_all).artifacts
            if e.format == "tflite"}


@pytest.fixture(scope="module")
def trained(artifacts) -> dict[str, dict]:
    """50 LiteRT train steps and 50 PyTorch SGD steps per training program, on the same real batches."""
    runs = {}
    for name in TRAIN:
        program, path, entry = artifacts[name]
        batches = program.example_batches(STEPS)
        run = program.reference_training(batches)
        ref_losses, ref_weights = run.losses, run.weights
        session = RUNTIME.load(path, entry)
        losses = [session.train_step(*[t.numpy() for t in b]) for b in batches]
        runs[name] = {"losses": np.array(losses), "ref_losses": np.array(ref_losses),
                      "weights": session.get_weights(), "ref_weights": ref_weights, "session": session}
    return runs


def test_the_registry_has_the_expected_programs():
    assert set(PROGRAMS) == {"dcccl.train", "dcccl.infer", "iciia.infer", "coda.classifier.train",
                             "coda.classifier.infer", "coda.recommender.train", "coda.recommender.infer"}


@pytest.mark.parametrize("name", PROGRAMS)
def test_every_program_exports_with_its_signatures(artifacts, name):
    program, path, entry = artifacts[name]
    assert EXPORTER.supports(program) is None
    assert path.is_file() and path.stat().st_size > 0
    expected = {"train", "infer", "save", "restore"} if program.kind == "train" else {"infer"}
    assert set(entry.signatures) == expected
    from ai_edge_litert.interpreter import Interpreter

    assert set(Interpreter(model_path=str(path)).get_signature_list()) == expected
    assert entry.weights == {n: n for n in program.trainable}
    assert [s.name for s in entry.signatures["infer"].inputs] == list(program.input_names)
    assert [s.dtype for s in entry.signatures["infer"].inputs] == \
        [str(t.dtype).removeprefix("torch.") for t in program.example_inputs]


@pytest.mark.parametrize("name", PROGRAMS)
def test_static_checks_pass(artifacts, name):
    _, path, entry = artifacts[name]
    checks = RUNTIME.static_checks(path, entry)
    assert "builtin_ops_only" in {c.check for c in checks}
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


@pytest.mark.parametrize("name", PROGRAMS)
def test_inference_matches_pytorch(artifacts, name):
    program, path, entry = artifacts[name]
    session = RUNTIME.load(path, entry)
    with torch.no_grad():
        expected = program.run(*program.example_inputs)
    got = session.run(*[t.numpy() for t in program.example_inputs])
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == tuple(e.shape)
        assert np.abs(g - e.numpy()).max() <= 1e-4


@pytest.mark.parametrize("name", TRAIN)
def test_training_matches_pytorch_step_for_step(trained, name):
    run = trained[name]
    np.testing.assert_allclose(run["losses"], run["ref_losses"], rtol=1e-4, atol=1e-6)
    assert set(run["weights"]) == set(run["ref_weights"])
    for n, w in run["ref_weights"].items():
        np.testing.assert_allclose(run["weights"][n], w.numpy(), rtol=1e-4, atol=1e-5, err_msg=n)


@pytest.mark.parametrize("name", TRAIN)
def test_loss_falls_in_litert(trained, name):
    losses = trained[name]["losses"]
    assert losses[-10:].mean() < losses[:10].mean()


@pytest.mark.parametrize("name", TRAIN)
def test_weights_restore_through_the_restore_signature(trained, artifacts, name):
    program = artifacts[name][0]
    session = trained[name]["session"]
    initial = {n: p.detach().numpy() for n, p in program.trainable.items()}
    session.set_weights(initial)
    for n, w in session.get_weights().items():
        np.testing.assert_array_equal(w, initial[n])
    batch = program.example_batches(1)[0]
    with torch.no_grad():
        expected = float(program.module(*batch))
    assert session.train_step(*[t.numpy() for t in batch]) == pytest.approx(expected, rel=1e-5)


def test_iciia_partitioned_linear_is_builtin_batched_matmul(artifacts):
    entry = artifacts["iciia.infer"][2]
    assert "BATCH_MATMUL" in entry.notes["partitioned_linear"]
    ops = entry.notes["ops"]
    assert "BATCH_MATMUL" in ops and "TRANSPOSE" in ops


def test_training_graphs_use_builtin_gradients(artifacts):
    ops = artifacts["dcccl.train"][2].notes["ops"]
    for op in ("CONV_2D", "TRANSPOSE_CONV", "ASSIGN_VARIABLE", "READ_VARIABLE"):
        assert op in ops


def test_bce_programs_document_the_log1p_rewrite(artifacts):
    assert any("log1p" in d.description for d in artifacts["coda.classifier.train"][2].deviations)
    assert artifacts["dcccl.train"][2].deviations == []


# ---------------------------------------------------------------- builtin-only enforcement

@pytest.fixture(scope="module")
def flex_model() -> bytes:
    """A .tflite that needs the Flex delegate (TF's own ReluGrad), built with SELECT_TF_OPS allowed."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([4], tf.float32)])
    def relu_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.nn.relu(x))
        return tape.gradient(y, x)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([relu_grad.get_concrete_function()])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    return conv.convert()


def test_static_check_reports_flex_ops(flex_model, artifacts, tmp_path):
    path = tmp_path / "flex.tflite"
    path.write_bytes(flex_model)
    entry = dataclasses.replace(artifacts["dcccl.infer"][2], signatures={})
    checks = {c.check: c for c in RUNTIME.static_checks(path, entry)}
    assert not checks["builtin_ops_only"].ok
    assert "FlexReluGrad" in checks["builtin_ops_only"].detail


def test_exporter_rejects_a_converted_model_with_flex_ops(flex_model, artifacts, tmp_path, monkeypatch):
    monkeypatch.setattr(tflite_export, "convert_to_tflite", lambda functions, module: flex_model)
    path = tmp_path / "out.tflite"
    with pytest.raises(DcxError, match="FlexReluGrad"):
        EXPORTER.export(PROGRAMS["coda.classifier.train"], path, None)
    assert not path.exists()  # nothing half-written


def test_exporter_names_ops_whose_gradient_is_not_builtin(tmp_path, monkeypatch):
    """Lowering ReLU to plain tf.nn.relu (gradient: Flex ReluGrad) must fail the export, naming the op."""
    import tensorflow as tf

    from dcx.backends.tflite.passes.aten_to_tf import ATEN_TO_TF

    monkeypatch.setitem(ATEN_TO_TF, torch.ops.aten.relu.default, tf.nn.relu)
    path = tmp_path / "out.tflite"
    with pytest.raises(DcxError, match="ReluGrad"):
        EXPORTER.export(PROGRAMS["coda.classifier.train"], path, None)
    assert not path.exists()


# ---------------------------------------------------------------- user-facing errors

def test_session_errors_name_the_input(artifacts):
    program, path, entry = artifacts["dcccl.infer"]
    session = RUNTIME.load(path, entry)
    with pytest.raises(DcxError, match="'image'.*shape"):
        session.run(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(DcxError, match="1 inputs"):
        session.run()
    with pytest.raises(DcxError, match="no 'train' signature"):
        session.train_step(np.zeros((1, 1, 28, 28), np.float32))


def test_load_missing_file_is_a_clear_error(artifacts, tmp_path):
    with pytest.raises(DcxError, match="no such .tflite"):
        RUNTIME.load(tmp_path / "missing.tflite", artifacts["dcccl.infer"][2])


def test_runtime_is_available_and_versioned():
    assert RUNTIME.available() is None
    assert "ai-edge-litert" in RUNTIME.version()
    assert set(EXPORTER.versions()) == {"tensorflow-cpu", "ai-edge-litert"}

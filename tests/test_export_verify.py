"""dcx export + dcx verify: every recipe in every format, the ExecuTorch training runtime, every bad-input path."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcx.errors import DcxError
from dcx.export import ExportOptions, get_exporter
from dcx.export.manifest import MANIFEST, sha256_of, size_of
from dcx.export.pipeline import export
from dcx.recipes import resolve_recipes
from dcx.runtimes import get_runtime
from dcx.verify import verify

@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """``dcx export --recipe all --format all``, once."""
    out = tmp_path_factory.mktemp("artifacts")
    summary = export("all", "all", out, force=True)
    assert not summary.failed, summary.failed
    return out


def dcx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from dcx.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


def test_manifest_describes_every_artifact(exported):
    manifest = json.loads((exported / MANIFEST).read_text())
    programs = [p for r in resolve_recipes("all") for p in r.device_programs()]
    expected = {(p.name, f) for p in programs for f in ("executorch", "tflite", "coreml")}
    expected |= {(p.name, "onnx") for p in programs if p.kind == "infer"}
    assert {(e["program"], e["format"]) for e in manifest["artifacts"]} == expected
    for e in manifest["artifacts"]:
        path = exported / e["file"]
        assert e["sha256"] == sha256_of(path) and e["size_bytes"] == size_of(path) > 0
        assert e["inputs"] and e["outputs"] and e["versions"] and e["flops"]["forward"] > 0
        if e["kind"] == "train":
            assert e["trainable"] and e["optimizer"]["type"] == "sgd" and e["flops"]["backward"] > 0
            assert set(e["trainable"]) <= set(e["weights"])  # every trainable weight is found in the artifact
    dcccl = next(e for e in manifest["artifacts"] if e["program"] == "dcccl.train")
    assert all(n.startswith("small.") for n in dcccl["trainable"]) and all(n.startswith("mimic.") for n in dcccl["frozen"])


def test_verify_passes_every_check_it_can_run_on_linux(exported):
    rows = verify(exported)
    assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]
    ran = {(r.format, r.check) for r in rows if r.verdict == "pass"}
    for fmt in ("executorch", "tflite"):
        assert {(fmt, "forward"), (fmt, "train_20_steps_loss"), (fmt, "train_20_steps_weights")} <= ran
    assert ("onnx", "forward") in ran and ("tflite", "builtin_ops_only") in ran
    assert ("coreml", "coreml_updatable_rules") in ran
    skipped = {r.format for r in rows if r.verdict == "skipped"}
    assert skipped <= {"coreml"}  # only what needs macOS


@pytest.mark.parametrize("program_name", ["dcccl.train", "coda.classifier.train", "coda.recommender.train"])
def test_executorch_training_artifact_trains_50_steps_like_pytorch(exported, program_name):
    manifest = json.loads((exported / MANIFEST).read_text())
    entry = next(e for e in manifest["artifacts"] if e["program"] == program_name and e["format"] == "executorch")
    program = next(p for r in resolve_recipes("all") for p in r.device_programs() if p.name == program_name)
    batches = program.example_batches(50)  # real data: Fashion-MNIST / MovieLens slices
    ref_losses, ref_weights = program.reference_training(batches)
    session = get_runtime("executorch").load(exported / entry["file"], entry)
    losses = [session.train_step(*(t.numpy() for t in b)) for b in batches]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-5)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])  # it really trains
    weights = session.get_weights()
    for name, w in ref_weights.items():
        np.testing.assert_allclose(weights[name], w.numpy(), atol=1e-4)


def test_existing_folder_is_refused_without_force_and_foreign_files_survive(exported, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "dcccl.infer.onnx").write_text("a file dcx did not write")
    with pytest.raises(DcxError, match="--force"):
        export("dcccl", "onnx", out)
    summary = export("dcccl", "onnx", out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "dcccl.infer.onnx").read_text() == "a file dcx did not write"  # never replaced
    assert [f["program"] for f in summary.failed] == ["dcccl.infer"] and "not written by dcx" in summary.failed[0]["error"]


def test_a_failing_format_does_not_stop_the_others(tmp_path, monkeypatch):
    onnx_exporter = get_exporter("onnx")

    def broken(program, path, options):
        raise RuntimeError("simulated converter crash")

    monkeypatch.setattr(onnx_exporter, "export", broken)
    out = tmp_path / "out"
    monkeypatch.setattr("dcx.export.pipeline.resolve_formats", lambda fmt: ["onnx", "executorch"])
    summary = export("dcccl", "all", out)
    assert {e["format"] for e in summary.written} == {"executorch"}
    assert summary.failed and "simulated converter crash" in summary.failed[0]["error"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert {e["format"] for e in manifest["artifacts"]} == {"executorch"}
    assert manifest["failures"][0]["format"] == "onnx"
    assert not list(out.glob(".*tmp*"))


def test_interrupted_export_leaves_no_half_written_artifact(tmp_path, monkeypatch):
    exporter = get_exporter("onnx")
    real = exporter.export

    def interrupted(program, path, options: ExportOptions):
        real(program, path, options)
        Path(path).write_bytes(Path(path).read_bytes()[:100])  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "export", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export("dcccl", "onnx", out)
    assert [p.name for p in out.iterdir()] == []  # no artifact, no temporary file


def test_cli_bad_input_is_one_line(exported, tmp_path):
    cases = [
        (("export", "--recipe", "nope", "--out", str(tmp_path / "a")), "unknown recipe 'nope'"),
        (("export", "--format", "nope", "--out", str(tmp_path / "b")), "unknown format 'nope'"),
        (("export", "--format", "onnx", "--out", str(exported)), "--force"),
        (("verify", str(tmp_path / "missing")), "not a directory"),
    ]
    for args, needle in cases:
        r = dcx(*args)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered", "bad_manifest", "no_manifest"])
def test_verify_reports_damaged_artifacts(exported, tmp_path, damage):
    out = tmp_path / "copy"
    shutil.copytree(exported, out)
    target = out / "dcccl.infer.onnx"
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "altered":
        data = bytearray(target.read_bytes())
        data[-10] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "bad_manifest":
        (out / MANIFEST).write_text("{ not json")
    else:
        (out / MANIFEST).unlink()
    r = dcx("verify", str(out), "--program", "dcccl.infer")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    if damage in ("bad_manifest", "no_manifest"):
        assert "manifest.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    else:
        line = next(line for line in r.stdout.splitlines() if line.startswith("dcccl.infer.onnx"))
        assert "FAIL" in line and ("missing" in line or "sha256 mismatch" in line)


def test_fused_kernel_export_puts_the_dcx_op_in_the_pte_and_verifies(tmp_path):
    out = tmp_path / "fused"
    summary = export("iciia", "executorch", out, options=ExportOptions(fused_kernels=True))
    assert not summary.failed and "4 PartitionedLinear" in summary.written[0]["notes"]["fused_kernels"]
    rows = verify(out)
    assert all(r.ok for r in rows), rows
    assert {r.check for r in rows if r.verdict == "pass"} >= {"fused_op_present", "forward"}

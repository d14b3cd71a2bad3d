"""dcx profile on the host and under qemu-aarch64: every artifact of a full export folder, outputs checked.

(The adb target, with the emulated phone and its faults, is tested in test_adb_target.py.)
"""

import json
import subprocess
import sys

import pytest

from dcx.android.qemu import QemuTarget
from dcx.errors import DcxError
from dcx.manifest import read_manifest
from dcx.profile import latency_summary, profile
from dcx.targets.host import HostTarget


@pytest.fixture(scope="module")
def exported(exported_all):
    return exported_all


def test_profile_host_covers_every_artifact_in_every_format(exported, tmp_path):
    r = subprocess.run([sys.executable, "-c", "from dcx.cli import main; main()", "profile", str(exported),
                        "--target", "host", "--iterations", "5", "--json", str(tmp_path / "rows.json"),
                        "--png", str(tmp_path / "chart.png")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "rows.json").read_text())
    manifest = read_manifest(exported)
    assert {(row["program"], row["format"]) for row in rows} == {(e.program, e.format) for e in manifest.artifacts}
    for row in rows:
        entry = manifest.entry(row["program"], row["format"])
        assert row["size_bytes"] == entry.size_bytes and row["flops_forward"] == entry.flops.forward
        if row["format"] == "coreml":
            assert row["skipped"] and "iOS" in row["skipped"]
            continue
        assert not row["skipped"] and row["outputs_match"], row
        assert row["target"] == "host" and not row["emulated"] and row["load_ms"] > 0
        assert set(row["latency_ms"]) == {"mean", "trimmed_mean", "p50", "p90", "min", "max"}
        assert row["runtime"] == ("dcx_runner" if row["format"] == "executorch" else "python")
        if row["kind"] == "train":
            assert len(row["losses"]) == entry.reference.steps and row["steps_per_s"] > 0
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_under_qemu_marks_rows_emulated_and_counts_instructions(exported):
    rows = profile(exported, QemuTarget(), programs=["dcccl.infer", "coda.classifier.train"], iterations=3)
    native = [r for r in rows if r.format == "executorch"]
    assert len(native) == 2 and all(r.emulated and r.instructions > 0 and r.outputs_match for r in native)
    python = [r for r in rows if r.runtime == "python"]  # TFLite and ONNX run in their host runtimes
    assert python and all(r.target == "host" and not r.emulated and r.outputs_match for r in python)


def test_per_op_profile_names_the_training_kernels(exported):
    (row,) = [r for r in profile(exported, HostTarget(), programs=["dcccl.train"], per_op=True)
              if r.format == "executorch"]
    ops = {op["operator"] for op in row.top_operators}
    assert any(op.startswith("dcx::conv2d") or "conv2d" in op for op in ops), ops  # the fast-training kernels ran


def test_outputs_that_differ_from_the_reference_are_flagged(exported, tmp_path):
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    ref = folder / "reference" / "dcccl.infer.safetensors"
    from safetensors import safe_open

    with safe_open(str(ref), framework="numpy") as f:
        meta = f.metadata()
    tensors = load_file(str(ref))
    tensors["output/logits"] = tensors["output/logits"] + np.float32(0.1)
    save_file(tensors, str(ref), metadata=meta)
    (row,) = [r for r in profile(folder, HostTarget(), programs=["dcccl.infer"], iterations=2)
              if r.format == "executorch"]
    assert row.outputs_match is False and row.max_error == pytest.approx(0.1, rel=1e-3)


def test_bad_input(exported):
    with pytest.raises(DcxError, match="--programs nope"):
        profile(exported, HostTarget(), programs=["nope"])
    from dcx.targets import get_target

    with pytest.raises(DcxError, match="choose host, qemu or adb"):
        get_target("phone")


def test_latency_summary_is_the_runners():
    s = latency_summary([float(x) for x in range(1, 11)])
    assert s == {"mean": 5.5, "trimmed_mean": 5.5, "p50": 5.5, "p90": pytest.approx(9.1), "min": 1.0, "max": 10.0}

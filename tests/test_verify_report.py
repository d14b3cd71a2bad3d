"""What ``dcx verify`` reports besides pass and FAIL: checks it could not run, formats that failed at export,
``--strict``, and bad input (a --program matching nothing, a manifest naming a weight location the artifact does
not have, a reference that disagrees with the manifest)."""

import json
import subprocess
import sys

import pytest
import torch

import dcx
from dcx.manifest import MANIFEST
from test_export_verify import CumSumNet  # TFLite has no lowering for its cumsum: that format fails at export


def dcx_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from dcx.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def cumsum(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify_report") / "cumsum"
    program = dcx.inference_program("cumsum.infer", CumSumNet(), (torch.rand(1, 4),), ("x",), ("y",))
    summary = dcx.export_programs([program], out)
    assert [f.format for f in summary.failed] == ["tflite"]
    return out


def test_not_run_rows_and_export_failures_are_reported_and_strict_fails_them(cumsum):
    rows = dcx.verify(cumsum)
    not_run = {(r.format, r.check) for r in rows if r.verdict == "not run"}
    assert ("tflite", "export") in not_run  # the format that failed at export, from the manifest
    if sys.platform != "darwin":
        assert ("coreml", "execution") in not_run and all(r.verdict != "FAIL" for r in rows)
    r = dcx_cli("verify", str(cumsum))
    assert r.returncode == 0, r.stdout[-2000:]
    summary = r.stdout.strip().splitlines()[-1]
    assert " 0 failed" in summary and "not run" in summary and "failed at export, not verified: tflite" in summary
    strict = dcx_cli("verify", str(cumsum), "--strict")
    assert strict.returncode == 1 and "--strict" in strict.stdout


def test_a_program_filter_matching_nothing_is_a_one_line_error(cumsum):
    r = dcx_cli("verify", str(cumsum), "--program", "nosuch")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "--program 'nosuch'" in r.stderr and "manifest.json" in r.stderr and "cumsum.infer" in r.stderr


def _edit_manifest(folder, edit) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    edit(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_a_weight_location_the_artifact_lacks_fails_naming_the_field(cumsum, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(cumsum, folder)

    def move(manifest):
        entry = next(e for e in manifest["artifacts"] if e["format"] == "onnx")
        entry["weight_coverage"]["verbatim"][0]["region"] = "initializer nowhere"

    _edit_manifest(folder, move)
    r = dcx_cli("verify", str(folder), "--program", "cumsum")
    assert r.returncode == 1
    line = next(line for line in r.stdout.splitlines() if "onnx" in line and " weights " in line)
    assert "FAIL" in line and "weight_coverage" in line and "initializer nowhere" in line


def test_a_reference_that_disagrees_with_the_manifest_fails_naming_file_and_field(cumsum, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(cumsum, folder)

    def forget(manifest):
        for e in manifest["artifacts"]:
            e["reference"]["tensors"].pop("input/x")

    _edit_manifest(folder, forget)
    rows = [r for r in dcx.verify(folder) if r.check == "reference"]
    assert rows and all(r.verdict == "FAIL" for r in rows)
    assert all("cumsum.infer.safetensors" in r.detail and "reference.tensors" in r.detail and "input/x" in r.detail
               for r in rows)

"""train -> export --checkpoint -> verify: trained artifacts in every format, checked from their references alone.

One module fixture runs the cloud phase of every recipe (``--quick``), exports
the trained device programs to every format and keeps the folders; the tests
verify them, tamper with them, and score them on real data.
"""

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dcx.methods.checkpoint import load_checkpoint, write_checkpoint
from dcx.data.fashion_mnist import load_fashion_mnist
from dcx.errors import DcxError
from dcx.backends import get_exporter, get_runtime
from dcx.backends.executorch.options import ExecuTorchOptions
from dcx.methods.export import export_recipe
from dcx.backends.stored import stored_tensors
from dcx.manifest import MANIFEST, read_manifest, sha256_of
from dcx.methods import get_recipe
from dcx.reference import ProgramReference
from dcx.verification import verify

RECIPES = ("dcccl", "iciia", "coda")


def dcx(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from dcx.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode != 0 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """recipe -> (checkpoint folder, export folder): `dcx train --quick`, then `dcx export --checkpoint`."""
    root = tmp_path_factory.mktemp("trained")
    result = {}
    for name in RECIPES:
        ckpt, art = root / "ckpt" / name, root / "art" / name
        r = dcx("train", name, "--quick", "--out", str(ckpt))
        assert r.returncode == 0, r.stderr
        r = dcx("export", "--checkpoint", str(ckpt), "--out", str(art))
        assert r.returncode == 0, r.stderr
        result[name] = (ckpt, art)
    return result


def entries(trained, kind: str | None = None):
    for _, art in trained.values():
        for e in read_manifest(art).artifacts:
            if kind is None or e.kind == kind:
                yield art, e


# ---------------------------------------------------------------- the pipeline, end to end

def test_manifest_describes_trained_artifacts(trained):
    for name, (ckpt, art) in trained.items():
        manifest = read_manifest(art)
        programs = get_recipe(name).program_names
        formats = {(e.program, e.format) for e in manifest.artifacts}
        assert formats == {(p, f) for p in programs for f in ("executorch", "tflite", "coreml", "onnx")
                           if not (f == "onnx" and p.endswith(".train"))}
        for e in manifest.artifacts:
            assert e.provenance.weights == "checkpoint" and e.provenance.checkpoint == str(ckpt)
            assert (art / e.reference.file).is_file() and e.sha256 == sha256_of(art / e.file)
            if e.kind == "train":
                assert e.trainable and e.optimizer.lr > 0 and e.flops.backward > 0 and e.reference.steps == 20
                assert set(e.trainable) <= set(e.weights)
                assert {loc.name for loc in e.weight_coverage.verbatim} & set(e.trainable)  # trainable weights located
                assert {loc.name for loc in e.weight_coverage.verbatim} & set(e.frozen)  # and frozen ones
    dcccl = read_manifest(trained["dcccl"][1]).entry("dcccl.train", "executorch")
    assert all(n.startswith("small.") for n in dcccl.trainable) and all(n.startswith("mimic.") for n in dcccl.frozen)


def test_exported_weights_are_the_trained_ones(trained):
    """The artifacts carry the checkpoint's distilled mimic and trained S, not a fresh initialisation."""
    ckpt, art = trained["dcccl"]
    _, _, modules = load_checkpoint(ckpt)
    reference = ProgramReference.load(art / read_manifest(art).entry("dcccl.train", "tflite").reference.file)
    for n, w in modules["mimic"].state_dict().items():
        np.testing.assert_array_equal(reference.frozen[f"mimic.{n}"], w.numpy())
    fresh = get_recipe("dcccl").build_modules(0)["mimic"].state_dict()
    assert not np.array_equal(reference.frozen["mimic.fc2.weight"], fresh["fc2.weight"].numpy())


def test_verify_passes_every_check_it_can_run_on_linux(trained):
    for name, (_, art) in trained.items():
        rows = verify(art)
        assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]
        ran = {(r.format, r.check) for r in rows if r.verdict == "pass"}
        assert {(f, "weights") for f in ("executorch", "tflite", "coreml")} <= ran
        if name != "iciia":
            for fmt in ("executorch", "tflite"):
                assert {(fmt, "train_20_steps_loss"), (fmt, "train_20_steps_weights")} <= ran
            assert ("coreml", "coreml_training_gap") in ran
        assert ("onnx", "forward") in ran and ("executorch", "forward") in ran and ("tflite", "forward") in ran
        assert {r.format for r in rows if r.verdict == "not run"} <= {"coreml"}  # only what needs macOS


def test_dcccl_infer_matches_the_checkpoint_model_on_real_test_images(trained):
    ckpt, art = trained["dcccl"]
    _, recipe, modules = load_checkpoint(ckpt)
    program = next(p for p in recipe.device_programs(0, modules) if p.name == "dcccl.infer")
    test = load_fashion_mnist("test")
    images = test.images[:2000]
    with torch.no_grad():
        expected = program.module(images).argmax(1).numpy()
    manifest = read_manifest(art)
    for fmt in ("tflite", "onnx"):
        entry = manifest.entry("dcccl.infer", fmt)
        session = get_runtime(fmt).load(art / entry.file, entry)
        got = np.array([int(np.argmax(session.run(images[i : i + 1].numpy())[0])) for i in range(len(images))])
        assert np.mean(got == expected) >= 0.999, fmt
        assert np.mean(got == test.labels[:2000].numpy()) > 0.35, fmt  # chance is 0.1


@pytest.mark.parametrize("program_name", ["dcccl.train", "coda.classifier.train", "coda.recommender.train"])
def test_executorch_training_artifact_trains_50_steps_like_pytorch(trained, program_name):
    recipe_name = program_name.split(".")[0]
    ckpt, art = trained[recipe_name]
    _, recipe, modules = load_checkpoint(ckpt)
    program = next(p for p in recipe.device_programs(0, modules) if p.name == program_name)
    entry = read_manifest(art).entry(program_name, "executorch")
    batches = program.example_batches(50)  # real data: Fashion-MNIST / MovieLens slices
    run = program.reference_training(batches)
    ref_losses, ref_weights = run.losses, run.weights
    session = get_runtime("executorch").load(art / entry.file, entry)
    losses = [session.train_step(*(t.numpy() for t in b)) for b in batches]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    weights = session.get_weights()
    for name, w in ref_weights.items():
        np.testing.assert_allclose(weights[name], w.numpy(), atol=1e-5)
    first = [t.numpy() for t in batches[0]]
    assert session.train_step(*first) < losses[0]  # it really trains: the first batch's loss fell


def test_weights_set_into_a_training_session_are_used(trained):
    """set_weights (the cloud's fused model into the device program) before and after the first step."""
    _, art = trained["dcccl"]
    entry = read_manifest(art).entry("dcccl.train", "executorch")
    reference = ProgramReference.load(art / entry.reference.file)
    for fmt in ("executorch", "tflite"):
        entry = read_manifest(art).entry("dcccl.train", fmt)
        session = get_runtime(fmt).load(art / entry.file, entry)
        session.set_weights(reference.final)
        first = session.train_step(*reference.batch_arrays(0))
        again = get_runtime(fmt).load(art / entry.file, entry)
        again.set_weights(reference.initial)
        assert again.train_step(*reference.batch_arrays(0)) == pytest.approx(float(reference.losses[0]), rel=1e-5)
        assert first != pytest.approx(float(reference.losses[0]), rel=1e-5)


# ---------------------------------------------------------------- tampering

def _alter_weight(path: Path, fmt: str, location) -> None:
    (region,) = [t for t in stored_tensors(fmt, path) if t.region == location.region]
    target = path / region.file if region.file else path
    data = bytearray(target.read_bytes())
    data[region.offset + region.nbytes // 2] ^= 0x01  # one low mantissa bit of one float
    target.write_bytes(bytes(data))


def _rehash(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    for e in manifest["artifacts"]:
        e["sha256"] = sha256_of(folder / e["file"])
    (folder / MANIFEST).write_text(json.dumps(manifest))


TRAINING = [(p, f) for p in ("dcccl.train", "coda.classifier.train", "coda.recommender.train")
            for f in ("executorch", "tflite", "coreml")]


@pytest.mark.parametrize("program_name,fmt", TRAINING)
@pytest.mark.parametrize("which", ["frozen", "trainable"])
def test_verify_names_an_altered_weight(trained, tmp_path, program_name, fmt, which):
    _, art = trained[program_name.split(".")[0]]
    folder = tmp_path / "copy"
    shutil.copytree(art, folder)
    entry = read_manifest(folder).entry(program_name, fmt)
    names = set(entry.frozen) if which == "frozen" else set(entry.trainable)
    location = max((loc for loc in entry.weight_coverage.verbatim if loc.name in names), key=lambda loc: loc.nbytes)
    _alter_weight(folder / entry.file, fmt, location)
    _rehash(folder)
    rows = [r for r in verify(folder, program_filter=program_name) if r.format == fmt]
    failed = [r for r in rows if not r.ok]
    assert [r.check for r in failed] == ["weights"], rows
    assert location.name in failed[0].detail


# ---------------------------------------------------------------- verify needs only the folder

def test_verify_runs_in_a_fresh_process_without_recipes_or_datasets(trained, tmp_path):
    _, art = trained["coda"]
    script = ("import sys; sys.modules['dcx.methods'] = None; sys.modules['dcx.data'] = None\n"
              "from dcx.cli import main; main()")
    env = {**os.environ, "DCX_FASHION_MNIST_DIR": str(tmp_path / "none"), "DCX_MOVIELENS_DIR": str(tmp_path / "none")}
    r = subprocess.run([sys.executable, "-c", script, "verify", str(art)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert " 0 failed" in r.stdout


# ---------------------------------------------------------------- the Python API on a user's own model

class UserNet(torch.nn.Module):
    """Not a dcx recipe: a frozen convolutional feature extractor and a trainable linear head."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
                                            torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.features(x))


class UserLoss(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, y):
        return torch.nn.functional.cross_entropy(self.net(x), y)


def test_a_users_model_exports_to_every_format_and_verifies(tmp_path):
    import dcx

    torch.manual_seed(0)
    net = UserNet()
    for p in net.features.parameters():
        p.requires_grad_(False)
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 3, (8,))
    batches = [(torch.rand(8, 1, 16, 16), torch.randint(0, 3, (8,))) for _ in range(5)]
    train = dcx.training_program("user.train", UserLoss(net), (x, y), ("image", "label"), lr=0.1, batches=batches)
    infer = dcx.inference_program("user.infer", UserNet(), (x[:1],), ("image",), ("logits",))
    summary = dcx.export_programs([train, infer], tmp_path / "user")
    assert not summary.failed, summary.failed
    assert {(e.program, e.format) for e in summary.written} == \
        {("user.train", f) for f in ("executorch", "tflite", "coreml")} | \
        {("user.infer", f) for f in ("executorch", "tflite", "coreml", "onnx")}
    entry = read_manifest(tmp_path / "user").entry("user.train", "executorch")
    assert set(entry.trainable) == {"net.head.weight", "net.head.bias"} and entry.recipe is None
    assert entry.provenance.weights == "user"
    rows = dcx.verify(tmp_path / "user")
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    assert {(r.format, r.check) for r in rows if r.verdict == "pass"} >= {
        ("executorch", "train_20_steps_loss"), ("tflite", "train_20_steps_weights"), ("onnx", "forward"),
        ("coreml", "coreml_training_gap")}


class CumSumNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.cumsum(self.fc(x), dim=1)


def test_an_op_a_backend_cannot_take_fails_that_format_only(tmp_path):
    import dcx

    program = dcx.inference_program("cumsum.infer", CumSumNet(), (torch.rand(1, 4),), ("x",), ("y",))
    summary = dcx.export_programs([program], tmp_path / "cumsum")
    assert [(f.format, f.op) for f in summary.failed] == [("tflite", "aten.cumsum.default")]
    error = summary.failed[0].error
    assert "\n" not in error and "cumsum" in error and "tflite" in error and "cumsum.infer" in error
    assert {e.format for e in summary.written} == {"executorch", "coreml", "onnx"}
    assert all(r.ok for r in dcx.verify(tmp_path / "cumsum"))


def test_api_rejects_malformed_programs():
    import dcx

    with pytest.raises(DcxError, match="one name per input"):
        dcx.inference_program("bad", CumSumNet(), (torch.rand(1, 4),), ("x", "y"), ("y",))
    frozen = UserLoss(UserNet())
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(DcxError, match="nothing would train"):
        dcx.training_program("bad", frozen, (torch.rand(2, 1, 16, 16), torch.tensor([0, 1])), ("x", "y"), 0.1)


# ---------------------------------------------------------------- bad input

def test_checkpoint_of_another_recipe_or_config_is_refused(trained, tmp_path):
    ckpt = trained["dcccl"][0]
    one_line_error(dcx("export", "--recipe", "iciia", "--checkpoint", str(ckpt), "--out", str(tmp_path / "a")),
                   "trained for recipe 'dcccl', not 'iciia'")
    one_line_error(dcx("export", "--checkpoint", str(ckpt), "--set", "ratio=0.25", "--out", str(tmp_path / "b")),
                   "ratio=0.125")
    with pytest.raises(DcxError, match="asks for ratio=0.25"):
        load_checkpoint(ckpt, "dcccl", {"ratio": 0.25})


@pytest.mark.parametrize("damage", ["missing_tensors", "missing_index", "altered_tensors", "old_schema"])
def test_damaged_checkpoint_is_a_one_line_error(trained, tmp_path, damage):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained["coda"][0], ckpt)
    if damage == "missing_tensors":
        (ckpt / "modules.safetensors").unlink()
        needle = "modules.safetensors is missing"
    elif damage == "missing_index":
        (ckpt / "checkpoint.json").unlink()
        needle = "checkpoint.json is missing"
    elif damage == "altered_tensors":
        data = bytearray((ckpt / "modules.safetensors").read_bytes())
        data[-5] ^= 0xFF
        (ckpt / "modules.safetensors").write_bytes(bytes(data))
        needle = "does not match the sha256"
    else:
        index = json.loads((ckpt / "checkpoint.json").read_text())
        index["schema"] = 0
        (ckpt / "checkpoint.json").write_text(json.dumps(index))
        needle = "re-run `dcx train`"
    one_line_error(dcx("export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")), needle)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_train_refuses_an_existing_folder_and_replaces_only_with_force(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    one_line_error(dcx("train", "coda", "--quick", "--out", str(out)), "--force")
    one_line_error(dcx("train", "coda", "--quick", "--out", str(out), "--force"), "not a dcx checkpoint")
    assert (out / "mine.txt").read_text() == "mine"


def test_set_is_checked_against_the_config():
    one_line_error(dcx("train", "dcccl", "--set", "nope=1", "--out", "/tmp/never"), "valid keys:")
    one_line_error(dcx("evaluate", "--recipe", "dcccl", "--set", "ratio=abc"), "expects float for ratio")
    one_line_error(dcx("export", "--recipe", "coda", "--set", "dim", "--out", "/tmp/never"), "expected key=value")
    assert get_recipe("iciia", partitions=8).cfg.partitions == 8
    assert get_recipe("dcccl", quick=True).cfg.cloud_samples < get_recipe("dcccl").cfg.cloud_samples
    with pytest.raises(DcxError, match="expects tuple"):
        get_recipe("dcccl", base_channels="wide")


def test_os_errors_are_one_line_and_leave_nothing_half_written(tmp_path, monkeypatch):
    one_line_error(dcx("export", "--recipe", "dcccl", "--format", "onnx", "--out", "/sys/dcx-out"),
                   "--out /sys/dcx-out")
    (tmp_path / "file").write_text("x")
    one_line_error(dcx("export", "--recipe", "dcccl", "--format", "onnx", "--out", str(tmp_path / "file" / "sub")),
                   "file")
    one_line_error(dcx("train", "coda", "--quick", "--out", "/proc/version/ckpt"), "/proc/version")

    real_write_bytes = Path.write_bytes

    def disk_full(self, data):
        if "dcccl.infer.pte" in self.name:  # the disk fills after dcccl.train is written in every format
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    out = tmp_path / "full"
    with pytest.raises(DcxError, match="No space left on device; free some space"):
        export_recipe("dcccl", "all", out)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    kept = read_manifest(out)  # nothing lost: what finished before the disk filled is listed and on disk
    assert {e.program for e in kept.artifacts} == {"dcccl.train"}
    assert all((out / e.file).exists() for e in kept.artifacts)
    monkeypatch.undo()
    assert not export_recipe("dcccl", "onnx", out, force=True).failed  # and a re-export can go on from there


def test_manifest_entry_outside_the_folder_and_old_schema_are_refused(trained, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(trained["iciia"][1], folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["artifacts"][0]["file"] = "../../etc/passwd"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    one_line_error(dcx("verify", str(folder)), "lies outside the export folder")
    manifest["schema"] = 1
    (folder / MANIFEST).write_text(json.dumps(manifest))
    one_line_error(dcx("verify", str(folder)), "re-export")


def test_existing_folder_is_refused_without_force_and_foreign_files_survive(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "dcccl.infer.onnx").write_text("a file dcx did not write")
    with pytest.raises(DcxError, match="--force"):
        export_recipe("dcccl", "onnx", out)
    summary = export_recipe("dcccl", "onnx", out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "dcccl.infer.onnx").read_text() == "a file dcx did not write"  # never replaced
    assert [f.program for f in summary.failed] == ["dcccl.infer"] and "not written by dcx" in summary.failed[0].error


def test_a_failing_format_does_not_stop_the_others(tmp_path, monkeypatch):
    def broken(program, path, options, reference=None):
        raise RuntimeError("simulated converter crash")

    monkeypatch.setattr(get_exporter("onnx"), "export", broken)
    out = tmp_path / "out"
    summary = export_recipe("dcccl", "all", out)
    assert {e.format for e in summary.written} == {"executorch", "tflite", "coreml"}
    assert summary.failed and "simulated converter crash" in summary.failed[0].error
    manifest = read_manifest(out)
    assert {e.format for e in manifest.artifacts} == {"executorch", "tflite", "coreml"}
    assert manifest.failures[0].format == "onnx"
    assert not list(out.rglob(".*tmp*"))


def test_interrupted_export_leaves_no_half_written_artifact(tmp_path, monkeypatch):
    exporter = get_exporter("onnx")
    real = exporter.export

    def interrupted(program, path, options=None, reference=None):
        real(program, path, options)
        Path(path).write_bytes(Path(path).read_bytes()[:100])  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "export", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export_recipe("dcccl", "onnx", out)
    assert not [p for p in out.rglob("*") if p.suffix == ".onnx" or "tmp" in p.name]
    assert read_manifest(out).artifacts == []
    monkeypatch.undo()
    assert not export_recipe("dcccl", "onnx", out, force=True).failed  # the complete reference is dcx's own


def test_cli_bad_input_is_one_line(trained, tmp_path):
    cases = [
        (("export", "--recipe", "nope", "--out", str(tmp_path / "a")), "unknown recipe 'nope'"),
        (("export", "--recipe", "dcccl", "--format", "nope", "--out", str(tmp_path / "b")), "unknown format 'nope'"),
        (("export", "--recipe", "dcccl", "--format", "onnx", "--out", str(trained["dcccl"][1])), "--force"),
        (("export", "--recipe", "dcccl", "--user", "3", "--out", str(tmp_path / "c")), "--user does not apply"),
        (("export", "--out", str(tmp_path / "d")), "--checkpoint"),
        (("verify", str(tmp_path / "missing")), "not a directory"),
        (("train", "nope", "--out", str(tmp_path / "e")), "unknown recipe 'nope'"),
        (("export", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "f")), "no such checkpoint"),
    ]
    for args, needle in cases:
        one_line_error(dcx(*args), needle)


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered", "reference_missing", "bad_manifest",
                                    "no_manifest"])
def test_verify_reports_damaged_artifacts(trained, tmp_path, damage):
    out = tmp_path / "copy"
    shutil.copytree(trained["dcccl"][1], out)
    target = out / "dcccl.infer.onnx"
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "altered":
        data = bytearray(target.read_bytes())
        data[-10] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "reference_missing":
        (out / "reference" / "dcccl.infer.safetensors").unlink()
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
    summary = export_recipe("iciia", "executorch", out, options={"executorch": ExecuTorchOptions(fused_kernels=True)})
    assert not summary.failed
    entry = summary.written[0]
    assert entry.requires.custom_ops == ["dcx::shuffled_partitioned_linear.out"]
    assert next(p for p in entry.passes if p.name == "fuse_partitioned_linear").changes["layers"] == 4
    rows = verify(out)
    assert all(r.ok for r in rows), rows
    assert {r.check for r in rows if r.verdict == "pass"} >= {"custom_ops_present", "forward", "weights"}


def test_checkpoint_round_trips_exactly(tmp_path):
    recipe = get_recipe("iciia", quick=True)
    modules = recipe.build_modules(3)
    from dcx.methods import TrainedModules

    write_checkpoint(tmp_path / "c", recipe, TrainedModules(modules, {"acc": 0.5}), seed=3, quick=True)
    ckpt, again, loaded = load_checkpoint(tmp_path / "c")
    assert ckpt.seed == 3 and ckpt.quick and ckpt.metrics == {"acc": 0.5} and again.cfg == recipe.cfg
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            assert torch.equal(loaded[name].state_dict()[k], v)
    assert dataclasses.asdict(again.cfg) == dataclasses.asdict(recipe.cfg)

"""The native runner (runtimes/native) on the host and, as its aarch64 bundle, under qemu-aarch64.

Real artifacts from ``dcx export`` with their references: inference outputs
match ExecuTorch's Python pybindings, training losses match eager PyTorch SGD
and the Python training pybindings step for step; the JSON result has every
field; bad input gives one line and its exit code; qemu instruction counts are
positive and repeatable. A module fixture runs ``runtimes/native/build.sh``
(idempotent; seconds when already built), as the set-up does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dcx.targets import RunRequest
from dcx.targets.host import HostTarget, native_build_dir
from dcx.targets.runner import kernel_libraries, run_artifact, top_operators

REPO = Path(__file__).resolve().parents[1]

from dcx.android.bundle import LOADER  # noqa: E402
from dcx.android.bundle import read_manifest as read_bundle_manifest  # noqa: E402
from dcx.android.qemu import QemuTarget  # noqa: E402
from dcx.manifest import read_manifest  # noqa: E402

INFER = ["dcccl.infer", "iciia.infer", "coda.classifier.infer", "coda.recommender.infer"]
TRAIN = ["dcccl.train", "coda.classifier.train", "coda.recommender.train"]
TARGETS = {"host": HostTarget(), "qemu": QemuTarget()}
LATENCY_KEYS = {"mean", "trimmed_mean", "p50", "p90", "min", "max"}
COMMON_KEYS = {"runner", "version", "model", "program", "kind", "method", "inputs", "backends", "threads",
               "kernel_libs", "load_ms", "first_ms", "warmup", "iterations", "latency_ms", "peak_rss_kb",
               "peak_rss_delta_kb", "planned_memory_bytes", "outputs", "etdump"}
TRAIN_KEYS = {"train_steps", "lr", "steps_per_s", "losses", "parameters"}


def _dcx(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-c", "from dcx.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, f"dcx {' '.join(args)} failed:\n{proc.stderr}"


@pytest.fixture(scope="module", autouse=True)
def built(native_built):
    """Every test here runs the runner."""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """``dcx export`` of every recipe to ExecuTorch, plus ICIIA with its fused kernel: name -> (folder, entry)."""
    plain, fused = tmp_path_factory.mktemp("pte"), tmp_path_factory.mktemp("pte-fused")
    # stock training programs (portable kernels); the fast ones are tested with their kernels in test_training_kernels
    _dcx("export", "--recipe", "all", "--format", "executorch", "--no-fast-training", "--out", str(plain), "--force")
    _dcx("export", "--recipe", "iciia", "--format", "executorch", "--fused-kernels", "--out", str(fused), "--force")
    found = {}
    for folder, suffix in ((plain, ""), (fused, "+fused")):
        for entry in read_manifest(folder).artifacts:
            found[entry.program + suffix] = (folder, entry)
    return found


def _files(exported, name: str) -> tuple[Path, Path, dict]:
    folder, entry = exported[name]
    return folder / entry.file, folder / entry.reference.file, entry


def _reference(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _pybindings_outputs(model: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    buffer = model.read_bytes()  # the loaded program points into it
    module = _load_for_executorch_from_buffer(buffer)
    return [t.numpy().copy() for t in module.forward(tuple(torch.from_numpy(a) for a in inputs))]


def _pybindings_training_losses(model: Path, batches: list[list[np.ndarray]], lr: float) -> list[float]:
    from executorch.extension.training import _load_for_executorch_for_training_from_buffer, get_sgd_optimizer

    buffer = model.read_bytes()
    module = _load_for_executorch_for_training_from_buffer(buffer)
    optimizer, losses = None, []
    for batch in batches:
        out = module.forward_backward("forward", tuple(torch.from_numpy(a) for a in batch))
        if optimizer is None:  # parameters exist only after the first forward_backward
            optimizer = get_sgd_optimizer(module.named_parameters(), lr, 0.0, 0.0, 0.0, False)
        optimizer.step(module.named_gradients())
        losses.append(float(out[0]))
    return losses


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("program", [*INFER, "iciia.infer+fused"])
def test_inference_matches_pybindings(exported, tmp_path, target, program):
    model, reference, entry = _files(exported, program)
    tensors, meta = _reference(reference)
    t = TARGETS[target]
    libs = kernel_libraries(t, entry)
    assert bool(libs) == program.endswith("+fused")
    if libs:
        from dcx.kernels.partitioned_linear import load_executorch_kernels

        load_executorch_kernels()  # the pybindings need the host kernels too
    run = run_artifact(t, model, reference, tmp_path, kernel_libs=libs, iterations=3, warmup=1)
    expected = _pybindings_outputs(model, [tensors[f"input/{n}"] for n in json.loads(meta["inputs"])])
    names = json.loads(meta["outputs"])
    assert sorted(run.outputs) == sorted(f"output/{n}" for n in names)
    for name, want in zip(names, expected):
        got = run.outputs[f"output/{name}"]
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f"{program} {name} on {target}")
    assert run.result["program"] == entry.program and run.result["inputs"] == "reference"
    # the XNNPACK delegate is registered in the runner and used exactly where the manifest says it is
    delegated = any(p.name == "lower_to_xnnpack" and p.changes.get("delegates") for p in entry.passes)
    assert ("XnnpackBackend" in run.result["backends"]) == delegated


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("program", TRAIN)
def test_training_matches_eager_sgd_and_training_pybindings(exported, tmp_path, target, program):
    model, reference, _ = _files(exported, program)
    tensors, meta = _reference(reference)
    steps, lr = int(meta["steps"]), float(meta["lr"])
    run = run_artifact(TARGETS[target], model, reference, tmp_path)
    losses = np.asarray(run.result["losses"])
    assert run.result["train_steps"] == steps and run.result["lr"] == lr
    np.testing.assert_allclose(losses, tensors["loss"], rtol=1e-5, err_msg=f"losses vs eager PyTorch on {target}")
    np.testing.assert_allclose(run.outputs["loss"], losses, rtol=0, atol=0)
    names = json.loads(meta["inputs"])
    batches = [[tensors[f"batch/{s}/{n}"] for n in names] for s in range(steps)]
    np.testing.assert_allclose(losses, _pybindings_training_losses(model, batches, lr), rtol=1e-5,
                               err_msg=f"losses vs the training pybindings on {target}")
    trainable = json.loads(meta["trainable"])
    assert run.result["parameters"] == trainable
    for name in trainable:  # the runner's in-place SGD is the training step: weights end where PyTorch's do
        np.testing.assert_allclose(run.outputs[f"param/final/{name}"], tensors[f"param/final/{name}"], rtol=0,
                                   atol=1e-5, err_msg=name)
    assert not np.allclose(tensors[f"param/final/{trainable[0]}"], tensors[f"param/initial/{trainable[0]}"])


def _check_latency(result: dict) -> None:
    lat = result["latency_ms"]
    assert set(lat) == LATENCY_KEYS
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["max"]
    assert lat["min"] <= lat["trimmed_mean"] <= lat["max"] and lat["min"] <= lat["mean"] <= lat["max"]


def test_result_has_every_field(exported, tmp_path):
    model, reference, entry = _files(exported, "iciia.infer")
    infer = run_artifact(TARGETS["host"], model, reference, tmp_path, iterations=7, warmup=2).result
    assert set(infer) == COMMON_KEYS
    assert (infer["runner"], infer["kind"], infer["method"], infer["threads"]) == ("dcx_runner", "infer", "forward", 1)
    assert (infer["warmup"], infer["iterations"]) == (2, 7)
    _check_latency(infer)
    assert infer["load_ms"] > 0 and infer["first_ms"] > 0 and infer["planned_memory_bytes"] > 0
    assert infer["peak_rss_kb"] >= infer["peak_rss_delta_kb"] > 0

    model, reference, entry = _files(exported, "coda.classifier.train")
    train = run_artifact(TARGETS["host"], model, reference, tmp_path, train_steps=4).result
    assert set(train) == COMMON_KEYS | TRAIN_KEYS
    assert (train["kind"], train["warmup"], train["iterations"], train["train_steps"]) == ("train", 0, 3, 4)
    assert len(train["losses"]) == 4 and train["steps_per_s"] > 0 and train["lr"] == entry.optimizer.lr
    _check_latency(train)


def test_generated_inputs_when_no_reference(exported, tmp_path):
    model, _, _ = _files(exported, "dcccl.infer")
    run = run_artifact(TARGETS["host"], model, None, tmp_path, iterations=1)
    assert run.result["inputs"] == "generated" and run.result["program"] is None
    assert np.all(np.isfinite(run.outputs["output/0"])) and run.outputs["output/0"].shape == (1, 10)


def test_etdump_names_the_operators_that_took_the_time(exported, tmp_path):
    model, reference, _ = _files(exported, "dcccl.train")
    run = run_artifact(TARGETS["host"], model, reference, tmp_path, train_steps=2, etdump=True)
    assert run.etdump is not None and run.result["etdump"] == "run.etdp"
    rows = top_operators(run.etdump, limit=50)
    ops = {r["operator"] for r in rows}
    assert {"convolution.out", "convolution_backward.out"} <= ops  # the joint graph's conv forward and backward
    assert all(r["ms_per_run"] > 0 and not r["delegated"] for r in rows)
    assert 0 < sum(r["share"] for r in rows) <= 1.0 + 1e-9

    model, reference, _ = _files(exported, "iciia.infer")
    run = run_artifact(TARGETS["host"], model, reference, tmp_path, iterations=2, etdump=True)
    assert any(r["delegated"] for r in top_operators(run.etdump, limit=50))  # XNNPACK reports its nodes


def _run(target: str, args: list[str], push: dict[str, Path], tmp_path: Path):
    res = TARGETS[target].run(RunRequest(args, push), tmp_path)
    lines = res.stderr.strip().splitlines()
    return res.returncode, lines


@pytest.mark.parametrize("target", TARGETS)
def test_custom_op_without_kernel_lib_names_the_operator(exported, tmp_path, target):
    model, reference, _ = _files(exported, "iciia.infer+fused")
    code, lines = _run(target, ["--model", model.name, "--reference", reference.name],
                       {model.name: model, reference.name: reference}, tmp_path)
    assert code == 3 and len(lines) == 1, lines
    assert "dcx::shuffled_partitioned_linear.out" in lines[0] and "--kernel-lib" in lines[0]


def test_bad_input_is_one_line_with_its_exit_code(exported, tmp_path):
    model, reference, _ = _files(exported, "dcccl.infer")
    other_reference = _files(exported, "iciia.infer")[1]
    garbage = tmp_path / "garbage.pte"
    garbage.write_bytes(bytes(range(256)) * 8)
    push = {model.name: model, "ref.safetensors": reference, "other.safetensors": other_reference,
            "garbage.pte": garbage, "truncated.safetensors": tmp_path / "truncated.safetensors"}
    (tmp_path / "truncated.safetensors").write_bytes(reference.read_bytes()[:100])
    cases = [
        (["--model", "missing.pte"], 3, "--model missing.pte: no such file"),
        (["--model", "garbage.pte"], 3, "--model garbage.pte: not a loadable ExecuTorch program"),
        (["--model", model.name, "--reference", "missing.safetensors"], 3, "--reference missing.safetensors"),
        (["--model", model.name, "--reference", "truncated.safetensors"], 3, "not a safetensors file"),
        (["--model", model.name, "--reference", "other.safetensors"], 3, "lists 2 inputs, the method takes 1"),
        (["--model", model.name, "--kernel-lib", "garbage.pte"], 3, "--kernel-lib garbage.pte: cannot load"),
        (["--model", model.name, "--method", "train"], 2, "--method train"),
        (["--model", model.name, "--iterations", "0"], 2, "--iterations"),
        (["--model", model.name, "--train-steps", "3"], 2, "--train-steps"),
        (["--model", model.name, "--bogus", "1"], 2, "unknown flag --bogus"),
        ([], 2, "--model is required"),
    ]
    for args, code, text in cases:
        got, lines = _run("host", args, push, tmp_path / "pulled")
        assert got == code and len(lines) == 1 and text in lines[0], (args, got, lines)


def test_bundle_is_self_contained_and_runs_from_any_folder(tmp_path):
    bundle = native_build_dir() / "bundle"
    manifest = read_bundle_manifest(bundle)
    assert {"dcx_runner", LOADER, "libc.so.6", "libexecutorch.so", "libexecutorch_backend_xnnpack.so"} <= set(
        manifest["files"])
    for name in manifest["files"]:  # every library any file needs is in the bundle itself
        out = subprocess.run(["aarch64-linux-gnu-readelf", "-d", str(bundle / name)], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if "(NEEDED)" in line:
                assert line.split("[")[1].rstrip("]") in manifest["files"], (name, line)
    proc = subprocess.run(["qemu-aarch64", str(bundle / LOADER), "--library-path", str(bundle),
                           str(bundle / "dcx_runner"), "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("dcx_runner "), proc.stderr


def test_qemu_instruction_counts_are_positive_and_repeatable(exported, tmp_path):
    model, reference, _ = _files(exported, "coda.recommender.infer")
    qemu = TARGETS["qemu"]
    counts = [run_artifact(qemu, model, reference, tmp_path, iterations=n, warmup=0).instructions for n in (1, 1, 21)]
    assert counts[0] > 0
    assert abs(counts[0] - counts[1]) <= 1e-3 * counts[0], counts  # only timing-dependent bookkeeping differs
    assert counts[2] - counts[0] > 20 * 1000, counts  # 20 more inferences execute more guest instructions


def test_reference_metadata_text_round_trips_through_the_runner(exported, tmp_path):
    """The runner's own safetensors/JSON reader and JSON writer keep escapes and non-ASCII text intact."""
    from safetensors.numpy import save_file

    model, reference, _ = _files(exported, "dcccl.infer")
    tensors, meta = _reference(reference)
    name = 'dcccl "infer"\t/\\ é ✓'
    save_file(tensors, str(tmp_path / "ref.safetensors"), metadata={**meta, "program": name})
    run = run_artifact(TARGETS["host"], model, tmp_path / "ref.safetensors", tmp_path / "out", iterations=1)
    assert run.result["program"] == name


def test_thread_pool_sizes_give_the_same_outputs(exported, tmp_path):
    model, reference, _ = _files(exported, "iciia.infer")
    one = run_artifact(TARGETS["host"], model, reference, tmp_path / "one", iterations=2)
    two = run_artifact(TARGETS["host"], model, reference, tmp_path / "two", iterations=2, threads=2)
    assert (one.result["threads"], two.result["threads"]) == (1, 2)
    for key, value in one.outputs.items():
        np.testing.assert_allclose(two.outputs[key], value, rtol=0, atol=1e-6)


def test_bench_native_compares_every_inference_artifact(exported):
    from dcx.bench.native import bench_native

    folder = exported["dcccl.infer"][0]
    rows = bench_native(folder, rounds=1, iterations=3, warmup=1)
    assert sorted(r["program"] for r in rows) == sorted(INFER)
    for r in rows:  # same libraries, same kernels: the runner's outputs are the pybindings' bit for bit
        assert r["max_abs_diff"] == 0.0 and r["ratio"] > 0 and r["runner_p50_ms"] > 0

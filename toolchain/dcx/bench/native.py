"""Native runner against ExecuTorch's Python pybindings, per inference artifact, side by side in one run.

Both run the same ``.pte`` on the same kernels (the wheel's libraries),
single-threaded, on the reference's inputs. Rounds alternate which one goes
first so that drift hits both alike; each reports the median over rounds of
its per-inference p50, and the best round (the least disturbed by other load
on a shared machine). The runner times inside its process (set the inputs,
execute); the pybindings are timed around ``module.forward`` from Python, which
is what an app using them pays. ``ratio`` < 1 means the runner is faster.
Optionally, guest instructions per inference of the aarch64 bundle under qemu,
from two runs that differ only in their iteration count.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dcx.errors import DcxError
from dcx.bench.kernels import one_thread
from dcx.manifest import ManifestEntry, read_manifest
from dcx.reference import ProgramReference
from dcx.targets import Target
from dcx.targets.host import HostTarget
from dcx.targets.runner import instructions_per_unit, kernel_libraries, run_artifact


class _PybindingsTimer:
    """``model`` loaded in the pybindings, timed around ``forward`` on fixed inputs (``bench_native`` holds one thread)."""

    def __init__(self, model: Path, inputs: list[np.ndarray]):
        import torch
        from executorch.extension.pybindings import portable_lib

        self.buffer = model.read_bytes()  # the loaded program points into these bytes
        self.module = portable_lib._load_for_executorch_from_buffer(self.buffer)
        self.inputs = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)

    def measure(self, warmup: int, iterations: int) -> tuple[float, list[np.ndarray]]:
        """(p50 ms, outputs of the last call)."""
        for _ in range(warmup):
            self.module.forward(self.inputs)
        samples = []
        for _ in range(iterations):
            start = time.perf_counter_ns()
            out = self.module.forward(self.inputs)
            samples.append((time.perf_counter_ns() - start) / 1e6)
        p50 = float(np.percentile(samples, 50))  # linear between ranks, as the runner computes it
        return p50, [t.numpy() for t in out]


def _bench_artifact(artifacts: Path, entry: ManifestEntry, work: Path, rounds: int, iterations: int, warmup: int) -> dict:
    host = HostTarget()
    model, reference = artifacts / entry.file, artifacts / entry.reference.file
    ref = ProgramReference.load(reference)
    inputs, output_names = ref.input_arrays(), ref.output_names
    libs = kernel_libraries(host, entry)
    if libs:
        from dcx.kernels import load_executorch_library

        for name, lib in zip(entry.requires.kernel_libraries, libs):
            load_executorch_library(name, lib)
    pybindings = _PybindingsTimer(model, inputs)
    runner_ms, pyb_ms, outputs = [], [], {}

    def runner_round() -> None:
        run = run_artifact(host, model, reference, work, kernel_libs=libs, iterations=iterations, warmup=warmup)
        runner_ms.append(run.result["latency_ms"]["p50"])
        outputs["runner"] = [run.outputs[f"output/{n}"] for n in output_names]

    def pybindings_round() -> None:
        ms, outputs["pybindings"] = pybindings.measure(warmup, iterations)
        pyb_ms.append(ms)

    for r in range(rounds):
        for measure in (runner_round, pybindings_round) if r % 2 == 0 else (pybindings_round, runner_round):
            measure()
    row = {"program": entry.program, "file": entry.file,
           "runner_p50_ms": statistics.median(runner_ms), "pybindings_p50_ms": statistics.median(pyb_ms),
           "runner_best_p50_ms": min(runner_ms), "pybindings_best_p50_ms": min(pyb_ms),
           "max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(outputs["runner"], outputs["pybindings"]))}
    row["ratio"] = row["runner_p50_ms"] / row["pybindings_p50_ms"]
    row["ratio_best"] = row["runner_best_p50_ms"] / row["pybindings_best_p50_ms"]
    return row


def bench_native(artifacts: Path, rounds: int = 7, iterations: int = 200, warmup: int = 20,
                 instructions_target: Target | None = None,
                 progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """One row per ExecuTorch inference artifact in ``artifacts`` (a ``dcx export`` folder)."""
    artifacts = Path(artifacts)
    entries = [e for e in read_manifest(artifacts).artifacts if e.format == "executorch" and e.kind == "infer"]
    if not entries:
        raise DcxError(f"{artifacts}: no ExecuTorch inference artifacts to benchmark: export with --format executorch")
    rows = []
    with one_thread(), tempfile.TemporaryDirectory(prefix="dcx-bench-native-") as tmp:
        for entry in entries:
            row = _bench_artifact(artifacts, entry, Path(tmp), rounds, iterations, warmup)
            if instructions_target is not None:
                row["instructions_target"] = instructions_target.name
                row["instructions_per_inference"] = instructions_per_unit(
                    instructions_target, artifacts / entry.file, artifacts / entry.reference.file,
                    kernel_libraries(instructions_target, entry), Path(tmp), training=False)
            progress(f"{entry.file:<34} runner {row['runner_p50_ms']:.4f} ms  pybindings "
                     f"{row['pybindings_p50_ms']:.4f} ms  ratio {row['ratio']:.2f} "
                     f"(best rounds {row['ratio_best']:.2f})")
            rows.append(row)
    return rows


def markdown(rows: list[dict], command: str, stamp_text: str) -> str:
    """The rows as the Markdown file the README's native-runner section is copied from (``stamp_text``: the
    run's ``dcx.stamp.stamp_line``)."""
    lines = ["# Native runner against the Python pybindings", "",
             f"Written by `{command}`: single-threaded, the same `.pte` and kernels, alternating rounds; p50 per "
             "inference, median over rounds (and the best round); ratio < 1: the runner is faster.", "",
             stamp_text, "",
             "| program | runner p50 ms | pybindings p50 ms | ratio | best-round ratio | max output diff |"
             + (" qemu instructions / inference |" if any("instructions_per_inference" in r for r in rows) else ""),
             "|---|---|---|---|---|---|" + ("---|" if any("instructions_per_inference" in r for r in rows) else "")]
    for r in rows:
        line = (f"| {r['program']} | {r['runner_p50_ms']:.4f} | {r['pybindings_p50_ms']:.4f} | {r['ratio']:.2f} | "
                f"{r['ratio_best']:.2f} | {r['max_abs_diff']:.1e} |")
        if "instructions_per_inference" in r:
            line += f" {r['instructions_per_inference']:,.0f} |"
        lines.append(line)
    slower = [r["program"] for r in rows if r["ratio"] > 1]
    lines += ["", "The runner is slower than the pybindings for: " + ", ".join(slower) if slower
              else "The runner is not slower than the pybindings for any program."]
    return "\n".join(lines) + "\n"

"""``dcx profile``: every artifact of an export folder where it will run: latency, memory, size, FLOPs.

- ExecuTorch artifacts run in the native runner (runtimes/native) on the
  target: the host, the aarch64 bundle under qemu (rows marked ``emulated``,
  with guest instruction counts), or a phone over adb.
- TFLite and ONNX artifacts run in their Python runtimes on the host (for the
  host and qemu targets); on a phone, TFLite runs in the user's own LiteRT
  ``benchmark_model`` (``--tflite-benchmark``).
- Core ML needs iOS or macOS (ios_harness/): its rows say so.

Inputs come from each artifact's reference; outputs (or training losses and
final weights) are checked against it (``outputs_match``). FLOPs and sizes
come from the manifest. A target that fails mid-way (a phone unplugged, a
runner crash) stops the profile with one line, and the rows measured so far
are written first.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from dcx.errors import DcxError
from dcx.manifest import ManifestEntry, read_manifest
from dcx.reference import ProgramReference
from dcx.backends import Place, get_backend, get_runtime
from dcx.targets import Target
from dcx.verification import DEFAULT_TOLERANCE, output_error
from dcx.progress import Progress, silent



@dataclass
class ProfileRow:
    """One artifact on one target. Timing and memory fields follow the native runner's JSON."""

    program: str
    format: str
    target: str
    emulated: bool
    kind: str
    runtime: str  # "dcx_runner", "python" (host runtime), "benchmark_model", or "-" when skipped
    size_bytes: int
    flops_forward: int
    flops_backward: int | None
    skipped: str | None = None
    load_ms: float | None = None
    first_ms: float | None = None
    warmup: int | None = None
    iterations: int | None = None
    latency_ms: dict[str, float | None] | None = None  # mean, trimmed_mean, p50, p90, min, max
    peak_rss_kb: float | None = None
    peak_rss_delta_kb: float | None = None
    planned_memory_bytes: int | None = None
    steps_per_s: float | None = None
    losses: list[float] | None = None
    instructions: int | None = None  # guest instructions of the whole run (qemu)
    outputs_match: bool | None = None
    max_error: float | None = None
    top_operators: list[dict] = field(default_factory=list)


def latency_summary(samples_ms: list[float]) -> dict[str, float]:
    """mean, trimmed_mean (middle 80 %), p50, p90 (linear interpolation), min, max — as the runner reports."""
    s = sorted(samples_ms)
    cut = int(len(s) * 0.1)
    middle = s[cut : len(s) - cut] or s
    return {"mean": statistics.fmean(s), "trimmed_mean": statistics.fmean(middle),
            "p50": float(np.percentile(s, 50)), "p90": float(np.percentile(s, 90)), "min": s[0], "max": s[-1]}


def _row(entry: ManifestEntry, target: Target, runtime: str, **fields) -> ProfileRow:
    return ProfileRow(entry.program, entry.format, target.name if runtime != "python" else "host",
                      target.emulated if runtime != "python" else False, entry.kind, runtime, entry.size_bytes,
                      entry.flops.forward, entry.flops.backward, **fields)


def _compare(reference: ProgramReference, outputs: dict[str, np.ndarray] | None, losses: list[float] | None,
             weights: dict[str, np.ndarray] | None) -> tuple[bool, float]:
    """(within verify's tolerances, max error): inference outputs, or training losses and final weights."""
    if reference.kind == "infer":
        errors = [output_error(outputs[n], reference.outputs[n]) for n in reference.output_names]
        return max(errors) <= DEFAULT_TOLERANCE.forward, max(errors)
    loss_err = max(abs(a - float(b)) / max(1.0, abs(float(b))) for a, b in zip(losses, reference.losses))
    weight_err = max(float(np.max(np.abs(weights[n] - w))) for n, w in reference.final.items())
    return loss_err <= DEFAULT_TOLERANCE.loss and weight_err <= DEFAULT_TOLERANCE.weights, max(loss_err, weight_err)


def profile_native(entry: ManifestEntry, folder: Path, reference: ProgramReference, target: Target,
                   iterations: int, warmup: int, per_op: bool, work: Path) -> ProfileRow:
    from dcx.targets.runner import kernel_libraries, run_artifact, top_operators

    training = entry.kind == "train"
    run = run_artifact(target, folder / entry.file, folder / entry.reference.file, work,
                       kernel_libs=kernel_libraries(target, entry), iterations=None if training else iterations,
                       warmup=None if training else warmup, train_steps=reference.steps if training else None,
                       etdump=per_op)
    r = run.result
    if training:
        weights = {k.removeprefix("param/final/"): v for k, v in run.outputs.items() if k.startswith("param/final/")}
        ok, err = _compare(reference, None, r["losses"], weights)
    else:
        ok, err = _compare(reference, {k.removeprefix("output/"): v for k, v in run.outputs.items()}, None, None)
    return _row(entry, target, "dcx_runner", load_ms=r["load_ms"], first_ms=r["first_ms"], warmup=r["warmup"],
                iterations=r["iterations"], latency_ms=r["latency_ms"], peak_rss_kb=r["peak_rss_kb"],
                peak_rss_delta_kb=r["peak_rss_delta_kb"], planned_memory_bytes=r["planned_memory_bytes"],
                steps_per_s=r.get("steps_per_s"), losses=r.get("losses"), instructions=run.instructions,
                outputs_match=ok, max_error=err, top_operators=top_operators(run.etdump) if run.etdump else [])


def _rss_kb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    return math.nan


def profile_python(entry: ManifestEntry, folder: Path, reference: ProgramReference, target: Target,
                   iterations: int, warmup: int) -> ProfileRow:
    """A host Python runtime (LiteRT, ONNX Runtime), single-threaded, with the runner's fields where they apply."""
    runtime = get_runtime(entry.format)
    rss_before = _rss_kb()
    start = time.perf_counter()
    session = runtime.load(folder / entry.file, entry)
    load_ms = (time.perf_counter() - start) * 1e3
    if entry.kind == "train":
        times, losses = [], []
        for step in range(reference.steps):
            start = time.perf_counter()
            losses.append(session.train_step(*reference.batch_arrays(step)))
            times.append((time.perf_counter() - start) * 1e3)
        ok, err = _compare(reference, None, losses, session.get_weights())
        return _row(entry, target, "python", load_ms=load_ms, first_ms=times[0], warmup=0,
                    iterations=len(times) - 1, latency_ms=latency_summary(times[1:] or times),
                    peak_rss_delta_kb=_rss_kb() - rss_before, steps_per_s=1e3 / statistics.fmean(times),
                    losses=losses, outputs_match=ok, max_error=err)
    inputs = reference.input_arrays()
    start = time.perf_counter()
    outputs = session.run(*inputs)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        session.run(*inputs)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(*inputs)
        times.append((time.perf_counter() - start) * 1e3)
    ok, err = _compare(reference, dict(zip(reference.output_names, outputs)), None, None)
    return _row(entry, target, "python", load_ms=load_ms, first_ms=first_ms, warmup=warmup, iterations=iterations,
                latency_ms=latency_summary(times), peak_rss_delta_kb=_rss_kb() - rss_before,
                outputs_match=ok, max_error=err)


def place_of(target: Target) -> Place:
    """Where the target runs: this machine, the aarch64 emulator, or a real phone (where host runtimes do not)."""
    if target.arch != "aarch64":
        return "host"
    return "emulator" if target.emulated else "phone"


def _how(entry: ManifestEntry, target: Target, benchmark_binary: Path | None) -> str:
    """The backend's way to measure ``entry`` on ``target``, or (not a ProfileMode) why it is skipped."""
    how = get_backend(entry.format).profile[place_of(target)]
    if how == "benchmark binary":
        if benchmark_binary is None:
            return f"pass --tflite-benchmark PATH (your arm64 {entry.format} benchmark binary) to profile it on a phone"
        if entry.kind == "train":
            return "the benchmark binary runs inference signatures only"
    return how


def profile(folder: Path, target: Target, *, programs: Iterable[str] | None = None, iterations: int = 20,
            warmup: int = 3, per_op: bool = False, tflite_benchmark: Path | None = None,
            progress: Progress = silent, rows: list[ProfileRow] | None = None) -> list[ProfileRow]:
    """Profile every (chosen) artifact of ``folder`` on ``target``; ``rows`` collects them as they are measured, so a
    caller keeps what was measured when a later artifact fails."""
    import torch

    torch.set_num_threads(1)
    folder = Path(folder)
    manifest = read_manifest(folder)
    entries = manifest.artifacts
    if programs is not None:
        wanted = set(programs)
        unknown = sorted(wanted - {e.program for e in entries})
        if unknown:
            raise DcxError(f"--programs {unknown[0]}: not in {folder}; choose among "
                           f"{', '.join(sorted({e.program for e in entries}))}")
        entries = [e for e in entries if e.program in wanted]
    rows = rows if rows is not None else []
    references: dict[str, ProgramReference] = {}
    with tempfile.TemporaryDirectory(prefix="dcx-profile-") as tmp:
        for i, entry in enumerate(entries, 1):
            label = f"[{i}/{len(entries)}] {entry.format:<10} {entry.program:<26}"
            reference = references.setdefault(entry.reference.file, ProgramReference.load(folder / entry.reference.file))
            how = _how(entry, target, tflite_benchmark)
            work = Path(tmp) / f"{i}"
            if how == "native runner":
                row = profile_native(entry, folder, reference, target, iterations, warmup, per_op, work)
            elif how == "host session":
                row = profile_python(entry, folder, reference, target, iterations, warmup)
            elif how == "benchmark binary":
                row = _benchmark_binary_row(entry, folder, target, tflite_benchmark, iterations, warmup, work)
            else:
                row = _row(entry, target, "-", skipped=how)
            rows.append(row)
            progress(f"{label} {format_row(row)}")
    return rows


def _benchmark_binary_row(entry: ManifestEntry, folder: Path, target: Target, binary: Path, iterations: int,
                          warmup: int, work: Path) -> ProfileRow:
    run = get_backend(entry.format).benchmark_binary
    (measured,) = run(target, binary, [folder / entry.file], num_runs=iterations, warmup_runs=warmup, local_dir=work)
    fields = {k: measured.get(k) for k in ("load_ms", "first_ms", "warmup", "iterations", "latency_ms",
                                           "peak_rss_kb", "peak_rss_delta_kb")}
    return _row(entry, target, measured.get("runner", binary.name), **fields)


def format_row(r: ProfileRow) -> str:
    if r.skipped:
        return f"skipped: {r.skipped}"
    lat = r.latency_ms or {}
    match = {True: "outputs match", False: "OUTPUTS DIFFER", None: "outputs not checked"}[r.outputs_match]
    parts = [f"{r.runtime} on {r.target}{' (emulated)' if r.emulated else ''}", f"load {r.load_ms:.1f} ms",
             f"p50 {lat.get('p50', math.nan):.4f} ms"]
    if r.steps_per_s:
        parts.append(f"{r.steps_per_s:.1f} steps/s")
    if r.peak_rss_delta_kb is not None:
        parts.append(f"mem +{r.peak_rss_delta_kb / 1024:.1f} MB")
    if r.instructions:
        parts.append(f"{r.instructions / 1e6:.1f} M instructions")
    return ", ".join(parts) + f"; {match}"


def rows_as_json(rows: list[ProfileRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def plot(rows: list[ProfileRow], path: Path) -> None:
    """A PNG: p50 latency and memory delta per program and format (skipped rows left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if not r.skipped and r.latency_ms]
    if not measured:
        raise DcxError("nothing was measured, so there is nothing to plot: drop --png or profile other artifacts")
    labels = [f"{r.program}\n{r.format} ({r.runtime})" for r in measured]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, len(measured) * 0.9), 8), sharex=True)
    ax1.bar(range(len(measured)), [r.latency_ms["p50"] for r in measured], color="tab:blue")
    ax1.set_ylabel("p50 latency (ms)")
    ax1.set_yscale("log")
    ax1.set_title(f"dcx profile on {measured[0].target}" + (" (emulated: timings mean nothing)"
                                                           if any(r.emulated for r in measured) else ""))
    ax2.bar(range(len(measured)), [(r.peak_rss_delta_kb or 0) / 1024 for r in measured], color="tab:orange")
    ax2.set_ylabel("memory delta (MB)")
    ax2.set_xticks(range(len(measured)), labels, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    from dcx.fileio import remove, temporary_sibling

    tmp = temporary_sibling(Path(path))
    try:
        fig.savefig(tmp, format="png", dpi=110)
        tmp.replace(path)
    finally:
        remove(tmp)
        plt.close(fig)

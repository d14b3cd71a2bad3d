"""``dcx bench device --target qemu``: the CI emulator benchmark.

One inference and one training program per recipe, exported to ExecuTorch,
run by the native runner on the target (the aarch64 bundle under qemu in CI)
and on the host, each checked against the reference that travels with it and
against the other: inference outputs, per-step training losses and final
weights. Emulated timings mean nothing and are never compared with real ones;
what the emulator gives that does mean something is the guest instruction
count, per inference or per training step, which ``instruction_guard`` checks
against a committed baseline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dcx.bench.instruction_guard import RUNS
from dcx.errors import DcxError
from dcx.export.pipeline import export_programs
from dcx.manifest import read_manifest
from dcx.programs import DeviceProgram
from dcx.methods import get_recipe
from dcx.reference import ProgramReference
from dcx.targets import Target
from dcx.targets.host import HostTarget
from dcx.targets.runner import instructions_per_unit, kernel_libraries, run_artifact
from dcx.verification import DEFAULT_TOLERANCE

RECIPES = ("dcccl", "iciia", "coda")


def bench_programs(names: Sequence[str] | None = None) -> list[DeviceProgram]:
    """One inference and (where the recipe has one) one training program per recipe, freshly initialised;
    ``names`` picks some of them (a test, or a quick look at one program)."""
    chosen = []
    for name in RECIPES:
        programs = get_recipe(name).device_programs(0)
        for kind in ("infer", "train"):
            chosen += [p for p in programs if p.kind == kind][:1]
    if names is None:
        return chosen
    unknown = sorted(set(names) - {p.name for p in chosen})
    if unknown:
        raise DcxError(f"--programs {','.join(unknown)}: not a program of this bench; choose from "
                       f"{','.join(p.name for p in chosen)}")
    return [p for p in chosen if p.name in names]


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in a)


def bench_device(target: Target, *, programs: Sequence[str] | None = None, iterations: int = 5,
                 progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """A row per program: outputs on ``target`` against the reference and the host, instructions per unit
    (runs of ``RUNS`` differenced, where the target counts them), p50 latencies."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="dcx-bench-device-") as tmp:
        folder = Path(tmp) / "artifacts"
        summary = export_programs(bench_programs(programs), folder, "executorch", progress=progress)
        if summary.failed:
            raise DcxError(f"bench device: exporting {summary.failed[0].program} failed: {summary.failed[0].error}")
        host = HostTarget()
        for entry in read_manifest(folder).artifacts:
            reference = ProgramReference.load(folder / entry.reference.file)
            training = entry.kind == "train"
            runs = {}
            for t in (target, host):
                runs[t.name] = run_artifact(
                    t, folder / entry.file, folder / entry.reference.file, Path(tmp) / t.name,
                    kernel_libs=kernel_libraries(t, entry), iterations=None if training else iterations,
                    warmup=None if training else 1, train_steps=reference.steps if training else None)
            on_target, on_host = runs[target.name], runs[host.name]
            if training:
                expected = {"loss": reference.losses, **{f"param/final/{n}": w for n, w in reference.final.items()},
                            **{f"optim/final/{k}": v for k, v in reference.optimizer_final.items()},
                            **{f"state/final/{n}": v for n, v in reference.state_final.items()}}
                tolerance = DEFAULT_TOLERANCE.weights
            else:
                expected = {f"output/{n}": v for n, v in reference.outputs.items()}
                tolerance = DEFAULT_TOLERANCE.forward
            row = {
                "program": entry.program, "kind": entry.kind, "target": target.name, "emulated": target.emulated,
                "max_diff_target_vs_reference": _max_diff(expected, on_target.outputs),
                "max_diff_target_vs_host": _max_diff({k: on_host.outputs[k] for k in expected}, on_target.outputs),
                "instructions_per_unit": instructions_per_unit(
                    target, folder / entry.file, folder / entry.reference.file, kernel_libraries(target, entry),
                    Path(tmp) / "count", training, RUNS) if on_target.instructions is not None else None,
                "unit": "training step" if training else "inference",
                "host_p50_ms": on_host.result["latency_ms"]["p50"],
                "target_p50_ms": on_target.result["latency_ms"]["p50"],
                "host_losses": on_host.result.get("losses"), "target_losses": on_target.result.get("losses"),
            }
            row["ok"] = row["max_diff_target_vs_reference"] <= tolerance and row["max_diff_target_vs_host"] <= tolerance
            rows.append(row)
            progress(f"{entry.program:<24} {target.name}: {'ok' if row['ok'] else 'MISMATCH'}  vs reference "
                     f"{row['max_diff_target_vs_reference']:.1e}, vs host {row['max_diff_target_vs_host']:.1e}"
                     + (f", {row['instructions_per_unit'] / 1e6:.2f} M instructions per {row['unit']}"
                        if row["instructions_per_unit"] else ""))
    return rows

"""``dcx bench verify``: every recipe and variant exported with default options, then verified, at the default
reference steps and batch — what ``dcx export --recipe R --out A && dcx verify A`` gives a user, for each R.

Beside the verdicts, each training program's float32 eager run against the same run in float64, and the rounding
spread its tolerance scales with (``DeviceProgram.rounding_spread``), so the file shows where every tolerance comes
from and how far each runtime lands inside it.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dcx.methods.export import export_recipe
from dcx.manifest import read_manifest
from dcx.methods import get_recipe, recipe_names
from dcx.reference import ProgramReference
from dcx.stamp import current_stamp, stamp_line
from dcx.optim import Stepper
from dcx.verification import Row, tolerance_for, verify


def float64_drift(program, reference: ProgramReference) -> float:
    """Max |final weight| difference between eager PyTorch in float64 and the float32 reference, same steps."""
    module = copy.deepcopy(program.module).double()
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    stepper = Stepper(reference.optimizer.optimizer(), params)
    for step in range(reference.steps):
        batch = [torch.from_numpy(a).double() if a.dtype.kind == "f" else torch.from_numpy(a)
                 for a in reference.batch_arrays(step)]
        loss = module(*batch)
        stepper.step(params, torch.autograd.grad(loss, list(params.values())))
    return max(float(np.max(np.abs(p.detach().numpy() - reference.final[n]))) for n, p in params.items())


def _measured(rows: list[Row], check: str) -> float | None:
    return next((r.error for r in rows if r.check == check or r.check.startswith(check)), None)


def bench_verify(recipes: list[str] | None = None, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Export and verify each recipe (default: every recipe and variant); the rows of the benchmark file."""
    torch.set_num_threads(1)
    stamp = current_stamp(1)  # what is measured: the checkout as the run starts
    artifacts, training = [], []
    with tempfile.TemporaryDirectory(prefix="dcx-bench-verify-") as tmp:
        for name in recipes or recipe_names():
            out = Path(tmp) / name
            start = time.perf_counter()
            export_recipe(name, "all", out, progress=progress)
            exported = time.perf_counter() - start
            rows = verify(out)
            progress(f"{name}: exported in {exported:.0f} s, verified in {time.perf_counter() - start - exported:.0f} s")
            manifest = read_manifest(out)
            for entry in manifest.artifacts:
                mine = [r for r in rows if r.artifact == entry.file]
                weights = next(r for r in mine if r.check == "weights")
                artifacts.append({
                    "recipe": name, "program": entry.program, "format": entry.format, "kind": entry.kind,
                    "verdict": "FAIL" if any(r.verdict == "FAIL" for r in mine) else "pass",
                    "failed": [f"{r.check}: {r.detail}" for r in mine if r.verdict == "FAIL"],
                    "not_run": [r.check for r in mine if r.verdict == "not run"],
                    "forward_error": _measured(mine, "forward"), "loss_error": _measured(mine, "train_"),
                    "weight_error": next((r.error for r in mine if r.check.endswith("_steps_weights")), None),
                    "coreml_gap": _measured(mine, "coreml_training_gap"), "weights": weights.detail})
            artifacts += [{"recipe": name, "program": f.program, "format": f.format, "verdict": "FAIL",
                           "failed": [f"export: {f.error}"]} for f in manifest.failures]
            programs = {p.name: p for p in get_recipe(name).device_programs(0)}
            for entry in (e for e in manifest.artifacts if e.kind == "train" and e.format == "executorch"):
                reference = ProgramReference.load(out / entry.reference.file)
                tol, _ = tolerance_for(reference)
                training.append({
                    "program": entry.program, "steps": reference.steps,
                    "batch": int(reference.batch_arrays(0)[0].shape[0]),
                    "float64_drift": float64_drift(programs[entry.program], reference),
                    "loss_spread": reference.loss_spread, "weight_spread": reference.weight_spread,
                    "loss_tolerance": tol.loss, "weight_tolerance": tol.weights,
                    "worst_weight_error": max((a["weight_error"] or 0.0 for a in artifacts
                                               if a["program"] == entry.program and a["weight_error"] is not None),
                                              default=None)})
    return {"stamp": stamp.as_dict(), "artifacts": artifacts, "training": training}


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def markdown(result: dict, command: str) -> str:
    from dcx.stamp import Stamp

    lines = ["# Every recipe and variant: default export, then verify", "",
             f"Written by `{command}`; do not edit by hand.", stamp_line(Stamp(**result["stamp"])), "",
             "| recipe | program | format | verdict | forward | loss | weights | Core ML gap | weights checked |",
             "|---|---|---|---|---|---|---|---|---|"]
    for a in result["artifacts"]:
        lines.append(f"| {a['recipe']} | {a['program']} | {a['format']} | {a['verdict']}"
                     + (f" ({'; '.join(a['failed'])})" if a["failed"] else "")
                     + (f", not run: {', '.join(a['not_run'])}" if a.get("not_run") else "")
                     + f" | {_e(a.get('forward_error'))} | {_e(a.get('loss_error'))} | {_e(a.get('weight_error'))} | "
                       f"{_e(a.get('coreml_gap'))} | {a.get('weights', '').removeprefix('weights checked: ')} |")
    lines += ["", "Errors are verify's: forward relative to max(1, |output|), loss relative to max(1, |loss|), "
                  "final weights absolute, Core ML's gap from its reference interpreter. Training programs, where "
                  "the tolerances come from:", "",
              "| program | steps x batch | eager fp32 vs fp64 (weights) | rounding spread (loss, weights) | "
              "tolerance (loss, weights) | worst runtime (weights) |", "|---|---|---|---|---|---|"]
    for t in result["training"]:
        lines.append(f"| {t['program']} | {t['steps']} x {t['batch']} | {_e(t['float64_drift'])} | "
                     f"{_e(t['loss_spread'])}, {_e(t['weight_spread'])} | {_e(t['loss_tolerance'])}, "
                     f"{_e(t['weight_tolerance'])} | {_e(t['worst_weight_error'])} |")
    failed = [f"{a['program']} ({a['format']})" for a in result["artifacts"] if a["verdict"] == "FAIL"]
    lines += ["", f"{len(result['artifacts']) - len(failed)} of {len(result['artifacts'])} artifacts pass"
              + (f"; FAIL: {', '.join(failed)}" if failed else "") + "."]
    return "\n".join(lines) + "\n"

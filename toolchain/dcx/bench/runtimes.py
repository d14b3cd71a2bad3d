"""``dcx bench runtimes``: one on-device training step per runtime, side by side in one run.

Single-threaded (2-core machines jitter badly otherwise); the runtimes are
interleaved round by round so drift hits them alike; results are medians and
ratios to PyTorch eager measured in the same run. Export time per format is
measured in the same run too.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from dcx.backends import FORMATS
from dcx.errors import DcxError
from dcx.export.pipeline import export_recipe
from dcx.manifest import read_manifest
from dcx.programs import DeviceProgram
from dcx.recipes import get_program
from dcx.runtimes import get_runtime
from dcx.training import sgd_step

TRAINING_RUNTIMES = ("executorch", "tflite")


def eager_step(program: DeviceProgram) -> Callable[..., float]:
    """PyTorch eager: forward, backward and the SGD update, as the device would do it."""
    module = copy.deepcopy(program.module)
    params = [p for p in module.parameters() if p.requires_grad]
    lr = program.optimizer.lr

    def step(*batch: torch.Tensor) -> float:
        loss = module(*batch)
        sgd_step(params, torch.autograd.grad(loss, params), lr)
        return float(loss.detach())

    return step


def bench_runtimes(recipe: str = "all", rounds: int = 15, warmup: int = 3,
                   progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    torch.set_num_threads(1)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "artifacts"
        export_seconds = {}
        for fmt in FORMATS:  # export time of every format; the training runtimes then run theirs
            summary = export_recipe(recipe, fmt, out, force=True, progress=progress)
            if summary.failed:
                raise DcxError(f"bench: exporting {fmt} failed: {summary.failed[0].error}")
            export_seconds[fmt] = summary.seconds_per_format.get(fmt, 0.0)
        manifest = read_manifest(out)
        train_entries = [e for e in manifest.artifacts if e.kind == "train" and e.format in TRAINING_RUNTIMES]
        for name in sorted({e.program for e in train_entries}):
            program = get_program(name)
            batch = program.example_batches(1)[0]
            np_batch = [t.numpy() for t in batch]
            steps: dict[str, Callable[[], float]] = {"eager": partial(eager_step(program), *batch)}
            for e in (e for e in train_entries if e.program == name):
                session = get_runtime(e.format).load(out / e.file, e)
                steps[e.format] = partial(session.train_step, *np_batch)
            times: dict[str, list[float]] = {k: [] for k in steps}
            for r in range(warmup + rounds):
                for k, step in steps.items():
                    start = time.perf_counter()
                    step()
                    if r >= warmup:
                        times[k].append(time.perf_counter() - start)
            eager = statistics.median(times["eager"])
            for k, ts in times.items():
                median = statistics.median(ts)
                rows.append({"program": name, "runtime": k, "measure": "train_step", "median_step_s": median,
                             "ratio_to_eager": median / eager, "rounds": rounds})
                progress(f"{name:<24} {k:<11} {median * 1e3:9.3f} ms/step  {median / eager:6.2f}x eager")
        for fmt, seconds in export_seconds.items():
            rows.append({"program": f"every {recipe} program" if recipe != "all" else "every program",
                         "runtime": fmt, "measure": "export",
                         "median_step_s": None, "export_s": seconds})
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'program':<26}{'runtime':<12}{'median step':>14}{'x eager':>10}"]
    for r in rows:
        if r["measure"] == "train_step":
            lines.append(f"{r['program']:<26}{r['runtime']:<12}{r['median_step_s'] * 1e3:>11.3f} ms{r['ratio_to_eager']:>10.2f}")
        else:
            lines.append(f"{'export ' + r['runtime']:<38}{r['export_s']:>9.2f} s  ({r['program']})")
    return "\n".join(lines)

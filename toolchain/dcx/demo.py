"""``dcx demo``: the whole pipeline on the built-in defaults, on real data.

For each method: ``dcx train`` (the cloud phase, a checkpoint), ``dcx export
--checkpoint`` (the trained device programs in every format, with their
references), ``dcx verify`` (every artifact in its real runtime against its
reference), then every exported inference artifact that a host runtime can run
is scored on real held-out data beside the PyTorch program it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dcx.methods.checkpoint import INDEX, load_checkpoint, write_checkpoint
from dcx.methods.export import export_recipe
from dcx.fileio import check_replaceable
from dcx.manifest import read_manifest
from dcx.methods import get_recipe, recipe_names
from dcx.backends import get_runtime
from dcx.verification import format_table, summary, verify

DEMO_RECIPES = ("dcccl", "iciia", "coda")


def torch_predict(program) -> Callable[..., list[np.ndarray]]:
    """Eager PyTorch as a ``predict`` function (numpy in, numpy out), the baseline the artifacts are scored against."""
    def predict(*arrays: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in program.run(*(torch.from_numpy(np.asarray(a)) for a in arrays))]
    return predict


def run_demo(out: Path, *, quick: bool = False, force: bool = False, echo: Callable[[str], None] = print) -> int:
    """Returns the number of failed verification rows."""
    torch.set_num_threads(1)
    failed = 0
    for name in (n for n in DEMO_RECIPES if n in recipe_names()):
        ckpt_dir, art_dir = out / "checkpoints" / name, out / "artifacts" / name
        echo(f"== {name}: 1/4 cloud phase on real data -> {ckpt_dir}")
        recipe = get_recipe(name, quick=quick)
        check_replaceable(ckpt_dir, force=force, marker=INDEX, what="checkpoint")
        trained = recipe.train(0, progress=lambda s: echo(f"   {s}"))
        ckpt = write_checkpoint(ckpt_dir, recipe, trained, seed=0, quick=quick, force=force)
        for k, v in ckpt.metrics.items():
            echo(f"   {name}.{k:<30} {v:.4f}")
        echo(f"== {name}: 2/4 export the trained device programs to every format -> {art_dir}")
        export_recipe(None, "all", art_dir, checkpoint=ckpt_dir, force=force, progress=lambda s: echo(f"   {s}"))
        echo(f"== {name}: 3/4 verify every artifact against its reference")
        rows = verify(art_dir)
        failed += sum(not r.ok for r in rows)
        echo(format_table([r for r in rows if r.verdict != "pass"]) if any(r.verdict != "pass" for r in rows)
             else "   every check passed")
        echo(f"   {summary(rows)}")
        echo(f"== {name}: 4/4 exported inference artifacts on real held-out data")
        _score(art_dir, ckpt_dir, echo)
    return failed


def _score(art_dir: Path, ckpt_dir: Path, echo: Callable[[str], None]) -> None:
    _, recipe, modules = load_checkpoint(ckpt_dir)
    programs = {p.name: p for p in recipe.device_programs(0, modules)}
    manifest = read_manifest(art_dir)
    for program_name in sorted({e.program for e in manifest.artifacts if e.kind == "infer"}):
        baseline = recipe.score(program_name, torch_predict(programs[program_name]))
        if not baseline:
            continue
        echo(f"   {program_name:<26} {'pytorch':<11} " + _metrics(baseline))
        for entry in (e for e in manifest.artifacts if e.program == program_name):
            runtime = get_runtime(entry.format)
            if runtime.available():
                echo(f"   {program_name:<26} {entry.format:<11} not run here ({runtime.available().split(';')[0]})")
                continue
            session = runtime.load(art_dir / entry.file, entry)
            echo(f"   {program_name:<26} {entry.format:<11} " + _metrics(recipe.score(program_name, session.run)))


def _metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4f}" if abs(v) < 100 else f"{k}={v:.0f}" for k, v in metrics.items())

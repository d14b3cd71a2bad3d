"""``dcx bench simulate``: devices simulated per second with a fleet per round, on each engine, in one run.

Each engine runs the same DC-CCL simulation (the quick cloud phase, every
device asked every round, no baselines, no per-round metric); only the rounds
are timed. The first round includes the engine's start (Ray actors importing
torch, programs going down); the rate is taken from the last, warm round. The
device steps run on the eager reference runtime by default, so the numbers
say what the engine costs rather than what a runtime's kernels cost.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from dcx.progress import Progress, silent
from dcx.simulate.engines import ENGINES


def bench_engines(devices: int = 1000, rounds: int = 2, runtime: str = "torch", workers: int | None = None,
                  progress: Progress = silent) -> list[dict]:
    from dcx.methods.checkpoint import train_checkpoint
    from dcx.simulate import simulate
    from dcx.simulate.methods import get_method

    rows = []
    with tempfile.TemporaryDirectory(prefix="dcx-bench-") as scratch:
        checkpoint = train_checkpoint(get_method("dcccl"), devices, True, 0, Path(scratch) / "checkpoint", progress)
        docs = [simulate("dcccl", devices=devices, rounds=rounds, runtime=runtime, engine=engine, quick=True,
                         checkpoint=checkpoint, baselines=False, measure=False, workers=workers, progress=progress)
                for engine in ENGINES]
    for engine, doc in zip(ENGINES, docs):
        first, last = doc["rounds"][0]["seconds"], doc["rounds"][-1]["seconds"]
        rows.append({"engine": engine, "devices": devices, "device_runtime": runtime, "first_round_s": first,
                     "warm_round_s": last, "devices_per_s": devices / last})
    for row in rows:
        row["ratio_to_local"] = row["devices_per_s"] / rows[0]["devices_per_s"]
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'engine':<8}{'devices':>8}{'first round':>13}{'warm round':>12}{'devices/s':>11}{'x local':>9}"]
    lines += [f"{r['engine']:<8}{r['devices']:>8}{r['first_round_s']:>11.1f} s{r['warm_round_s']:>10.1f} s"
              f"{r['devices_per_s']:>11.1f}{r['ratio_to_local']:>9.2f}" for r in rows]
    return "\n".join(lines)


@click.command("simulate")
@click.option("--devices", default=1000, show_default=True, help="devices asked per round")
@click.option("--rounds", default=2, show_default=True, help="rounds per engine (the last one is timed)")
@click.option("--device-runtime", "runtime", default="torch", show_default=True)
@click.option("--workers", type=int, help="Ray actors of the Flower engine (default: one per CPU)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the rows as JSON")
def bench_simulate(devices: int, rounds: int, runtime: str, workers: int | None, json_path: str | None) -> None:
    """Devices simulated per second on the local and the Flower engine, side by side."""
    rows = bench_engines(devices, rounds, runtime, workers, progress=lambda s: click.echo(s, err=True))
    click.echo(format_rows(rows))
    if json_path:
        from dcx.fileio import os_errors, write_atomic

        with os_errors(json_path, "--json"):
            write_atomic(Path(json_path), json.dumps(rows, indent=2))

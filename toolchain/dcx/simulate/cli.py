"""The ``dcx simulate`` click command: a thin shell over ``simulate`` and the README report."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from dcx.errors import DcxError

@click.command("simulate")
@click.argument("method", metavar="{dcccl|iciia|coda|all}")
@click.option("--devices", type=int, help="simulated devices (default: the method's; all of them are asked each round)")
@click.option("--rounds", type=int, help="rounds (default: the method's)")
@click.option("--device-runtime", "runtime", default="executorch", show_default=True,
              help="what runs the device programs: executorch, tflite, or torch (the eager reference)")
@click.option("--engine", default="local", show_default=True, help="local (in process) or flower (Ray)")
@click.option("--dropout", type=float, default=0.0, show_default=True,
              help="probability that a device vanishes mid-round")
@click.option("--stragglers", type=float, default=0.0, show_default=True,
              help="share of slow devices (4-8x slower than the nominal phone on the virtual clock)")
@click.option("--deadline", type=float,
              help="seconds the cloud waits per exchange on the virtual clock; a later reply is not aggregated "
                   "(default: 2x the longest device work at the nominal phone's measured step time)")
@click.option("--quick", is_flag=True, help="CI-sized cloud phase, devices and rounds")
@click.option("--seed", default=0, show_default=True)
@click.option("--checkpoint", type=click.Path(), help="the cloud phase from `dcx train` (default: train it now)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="write the rounds and the summary as JSON (rewritten after every round)")
@click.option("--out", type=click.Path(file_okay=False), help="also write <method>.json, <method>.md and the plots here")
@click.option("--force", is_flag=True, help="write into a non-empty --out (only dcx's own files are replaced)")
def simulate_cmd(method: str, devices: int | None, rounds: int | None, runtime: str, engine: str, dropout: float,
                 stragglers: float, deadline: float | None, quick: bool, seed: int, checkpoint: str | None,
                 json_path: str | None, out: str | None, force: bool) -> None:
    """Run METHOD's cloud and device roles with typed messages, bytes counted per device, direction and round.

    `all` runs the three methods one after another (their defaults); with --out it also writes OUT/README.md,
    the results section `dcx readme` copies into the README: `dcx simulate all --out benchmarks/simulate --force`.
    """
    from dcx.simulate import simulate
    from dcx.simulate.methods import get_method, method_names

    if method != "all":
        get_method(method)
    elif devices is not None or rounds is not None or checkpoint is not None:
        raise DcxError("--devices, --rounds and --checkpoint need one method: pass dcccl, iciia or coda")
    names = method_names() if method == "all" else [method]
    docs = []
    for i, name in enumerate(names):
        docs.append(simulate(
            name, devices=devices, rounds=rounds, runtime=runtime, engine=engine, dropout=dropout,
            stragglers=stragglers, deadline=deadline, quick=quick, seed=seed,
            checkpoint=Path(checkpoint) if checkpoint else None,
            json_path=Path(json_path) if json_path and len(names) == 1 else None,
            out=Path(out) if out else None, force=force or i > 0, progress=lambda s: click.echo(s, err=True)))
        for key, value in docs[-1]["summary"].items():
            click.echo(f"  {name}.{key:<32} {value:.4f}" if isinstance(value, float) else f"  {name}.{key:<32} {value}")
    if json_path and len(names) > 1:
        from dcx.fileio import os_errors, write_atomic

        with os_errors(json_path, "--json"):
            write_atomic(Path(json_path), json.dumps({d["method"]: d for d in docs}, indent=1))
    if out and len(names) > 1:
        from dcx.simulate.report import write_results

        options = {"--device-runtime": runtime, "--engine": engine, "--dropout": dropout, "--stragglers": stragglers,
                   "--deadline": deadline, "--seed": seed}
        defaults = {"--device-runtime": "executorch", "--engine": "local", "--dropout": 0.0, "--stragglers": 0.0,
                    "--deadline": None, "--seed": 0}
        command = " ".join(["dcx simulate all", *(f"{k} {shlex.quote(str(v))}" for k, v in options.items()
                                                  if v != defaults[k]), *(["--quick"] if quick else []),
                            f"--out {shlex.quote(out)}", *(["--force"] if force else [])])
        click.echo(f"results written to {write_results(docs, Path(out), command)}; `dcx readme` copies them into "
                   "the README")

"""``dcx verify``: every artifact in its real host runtime against the PyTorch recipe.

Per artifact: integrity (file present, sha256 as in the manifest), the
runtime's static checks, then forward outputs on fixed inputs and, for
training programs, 20 on-device SGD steps compared step for step (loss) and
at the end (weights) with eager PyTorch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from dcx.errors import DcxError
from dcx.export.manifest import read_manifest, sha256_of
from dcx.programs import DeviceProgram
from dcx.recipes import get_program
from dcx.runtimes import get_runtime

FORWARD_TOL = 1e-4
TRAIN_STEPS = 20
LOSS_TOL = 1e-4  # per step, relative to max(1, |loss|)
WEIGHT_TOL = 1e-4


@dataclass
class Row:
    artifact: str
    format: str
    check: str
    error: float | None
    ok: bool
    verdict: str  # pass | FAIL | skipped
    detail: str = ""


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


def check_forward(session, program: DeviceProgram) -> float:
    expected = program.run(*program.example_inputs)
    got = session.run(*(t.numpy() for t in program.example_inputs))
    if len(got) != len(expected):
        raise DcxError(f"{program.name}: artifact returned {len(got)} outputs, PyTorch {len(expected)}")
    return max(float(np.max(np.abs(np.asarray(g, dtype=np.float64) - e.detach().double().numpy())))
               for g, e in zip(got, expected))


def check_training(session, program: DeviceProgram, steps: int = TRAIN_STEPS) -> tuple[float, float, list[float]]:
    """(max per-step loss error, max final weight error, artifact losses)."""
    batches = program.example_batches(steps)
    ref_losses, ref_weights = program.reference_training(batches)
    losses = [session.train_step(*(t.numpy() for t in b)) for b in batches]
    loss_err = max(_rel(a, b) for a, b in zip(losses, ref_losses))
    weights = session.get_weights()
    missing = set(ref_weights) - set(weights)
    if missing:
        raise DcxError(f"{program.name}: artifact exposes no weights for {sorted(missing)}")
    weight_err = max(float(np.max(np.abs(weights[n] - w.numpy()))) for n, w in ref_weights.items())
    return loss_err, weight_err, losses


def _add_row(rows: list[Row], artifact: str, fmt: str, check: str, error: float | None, ok: bool, detail: str = "",
             verdict: str | None = None) -> None:
    rows.append(Row(artifact, fmt, check, error, ok, verdict or ("pass" if ok else "FAIL"), detail))


def verify(out: Path, *, program_filter: str | None = None) -> list[Row]:
    out = Path(out)
    manifest = read_manifest(out)
    seed = int(manifest.get("seed", 0))
    rows: list[Row] = []
    for entry in manifest["artifacts"]:
        if program_filter and not entry["program"].startswith(program_filter):
            continue
        name, fmt = entry["file"], entry["format"]
        add = partial(_add_row, rows, name, fmt)
        path = out / name
        if not path.exists():
            add("integrity", None, False, f"{path} is missing: re-run dcx export")
            continue
        digest = sha256_of(path)
        if digest != entry["sha256"]:
            add("integrity", None, False, f"{path}: sha256 mismatch (truncated or altered): re-export it")
            continue
        add("integrity", None, True, "sha256 matches the manifest")
        try:
            runtime = get_runtime(fmt)
            for c in runtime.static_checks(path, entry):
                add(c.check, c.error, c.ok, c.detail)
            unavailable = runtime.available()
            if unavailable:
                add("execution", None, True, unavailable, verdict="skipped")
                continue
            program = get_program(entry["program"], seed)
            session = runtime.load(path, entry)
            if entry["kind"] == "infer":
                err = check_forward(session, program)
                add("forward", err, err <= FORWARD_TOL, f"max abs error vs PyTorch (tol {FORWARD_TOL:g})")
            else:
                loss_err, weight_err, losses = check_training(session, program)
                add(f"train_{TRAIN_STEPS}_steps_loss", loss_err, loss_err <= LOSS_TOL,
                    f"per-step loss vs PyTorch SGD; loss {losses[0]:.4f} -> {losses[-1]:.4f}")
                add(f"train_{TRAIN_STEPS}_steps_weights", weight_err, weight_err <= WEIGHT_TOL,
                    "final trainable weights vs PyTorch SGD")
        except NotImplementedError as e:
            add("execution", None, True, str(e), verdict="skipped")
        except DcxError as e:
            add("execution", None, False, str(e))
        except Exception as e:  # a runtime crash is a failed check, not a crash of verify
            add("execution", None, False, f"{type(e).__name__}: {e}".splitlines()[0])
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [f"{'artifact':<34}{'format':<11}{'check':<28}{'error':>11}  verdict"]
    for r in rows:
        err = "-" if r.error is None else f"{r.error:.2e}"
        lines.append(f"{r.artifact:<34}{r.format:<11}{r.check:<28}{err:>11}  {r.verdict}"
                     + (f"  ({r.detail})" if r.detail and r.verdict != "pass" else ""))
    return "\n".join(lines)


def rows_as_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]



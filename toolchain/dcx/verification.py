"""``dcx verify``: every artifact in its real host runtime against the reference that travels with it.

Per artifact: integrity (file present and inside the folder, sha256 as in the
manifest; the same for its reference), the runtime's static checks, the
weights it stores verbatim compared byte for byte with the reference (naming
the first that differs), then the forward outputs on the reference inputs
and, for training programs, every reference batch as an on-device SGD step,
compared step for step (loss) and at the end (weights) with eager PyTorch.
Nothing here builds a model from a recipe or reads a dataset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from dcx.errors import DcxError
from dcx.export.weight_locations import first_weight_mismatch
from dcx.manifest import ManifestEntry, inside, read_manifest, sha256_of
from dcx.reference import ProgramReference
from dcx.runtimes import get_runtime


@dataclass(frozen=True)
class Tolerance:
    forward: float  # max absolute error of any output element, relative to max(1, that output's largest |value|)
    loss: float  # max per-step loss error, relative to max(1, |loss|)
    weights: float  # max absolute error of any final trainable weight
    reason: str = ""  # why a format needs more than the default


# Measured on this project's programs: forward <= 4e-7, loss <= 3e-7, weights <= 3e-8 in every format.
DEFAULT_TOLERANCE = Tolerance(forward=1e-5, loss=1e-5, weights=1e-5)
FORMAT_TOLERANCES: dict[str, Tolerance] = {}


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


def output_error(got: np.ndarray, expected: np.ndarray) -> float:
    """Max absolute difference, relative to max(1, the expected output's largest |value|): float32 rounding
    grows with the values (logits of 12 differ by 1e-5 when a runtime sums in another order)."""
    e = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - e))) / scale if e.size else 0.0


def forward_error(session, reference: ProgramReference) -> float:
    """The largest ``output_error`` of the artifact's outputs on the reference inputs."""
    got = session.run(*reference.input_arrays())
    expected = reference.output_arrays()
    if len(got) != len(expected):
        raise DcxError(f"{reference.program}: artifact returned {len(got)} outputs, the reference has {len(expected)}")
    return max(output_error(g, e) for g, e in zip(got, expected))


def training_errors(session, reference: ProgramReference,
                    not_exposed: set[str] = frozenset()) -> tuple[float, float, list[float]]:
    """(max per-step loss error, max final weight error, artifact losses) over the reference batches.

    ``not_exposed``: trainable weights the artifact documents it cannot hold (compared when it does expose them)."""
    losses = [session.train_step(*reference.batch_arrays(s)) for s in range(reference.steps)]
    loss_err = max(_rel(a, float(b)) for a, b in zip(losses, reference.losses))
    weights = session.get_weights()
    missing = set(reference.final) - set(weights) - set(not_exposed)
    if missing:
        raise DcxError(f"{reference.program}: artifact exposes no weights for {sorted(missing)}")
    weight_err = max(float(np.max(np.abs(weights[n] - w))) for n, w in reference.final.items() if n in weights)
    return loss_err, weight_err, losses


def _add_row(rows: list[Row], artifact: str, fmt: str, check: str, error: float | None, ok: bool, detail: str = "",
             verdict: str | None = None) -> None:
    rows.append(Row(artifact, fmt, check, error, ok, verdict or ("pass" if ok else "FAIL"), detail))


def verify(out: Path, *, program_filter: str | None = None) -> list[Row]:
    out = Path(out)
    manifest = read_manifest(out)
    rows: list[Row] = []
    references: dict[str, ProgramReference] = {}
    for entry in manifest.artifacts:
        if program_filter and not entry.program.startswith(program_filter):
            continue
        add = partial(_add_row, rows, entry.file, entry.format)
        path, ref_path = inside(out, entry.file, "file"), inside(out, entry.reference.file, "reference.file")
        problem = _integrity(path, entry.sha256) or _integrity(ref_path, entry.reference.sha256)
        if problem:
            add("integrity", None, False, problem)
            continue
        add("integrity", None, True, "artifact and reference sha256 match the manifest")
        try:
            reference = references.get(entry.reference.file) or ProgramReference.load(ref_path)
            references[entry.reference.file] = reference
            _verify_artifact(add, path, entry, reference)
        except NotImplementedError as e:
            add("execution", None, True, str(e), verdict="skipped")
        except DcxError as e:
            add("execution", None, False, str(e))
        except Exception as e:  # a runtime crash is a failed check, not a crash of verify
            add("execution", None, False, f"{type(e).__name__}: {e}".splitlines()[0])
    return rows


def _integrity(path: Path, sha256: str) -> str | None:
    if not path.exists():
        return f"{path} is missing: re-run dcx export"
    if sha256_of(path) != sha256:
        return f"{path}: sha256 mismatch (truncated or altered): re-export it"
    return None


def _verify_artifact(add, path: Path, entry: ManifestEntry, reference: ProgramReference) -> None:
    tol = FORMAT_TOLERANCES.get(entry.format, DEFAULT_TOLERANCE)
    why = f"; {tol.reason}" if tol.reason else ""
    runtime = get_runtime(entry.format)
    for c in runtime.static_checks(path, entry):
        add(c.check, c.error, c.ok, c.detail)
    weights = reference.weights()
    differs = first_weight_mismatch(path, entry.weight_locations, weights)
    located = len(entry.weight_locations)
    add("weights_verbatim", None, differs is None,
        f"weight {differs} differs from the reference: the artifact was altered or exported from other weights; "
        "re-export it" if differs else f"{located} of {len(weights)} weights stored verbatim, all equal")
    unavailable = runtime.available()
    if unavailable:
        add("execution", None, True, unavailable, verdict="skipped")
        for c in getattr(runtime, "reference_checks", lambda *_: [])(path, entry, reference):
            add(c.check, c.error, c.ok, c.detail)
        return
    session = runtime.load(path, entry)
    if entry.kind == "infer":
        err = forward_error(session, reference)
        add("forward", err, err <= tol.forward,
            f"max abs error vs PyTorch, relative to max(1, |output|) (tol {tol.forward:g}{why})")
        return
    loss_err, weight_err, losses = training_errors(session, reference)
    add(f"train_{reference.steps}_steps_loss", loss_err, loss_err <= tol.loss,
        f"per-step loss vs PyTorch SGD, loss {losses[0]:.4f} -> {losses[-1]:.4f} (tol {tol.loss:g} relative{why})")
    add(f"train_{reference.steps}_steps_weights", weight_err, weight_err <= tol.weights,
        f"final trainable weights vs PyTorch SGD (tol {tol.weights:g}{why})")


def format_table(rows: list[Row]) -> str:
    lines = [f"{'artifact':<36}{'format':<11}{'check':<28}{'error':>11}  verdict"]
    for r in rows:
        err = "-" if r.error is None else f"{r.error:.2e}"
        lines.append(f"{r.artifact:<36}{r.format:<11}{r.check:<28}{err:>11}  {r.verdict}"
                     + (f"  ({r.detail})" if r.detail and r.verdict != "pass" else ""))
    return "\n".join(lines)


def rows_as_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]

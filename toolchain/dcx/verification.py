"""``dcx verify``: every artifact in its real host runtime against the reference that travels with it.

Per artifact, each row a check that can fail:
- ``integrity``: the artifact and its reference are present, inside the folder, with the sha256 the manifest
  records;
- ``reference``: every tensor and the metadata of the reference are those the manifest records (one altered
  input, batch, loss or expected weight is named);
- the runtime's static checks (operators, signatures, Core ML's updatable-model rules, ...);
- ``weights``: every reference weight accounted for, each stored one read back through the artifact's own
  structure and compared byte for byte (``dcx.export.weight_locations``), with its coverage;
- the forward outputs on the reference inputs, and for training programs every reference batch as an
  on-device SGD step, compared step for step (loss) and at the end (weights) with eager PyTorch;
- where the host cannot run the format (Core ML without macOS) that row is ``not run`` with its reason,
  and runtimes may add checks that need no execution of the real runtime (Core ML's spec in dcx's
  reference interpreter).
Formats that failed at export are ``not run`` rows too. ``strict``: a ``not run`` row fails the run.
Nothing here builds a model from a recipe or reads a dataset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from dcx.errors import DcxError
from dcx.export.weight_locations import check_weights
from dcx.manifest import ManifestEntry, inside, read_manifest, sha256_of
from dcx.reference import ProgramReference
from dcx.backends import get_runtime
from dcx.backends.runtime import relative_error as _rel
from dcx.backends.runtime import train_on_reference

SPREAD_MARGIN = 2.0  # training tolerances: at least this many times eager's own rounding spread


@dataclass(frozen=True)
class Tolerance:
    forward: float  # max absolute error of any output element, relative to max(1, that output's largest |value|)
    loss: float  # max per-step loss error, relative to max(1, |loss|)
    weights: float  # max absolute error of any final trainable weight


# Measured on this project's programs: forward <= 4e-7, loss <= 3e-7, weights <= 3e-8 where eager's own
# rounding spread is below 1e-7 (every recipe program but the mobile-scale DC-CCL step).
DEFAULT_TOLERANCE = Tolerance(forward=1e-5, loss=1e-5, weights=1e-5)


def tolerance_for(reference: ProgramReference) -> tuple[Tolerance, str]:
    """The default tolerance, widened for training programs to ``SPREAD_MARGIN`` times the spread that float32
    rounding alone gives eager PyTorch on the same steps (measured at export: ``DeviceProgram.rounding_spread``);
    and the words that say so."""
    loss = max(DEFAULT_TOLERANCE.loss, SPREAD_MARGIN * reference.loss_spread)
    weights = max(DEFAULT_TOLERANCE.weights, SPREAD_MARGIN * reference.weight_spread)
    why = ""
    if (loss, weights) != (DEFAULT_TOLERANCE.loss, DEFAULT_TOLERANCE.weights):
        why = (f"; {SPREAD_MARGIN:g} x eager's own rounding spread, 1-ulp input perturbations and float64 (loss "
               f"{reference.loss_spread:.1e}, weights {reference.weight_spread:.1e})")
    return Tolerance(DEFAULT_TOLERANCE.forward, loss, weights), why


Verdict = Literal["pass", "FAIL", "not run"]


@dataclass
class Row:
    artifact: str
    format: str
    check: str
    verdict: Verdict
    error: float | None = None
    tolerance: float | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Not a failure (``not run`` rows are counted apart; ``strict`` fails them)."""
        return self.verdict != "FAIL"


def _row(artifact: str, fmt: str, check: str, ok: bool, detail: str = "", error: float | None = None,
         tolerance: float | None = None) -> Row:
    return Row(artifact, fmt, check, "pass" if ok else "FAIL", error, tolerance, detail)


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


def verify(out: Path, *, program_filter: str | None = None) -> list[Row]:
    """Rows for every artifact of ``out`` whose program starts with ``program_filter``; formats that failed at
    export are ``not run`` rows. A filter that matches nothing is a one-line error."""
    out = Path(out)
    manifest = read_manifest(out)
    entries = [e for e in manifest.artifacts if not program_filter or e.program.startswith(program_filter)]
    failures = [f for f in manifest.failures if not program_filter or f.program.startswith(program_filter)]
    if program_filter and not entries and not failures:
        programs = sorted({e.program for e in manifest.artifacts} | {f.program for f in manifest.failures})
        raise DcxError(f"--program {program_filter!r} matches no program in {out / 'manifest.json'}: choose a "
                       f"prefix of one of {', '.join(programs) or '(none)'}")
    rows: list[Row] = []
    references: dict[str, ProgramReference] = {}
    for entry in entries:
        rows += verify_entry(out, entry, references)
    rows += [Row(f"{f.program} ({f.format})", f.format, "export", "not run",
                 detail=f"export failed, no artifact: {f.error}") for f in failures]
    return rows


def verify_entry(out: Path, entry: ManifestEntry, references: dict[str, ProgramReference]) -> list[Row]:
    rows: list[Row] = []

    def add(check: str, ok: bool, detail: str = "", error: float | None = None, tol: float | None = None) -> None:
        rows.append(_row(entry.file, entry.format, check, ok, detail, error, tol))

    def not_run(check: str, why: str) -> None:
        rows.append(Row(entry.file, entry.format, check, "not run", detail=why))

    path, ref_path = inside(out, entry.file, "file"), inside(out, entry.reference.file, "reference.file")
    problem = _integrity(path, entry.sha256) or _integrity(ref_path, entry.reference.sha256)
    if problem:
        add("integrity", False, problem)
        return rows
    add("integrity", True, "artifact and reference sha256 match the manifest")
    try:
        reference = references.get(entry.reference.file) or ProgramReference.load(ref_path)
        references[entry.reference.file] = reference
        problem = reference_problem(ref_path, reference, entry)
        add("reference", problem is None, problem or f"{len(entry.reference.tensors)} tensors and the metadata "
                                                     "match the manifest")
        if problem:
            return rows
        _verify_artifact(entry, path, reference, add, not_run)
    except NotImplementedError as e:  # the host drives this runtime's inference but not its training
        not_run("execution", str(e))
    except DcxError as e:
        add("execution", False, str(e))
    except Exception as e:  # a runtime crash is a failed check, not a crash of verify
        add("execution", False, f"{type(e).__name__}: {e}".splitlines()[0])
    return rows


def _integrity(path: Path, sha256: str) -> str | None:
    if not path.exists():
        return f"{path} is missing: re-run dcx export"
    if sha256_of(path) != sha256:
        return f"{path}: sha256 mismatch (truncated or altered): re-export it"
    return None


def reference_problem(path: Path, reference: ProgramReference, entry: ManifestEntry) -> str | None:
    """Where the reference file disagrees with what the manifest recorded of it, in one line."""
    tensors, metadata = reference.digests()
    recorded = entry.reference.tensors
    where = f"{path}: disagrees with manifest.json artifacts[{entry.program}, {entry.format}].reference"
    for name in sorted(set(recorded) | set(tensors)):
        if name not in tensors:
            return f"{where}.tensors: {name} is missing from the file: re-export"
        if name not in recorded:
            return f"{where}.tensors: the file has {name}, which the manifest does not list: re-export"
        if tensors[name] != recorded[name]:
            return f"{where}.tensors: {name} was altered after export: re-export"
    if metadata != entry.reference.metadata_sha256:
        return f"{where}.metadata_sha256: the file's metadata was altered after export: re-export"
    if reference.steps != entry.reference.steps:
        return f"{where}.steps: the file has {reference.steps} steps, the manifest {entry.reference.steps}: re-export"
    return None


def _verify_artifact(entry: ManifestEntry, path: Path, reference: ProgramReference, add, not_run) -> None:
    runtime = get_runtime(entry.format)
    for c in runtime.static_checks(path, entry):
        add(c.check, c.ok, c.detail, c.error)
    weights = check_weights(entry.format, path, entry.weight_coverage, reference.weights())
    add("weights", not weights.problems, "; ".join(weights.problems[:3]) or _coverage_words(weights))
    tol, why = tolerance_for(reference)
    for c in runtime.reference_checks(path, entry, reference, tol):
        add(c.check, c.ok, c.detail, c.error)
    unavailable = runtime.available()
    if unavailable:
        not_run("execution", unavailable)
        return
    session = runtime.load(path, entry)
    if entry.kind == "infer":
        err = forward_error(session, reference)
        add("forward", err <= tol.forward, f"max abs error vs PyTorch, relative to max(1, |output|) "
                                           f"(tol {tol.forward:g})", err, tol.forward)
        return
    first = reference.batch_arrays(0)
    try:
        forward_loss = float(np.asarray(session.run(*first)[0]))
    except NotImplementedError:  # the artifact has no forward-only method (ExecuTorch's joint graph)
        forward_loss = None
    if forward_loss is not None:
        err = _rel(forward_loss, float(reference.losses[0]))
        add("forward_loss", err <= tol.loss, f"the artifact's forward-only method on batch 0 vs PyTorch's loss "
                                             f"(tol {tol.loss:.1e} relative)", err, tol.loss)
    run = train_on_reference(session, reference)
    add(f"train_{reference.steps}_steps_loss", run.loss_error <= tol.loss,
        f"per-step loss vs torch.optim, loss {run.losses[0]:.4f} -> {run.losses[-1]:.4f} (tol {tol.loss:.1e} "
        f"relative{why})", run.loss_error, tol.loss)
    worst = max(run.weight_errors, key=run.weight_errors.get) if run.weight_errors else "-"
    add(f"train_{reference.steps}_steps_weights", run.weight_error <= tol.weights,
        f"final trainable weights vs torch.optim, worst {worst} (tol {tol.weights:.1e}{why})", run.weight_error,
        tol.weights)
    for check, errors, what in (("state", run.state_errors, "the program's state (batch-norm running statistics)"),
                                 ("optimizer_state", run.optimizer_errors,
                                  f"the {reference.optimizer.type} optimizer's state after step 1 and the last")):
        if errors:
            worst = max(errors, key=errors.get)
            add(f"train_{reference.steps}_steps_{check}", errors[worst] <= tol.weights,
                f"{what} vs PyTorch, worst {worst} (tol {tol.weights:.1e} relative to max(1, |value|){why})",
                errors[worst], tol.weights)
    session.set_weights(reference.initial)  # what the cloud does to a device: its weights in, then a step
    err = _rel(session.train_step(*first), float(reference.losses[0]))
    add("set_weights", err <= tol.loss, "the initial weights set back in, then batch 0's step loss vs PyTorch's "
                                        f"(tol {tol.loss:.1e} relative)", err, tol.loss)


def _coverage_words(check) -> str:
    words = f"weights checked: {check.checked} of {check.total} (bytes {check.checked_bytes:,} of {check.total_bytes:,})"
    if check.unread:
        words += f"; {len(check.unread)} not read by the program ({_names(check.unread)})"
    if check.transformed:
        words += (f"; {len(check.transformed)} folded by the converter into other constants, checked by the numeric "
                  f"checks only ({_names(check.transformed)})")
    return words


def _names(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


# ---------------------------------------------------------------- reporting

def counts(rows: list[Row]) -> dict[str, int]:
    return {v: sum(r.verdict == v for r in rows) for v in ("pass", "FAIL", "not run")}


def failed(rows: list[Row], strict: bool = False) -> bool:
    """Any FAIL, or with ``strict`` any ``not run``."""
    return any(r.verdict == "FAIL" or strict and r.verdict == "not run" for r in rows)


def summary(rows: list[Row]) -> str:
    c = counts(rows)
    line = f"{c['pass']} passed, {c['FAIL']} failed, {c['not run']} not run"
    export = sorted({f"{r.format} ({r.artifact.split(' ')[0]})" for r in rows if r.check == "export"})
    if export:
        line += f"; failed at export, not verified: {', '.join(export)}"
    return line


def format_table(rows: list[Row]) -> str:
    lines = [f"{'artifact':<36}{'format':<11}{'check':<30}{'error':>9}{'tol':>9}  verdict"]
    for r in rows:
        err = "-" if r.error is None else f"{r.error:.1e}"
        tol = "-" if r.tolerance is None else f"{r.tolerance:.0e}"
        lines.append(f"{r.artifact:<36}{r.format:<11}{r.check:<30}{err:>9}{tol:>9}  {r.verdict}"
                     + (f"  ({r.detail})" if r.detail and (r.verdict != "pass" or r.check == "weights") else ""))
    return "\n".join(lines)


def rows_as_json(rows: list[Row]) -> list[dict]:
    return [{**asdict(r), "ok": r.ok} for r in rows]

"""CI's deterministic regression guard: qemu-aarch64 guest instructions per inference and per training step.

Emulated time means nothing, but the number of guest instructions a program executes under
``qemu-aarch64`` repeats: ``dcx bench device --target qemu`` counts, for each of its programs, runs of
``RUNS[0]`` and ``RUNS[1]`` inferences (or training steps) and divides the difference by the runs between, so
loading and start-up cancel out. What still varies between runs is the runner's own timing bookkeeping
(sorting and printing latencies whose values differ each run, a few hundred instructions per run); 50 runs
between the two counts put it below 0.03 % of the smallest program's count, well inside ``LIMIT_PCT``.

The counts are compared with a committed baseline (``benchmarks/qemu_instructions.json``): a count more
than ``LIMIT_PCT`` above its baseline fails CI; a deliberate change is accepted by rewriting the baseline
with ``dcx bench device --target qemu --update-baseline``, the commit saying why. This module reads,
compares and writes; it imports no runtime, so a bad baseline is reported before anything is measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dcx.errors import DcxError
from dcx.paths import REPO_ROOT
from dcx.stamp import current_stamp

BASELINE = REPO_ROOT / "benchmarks" / "qemu_instructions.json"
LIMIT_PCT = 2.0  # growth above this fails: 70 times the measured run-to-run spread
RUNS = (1, 51)  # inferences (training steps) of the two counted runs; the per-unit count is their difference / 50
UPDATE = "dcx bench device --target qemu --update-baseline"
TARGET = "qemu"  # the one target that counts instructions


@dataclass(frozen=True)
class Verdict:
    """One program's count against its baseline; ``measured`` or ``baseline`` is None where only one exists."""
    program: str
    unit: str
    measured: float | None
    baseline: float | None

    @property
    def growth_pct(self) -> float | None:
        if self.measured is None or self.baseline is None:
            return None
        return 100.0 * (self.measured - self.baseline) / self.baseline

    def grew(self, limit_pct: float = LIMIT_PCT) -> bool:
        """More than ``limit_pct`` above the baseline (exactly ``limit_pct`` passes)."""
        return 100.0 * (self.measured - self.baseline) > limit_pct * self.baseline

    def shrank(self, limit_pct: float = LIMIT_PCT) -> bool:
        return 100.0 * (self.baseline - self.measured) > limit_pct * self.baseline

    def failed(self, limit_pct: float = LIMIT_PCT) -> bool:
        """A regression, or a program the baseline and the measurement do not both have."""
        return self.measured is None or self.baseline is None or self.grew(limit_pct)

    def line(self, update: str, limit_pct: float = LIMIT_PCT) -> str:
        """One line naming the program, the measurement, the baseline, the growth and what to do."""
        if self.baseline is None:
            return (f"{self.program}: {self.measured:,.0f} instructions per {self.unit}, not in the baseline: "
                    f"add it with `{update}`")
        if self.measured is None:
            return f"{self.program}: in the baseline but not measured: drop it with `{update}`"
        head = (f"{self.program}: {self.measured:,.0f} instructions per {self.unit}, baseline {self.baseline:,.0f}: "
                f"{self.growth_pct:+.2f} %")
        if self.grew(limit_pct):
            return (f"{head}, more than +{limit_pct:g} %: REGRESSION; if deliberate, accept it with `{update}` "
                    "and say why in the commit")
        if self.shrank(limit_pct):
            return f"{head}, more than {limit_pct:g} % below the baseline: accept the gain with `{update}`"
        return f"{head}, within {limit_pct:g} %"


def update_command(path: Path) -> str:
    """The command that rewrites ``path``: names it unless it is the committed baseline."""
    return UPDATE if Path(path).resolve() == BASELINE else f"{UPDATE} --baseline {path}"


def read_baseline(path: Path) -> dict[str, dict]:
    """program -> {"unit", "instructions"} of a baseline file; a missing or malformed one is a ``DcxError``."""
    path = Path(path)
    fix = f"rewrite it with `{update_command(path)}`"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DcxError(f"{path}: no instruction-count baseline there: write it with `{update_command(path)}`"
                       ) from None
    except OSError as e:
        raise DcxError(f"{path}: cannot read the instruction-count baseline ({e.strerror}): {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DcxError(f"{path}: the instruction-count baseline is not JSON ({e}): {fix}") from None
    programs = data.get("programs") if isinstance(data, dict) else None
    if not isinstance(programs, dict) or not programs or not all(
            isinstance(v, dict) and isinstance(v.get("unit"), str) and isinstance(v.get("instructions"), (int, float))
            and not isinstance(v.get("instructions"), bool) and v["instructions"] > 0 for v in programs.values()):
        raise DcxError(f"{path}: not an instruction-count baseline (\"programs\" must map each program to a unit "
                       f"and a positive \"instructions\"): {fix}")
    if data.get("runs") != list(RUNS):
        raise DcxError(f"{path}: counted from runs {data.get('runs')}, this dcx counts from runs {list(RUNS)}: "
                       f"{fix}")
    return programs


def compare(measured: dict[str, tuple[str, float]], baseline: dict[str, dict], *, complete: bool) -> list[Verdict]:
    """A verdict per program measured (program -> (unit, count)) and, when the measurement is ``complete``
    (every program the bench has), per baseline program it lacks."""
    verdicts = [Verdict(name, unit, count, baseline[name]["instructions"] if name in baseline else None)
                for name, (unit, count) in measured.items()]
    if complete:
        verdicts += [Verdict(name, entry["unit"], None, entry["instructions"])
                     for name, entry in baseline.items() if name not in measured]
    return verdicts


def write_baseline(path: Path, measured: dict[str, tuple[str, float]], *, complete: bool) -> None:
    """Rewrite ``path`` from ``measured``; a partial measurement replaces only its own programs."""
    from dcx.fileio import os_errors, write_atomic

    programs: dict[str, dict] = {}
    if not complete:
        try:
            programs = read_baseline(path)
        except DcxError:
            programs = {}  # nothing readable to keep
    programs.update({name: {"unit": unit, "instructions": round(count)} for name, (unit, count) in measured.items()})
    data = {"what": f"qemu-aarch64 guest instructions per inference or training step: runs of {RUNS[0]} and "
                    f"{RUNS[1]} differenced; `dcx bench device --target qemu` fails above +{LIMIT_PCT:g} %",
            "command": UPDATE, "runs": list(RUNS), "limit_pct": LIMIT_PCT,
            "stamp": current_stamp(1).as_dict(), "programs": dict(sorted(programs.items()))}
    with os_errors(path, "--baseline"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(path), json.dumps(data, indent=2) + "\n")


class InstructionGuard:
    """The guard of one ``dcx bench device`` run: reads the baseline before anything is measured, then checks
    (or, with ``update``, rewrites) it from the rows."""

    def __init__(self, path: Path, *, update: bool, complete: bool):
        self.path, self.update, self.complete = Path(path), update, complete
        self.baseline = {} if update else read_baseline(self.path)

    @classmethod
    def for_target(cls, target_spec: str, path: str | None, *, update: bool, complete: bool
                   ) -> InstructionGuard | None:
        """The guard for ``--target``: on qemu always (the committed baseline unless ``--baseline``), elsewhere
        none, and asking for one there is a mistake."""
        if target_spec != TARGET:
            if path is not None or update:
                raise DcxError(f"--{'update-baseline' if update else 'baseline'}: {target_spec} counts no "
                               f"instructions: use --target {TARGET}")
            return None
        return cls(Path(path) if path is not None else BASELINE, update=update, complete=complete)

    def apply(self, rows: list[dict], echo: Callable[[str], None]) -> bool:
        """Check or rewrite the baseline from ``rows`` (``dcx.bench.device`` rows, annotated here with their
        baseline and growth); echo one line per program; True when the check fails."""
        measured = {}
        for row in rows:
            if row["instructions_per_unit"] is None:
                raise DcxError(f"{row['target']} counted no instructions for {row['program']}: rebuild the qemu "
                               "plugin with `bash runtimes/native/build.sh`")
            measured[row["program"]] = (row["unit"], row["instructions_per_unit"])
        if self.update:
            write_baseline(self.path, measured, complete=self.complete)
            echo(f"wrote {self.path}: instructions per unit of {len(measured)} program(s), runs {RUNS[0]} and "
                 f"{RUNS[1]} differenced")
            return False
        verdicts = compare(measured, self.baseline, complete=self.complete)
        by_program = {v.program: v for v in verdicts}
        for row in rows:
            row["baseline_instructions"] = by_program[row["program"]].baseline
            row["growth_pct"] = by_program[row["program"]].growth_pct
        update = update_command(self.path) + ("" if self.complete else " --programs " +
                                              ",".join(measured))
        for verdict in verdicts:
            echo(verdict.line(update))
        failed = [v.program for v in verdicts if v.failed()]
        echo(f"instruction counts against {self.path}: "
             + (f"FAILED for {', '.join(failed)}" if failed else f"every count within +{LIMIT_PCT:g} %"))
        return bool(failed)

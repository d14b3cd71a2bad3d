"""CI's instruction-count guard (``dcx bench device --target qemu``, ``dcx.bench.instruction_guard``).

The comparison on its own (exactly +2 % passes, more fails, a gain passes and is reported), a bad baseline
(one line naming the file and the fix, exit 2, before anything is measured), and ``.ci/run``'s own command
run with real qemu counts of one small program against a baseline lowered by 3 % (fails, naming it) and
raised by 3 % (passes).
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dcx.bench.instruction_guard import BASELINE, LIMIT_PCT, RUNS, UPDATE, Verdict, compare, read_baseline
from dcx.errors import DcxError

REPO = Path(__file__).resolve().parents[1]
PROGRAM = "coda.classifier.infer"  # the smallest program of the bench: seconds under qemu


def dcx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from dcx.cli import main; main()", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def ci_bench_args() -> list[str]:
    """The arguments `.ci/run` gives `dcx bench device`."""
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
             if "dcx bench device" in line and not line.lstrip().startswith("#")]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0])
    return words[words.index("bench"):]


# ------------------------------------------------------------------------------------------- the comparison

def test_exactly_the_limit_passes_and_more_fails():
    assert LIMIT_PCT == 2.0
    at_limit = Verdict("p.infer", "inference", 1020, 1000)
    assert not at_limit.failed() and at_limit.growth_pct == pytest.approx(2.0)
    assert Verdict("p.infer", "inference", 1020.01, 1000).failed()
    assert Verdict("p.infer", "inference", 102_000_001, 100_000_000).failed()
    assert not Verdict("p.infer", "inference", 102_000_000, 100_000_000).failed()
    line = Verdict("p.infer", "inference", 1030, 1000).line(UPDATE)
    assert line.startswith("p.infer: 1,030 instructions per inference, baseline 1,000: +3.00 %")
    assert "REGRESSION" in line


def test_a_gain_passes_and_is_reported_with_the_update_command():
    gain = Verdict("p.train", "training step", 970, 1000)
    assert not gain.failed() and gain.shrank()
    assert "-3.00 %" in gain.line(UPDATE) and UPDATE in gain.line(UPDATE)
    small = Verdict("p.train", "training step", 990, 1000)
    assert not small.failed() and not small.shrank() and "within 2 %" in small.line(UPDATE)


def test_programs_the_baseline_and_the_measurement_do_not_share_fail():
    baseline = {"a.infer": {"unit": "inference", "instructions": 100}, "gone.infer": {"unit": "inference",
                                                                                    "instructions": 50}}
    measured = {"a.infer": ("inference", 100.0), "new.train": ("training step", 7.0)}
    verdicts = {v.program: v for v in compare(measured, baseline, complete=True)}
    assert not verdicts["a.infer"].failed()
    assert verdicts["new.train"].failed() and "not in the baseline" in verdicts["new.train"].line(UPDATE)
    assert verdicts["gone.infer"].failed() and "not measured" in verdicts["gone.infer"].line(UPDATE)
    assert {v.program for v in compare(measured, baseline, complete=False)} == {"a.infer", "new.train"}


def test_the_committed_baseline_covers_every_program_of_the_bench_at_these_runs():
    from dcx.bench.device import bench_programs

    baseline = read_baseline(BASELINE)
    assert set(baseline) == {p.name for p in bench_programs()}
    assert json.loads(BASELINE.read_text())["stamp"]["commit"]


# ------------------------------------------------------------------------------------------- bad baselines

@pytest.mark.parametrize("text,needle", [
    (None, "no instruction-count baseline there"),
    ("{\"runs\": [1, 51], \"programs\": {", "is not JSON"),
    ("[1, 2]", "not an instruction-count baseline"),
    (json.dumps({"runs": list(RUNS), "programs": {PROGRAM: {"unit": "inference", "instructions": -5}}}),
     "not an instruction-count baseline"),
    (json.dumps({"runs": list(RUNS), "programs": {PROGRAM: {"unit": "inference"}}}),
     "not an instruction-count baseline"),
    (json.dumps({"runs": [1, 6], "programs": {PROGRAM: {"unit": "inference", "instructions": 25000}}}),
     "counted from runs [1, 6]"),
])
def test_a_missing_or_malformed_baseline_is_one_line_naming_the_file_and_the_fix(tmp_path, text, needle):
    path = tmp_path / "baseline.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DcxError, match=re.escape(needle)):
        read_baseline(path)
    r = dcx("bench", "device", "--target", "qemu", "--baseline", str(path), "--json", str(tmp_path / "rows.json"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(path) in lines[0] and needle in lines[0] and f"{UPDATE} --baseline {path}" in lines[0]
    assert not (tmp_path / "rows.json").exists()  # refused before measuring


def test_a_baseline_on_a_target_that_counts_no_instructions_is_refused(tmp_path):
    r = dcx("bench", "device", "--target", "host", "--update-baseline", "--json", str(tmp_path / "rows.json"))
    assert r.returncode == 2 and "--update-baseline: host counts no instructions: use --target qemu" in r.stderr


# ------------------------------------------------------------------------------------------- real qemu counts

@pytest.fixture(scope="module")
def fresh_baseline(tmp_path_factory) -> tuple[Path, float]:
    """A baseline of PROGRAM written by `--update-baseline` from a real qemu measurement, and its count."""
    path = tmp_path_factory.mktemp("guard") / "baseline.json"
    r = dcx("bench", "device", "--target", "qemu", "--programs", PROGRAM, "--update-baseline", "--baseline",
            str(path), "--json", str(path.with_name("rows.json")))
    assert r.returncode == 0, r.stdout + r.stderr
    written = json.loads(path.read_text())
    assert written["runs"] == list(RUNS) and written["stamp"]["threads"] == 1 and list(written["programs"]) == [PROGRAM]
    return path, written["programs"][PROGRAM]["instructions"]


def altered(fresh: tuple[Path, float], factor: float, tmp_path: Path) -> Path:
    data = json.loads(fresh[0].read_text())
    data["programs"][PROGRAM]["instructions"] = round(fresh[1] * factor)
    path = tmp_path / "altered.json"
    path.write_text(json.dumps(data))
    return path


def test_ci_fails_on_a_3_percent_regression_naming_the_program(fresh_baseline, tmp_path):
    baseline = altered(fresh_baseline, 0.97, tmp_path)  # the measurement is now 3.1 % above it
    r = dcx(*ci_bench_args(), "--programs", PROGRAM, "--baseline", str(baseline), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(line for line in r.stdout.splitlines() if line.startswith(f"{PROGRAM}:"))
    growth = float(re.search(r"baseline [\d,]+: ([+-][\d.]+) %", line).group(1))
    assert 2.9 < growth < 3.3 and "REGRESSION" in line and f"baseline {round(fresh_baseline[1] * 0.97):,}" in line
    assert f"FAILED for {PROGRAM}" in r.stdout
    row = json.loads((tmp_path / "r.json").read_text())[0]
    assert row["program"] == PROGRAM and row["growth_pct"] == pytest.approx(growth, abs=0.01)


def test_ci_passes_on_a_3_percent_gain_and_reports_it(fresh_baseline, tmp_path):
    baseline = altered(fresh_baseline, 1.03, tmp_path)  # the measurement is now 2.9 % below it
    r = dcx(*ci_bench_args(), "--programs", PROGRAM, "--baseline", str(baseline), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(line for line in r.stdout.splitlines() if line.startswith(f"{PROGRAM}:"))
    assert "below the baseline" in line and f"{UPDATE} --baseline {baseline} --programs {PROGRAM}" in line

"""``--tflite-benchmark PATH``: LiteRT's own ``benchmark_model`` on the phone, beside dcx's runner.

The binary is the user's own arm64 Android build of LiteRT's benchmark tool
(none can be downloaded here). It runs single-threaded through any target, and
what it prints is read into the fields the native runner reports, so one
profile table holds both: ``load_ms`` ("Initialized session in X ms."),
``first_ms`` and ``latency_ms.mean`` ("Inference timings in us: ..."), min/max
and the run counts from its ``count=`` lines, and the memory lines (maximum
resident set sizes, in MB) as ``peak_rss_kb``/``peak_rss_delta_kb``.
Numbers benchmark_model does not print are None.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from dcx.errors import DcxError
from dcx.targets import RunRequest, Target, describe_exit

PROGRAM = "benchmark_model"
MODEL = "model.tflite"
AARCH64_ELF_MACHINE = 183

NUMBER = r"(-?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf))"
SESSION_RE = re.compile(rf"Initialized session in {NUMBER}\s*ms")
TIMINGS_RE = re.compile(rf"Inference timings in us: Init: {NUMBER}, First inference: {NUMBER}, "
                        rf"Warmup \(avg\): {NUMBER}, Inference \(avg\): {NUMBER}")
FOOTPRINT_RE = re.compile(rf"Memory footprint delta from the start of the tool \(MB\): init={NUMBER} overall={NUMBER}")
PEAK_RE = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {NUMBER}")
COUNT_RE = re.compile(r"\bcount=\d+ first=.*")
FIELD_RE = re.compile(rf"(\w+)={NUMBER}")


def benchmark_args(num_runs: int, warmup_runs: int) -> list[str]:
    return [f"--graph={MODEL}", "--num_threads=1", f"--num_runs={num_runs}", f"--warmup_runs={warmup_runs}",
            "--report_peak_memory_footprint=true"]


def parse_benchmark_output(text: str, source: str) -> dict:
    """The runner's profile fields from benchmark_model's log; ``source`` names binary and device in errors."""
    session, timings = SESSION_RE.search(text), TIMINGS_RE.search(text)
    if session is None or timings is None:
        missing = "Initialized session in" if session is None else "Inference timings in us:"
        lines = [line for line in text.splitlines() if line.strip()]
        seen = lines[-1][:200] if lines else "nothing"
        raise DcxError(f"{source} printed no '{missing}' line (last line: {seen!r}): "
                       "--tflite-benchmark must be LiteRT's benchmark_model")
    _init_us, first_us, _warmup_us, mean_us = (float(v) for v in timings.groups())
    # Warm-up, then the measured runs: each ends with a "count=N first=.. min=.. max=.. avg=.." line.
    counts = [dict(FIELD_RE.findall(line)) for line in COUNT_RE.findall(text)]
    runs = counts[-1] if counts else {}
    footprint, peak = FOOTPRINT_RE.search(text), PEAK_RE.search(text)

    def ms(us: str | None) -> float | None:
        return None if us is None else float(us) / 1000

    def kb(mb: str | None) -> float | None:
        return None if mb is None else float(mb) * 1024

    return {
        "runner": PROGRAM,
        "load_ms": float(session.group(1)),
        "first_ms": first_us / 1000,
        "warmup": int(counts[0]["count"]) if len(counts) > 1 else 0,
        "iterations": int(runs["count"]) if runs else None,
        "latency_ms": {"mean": mean_us / 1000, "trimmed_mean": None, "p50": ms(runs.get("median")), "p90": None,
                       "min": ms(runs.get("min")), "max": ms(runs.get("max"))},
        "peak_rss_kb": kb(peak.group(1)) if peak else None,
        "peak_rss_delta_kb": kb(footprint.group(2)) if footprint else None,
        "init_rss_delta_kb": kb(footprint.group(1)) if footprint else None,
    }


def check_binary(binary: Path) -> None:
    try:
        with open(binary, "rb") as f:
            header = f.read(20)
    except OSError:
        header = b""
    if len(header) < 20 or header[:4] != b"\x7fELF" or int.from_bytes(header[18:20], "little") != AARCH64_ELF_MACHINE:
        raise DcxError(f"--tflite-benchmark {binary}: not an aarch64 program: pass the arm64 Android build of "
                       "LiteRT's benchmark_model")


def benchmark_tflite(target: Target, binary: Path, models: Iterable[Path], num_runs: int, warmup_runs: int,
                     local_dir: Path) -> Iterator[dict]:
    """One row per model, yielded as soon as it is measured: a caller keeps the rows before a failure."""
    check_binary(binary)
    for model in models:
        if not model.is_file():
            raise DcxError(f"{model}: no such .tflite file: check the path")
        request = RunRequest(args=benchmark_args(num_runs, warmup_runs), push={PROGRAM: binary, MODEL: model},
                             program=PROGRAM)
        result = target.run(request, local_dir)
        source = f"{binary.name} on {target.name}"
        if result.returncode != 0:
            lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
            raise DcxError(f"{source} {describe_exit(result.returncode)} on {model.name}: "
                           f"{lines[-1][:200] if lines else 'no output'}")
        row = parse_benchmark_output(result.stdout + "\n" + result.stderr, source)
        yield {"model": str(model), "target": target.name, **row}

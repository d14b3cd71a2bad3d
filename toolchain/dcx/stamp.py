"""What a generated result was measured on: the commit, whether the tree was dirty, when, on which CPU, with
how many threads and which runtime versions.

Every file a benchmark, ``dcx evaluate`` or ``dcx simulate`` writes carries a ``Stamp``: Markdown files as one
line (``stamp_line``), JSON files as a ``"stamp"`` object. ``dcx readme --check`` reads the commit back
(``read_stamp``) to refuse a result older than the code it measured.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dcx.paths import REPO_ROOT

RUNTIME_PACKAGES = ("torch", "executorch", "ai-edge-litert", "tensorflow-cpu", "coremltools", "onnxruntime", "mnn",
                    "flwr")
STAMP_PATTERN = re.compile(r"Stamp: commit `([0-9a-f]{40})`( \(dirty\))?, (\S+ \S+ UTC)")


@dataclass(frozen=True)
class Stamp:
    commit: str  # the checkout's HEAD when the result was measured ("unknown" outside a git checkout)
    dirty: bool  # uncommitted changes (or files git does not ignore yet) outside benchmarks/ at that moment
    date: str  # UTC, "YYYY-MM-DD HH:MM UTC"
    cpu: str
    threads: int
    versions: dict[str, str] = field(default_factory=dict)  # the installed runtime packages

    def as_dict(self) -> dict:
        return asdict(self)


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def current_stamp(threads: int) -> Stamp:
    """The stamp of a result measured now, in this checkout, with ``threads`` threads."""
    versions = {}
    for package in RUNTIME_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    # benchmarks/ holds what the commands write: one benchmark rewriting its file leaves the next one's code clean
    status = _git("status", "--porcelain", "--", ".", ":(exclude)benchmarks")
    return Stamp(commit=_git("rev-parse", "HEAD") or "unknown", dirty=bool(status) if status is not None else True,
                 date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), cpu=cpu_name(),
                 threads=threads, versions=versions)


def stamp_line(stamp: Stamp) -> str:
    """One Markdown line; ``read_stamp`` parses it back."""
    versions = ", ".join(f"{k} {v}" for k, v in stamp.versions.items())
    return (f"Stamp: commit `{stamp.commit}`{' (dirty)' if stamp.dirty else ''}, {stamp.date}, {stamp.cpu}, "
            f"{stamp.threads} thread{'s' if stamp.threads != 1 else ''}; {versions}.")


def read_stamp(text: str) -> tuple[str, bool] | None:
    """(commit, dirty) of the stamp line in a generated Markdown file, or None when it has none."""
    match = STAMP_PATTERN.search(text)
    return (match.group(1), bool(match.group(2))) if match else None

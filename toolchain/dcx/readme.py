"""``dcx readme``: the README's measured sections, copied from the files the benchmark commands write, and the
checks that keep those files honest.

A section is marked in README.md as ``<!-- dcx:NAME -->`` ... ``<!-- /dcx:NAME -->``; its body is
the body of ``SECTIONS[NAME]``, a Markdown file a command wrote (the command is named in the
file's first line). No number in those sections is typed by hand: rerun the command, then
``dcx readme``.

``GENERATED`` lists every committed generated file with the command that writes it and the repository paths whose
changes make it stale. ``dcx readme --check`` fails (``check_generated``) when
- the README and the files disagree;
- a file has no stamp (``dcx.stamp``), was measured on a dirty tree, or is older than the code it measures: the
  last commit that changed one of its paths must be its stamped commit or an ancestor of it;
- two files give one target different verdicts. A verdict is one line, ``verdict: PROGRAM TARGET: VERDICT``
  (``VERDICT`` is ``met``, ``not met`` or ``n/a``; ``dcx.bench.runtimes.verdict_lines`` writes them), e.g.
  ``verdict: dcccl_mnv2.train 2x-eager: not met``; ``n/a`` contradicts nothing.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dcx.errors import DcxError
from dcx.fileio import os_errors, write_atomic
from dcx.paths import REPO_ROOT as REPO
from dcx.stamp import read_stamp

SECTIONS = {
    "runtimes": "benchmarks/runtimes.md",
    "runtimes-mobile": "benchmarks/runtimes_mnv2.md",
    "native-runner": "benchmarks/native.md",
    "iciia-mnv2": "benchmarks/iciia_mnv2.md",
    "simulate": "benchmarks/simulate/README.md",
    "coverage": "benchmarks/coverage.md",
}
VERDICT_LINE = re.compile(r"^verdict: (\S+) (\S+): (met|not met|n/a)\s*$", re.M)


@dataclass(frozen=True)
class GeneratedFile:
    """A committed file a command writes (``path`` may be a glob), and the repository paths it measures."""

    path: str
    command: str
    measures: tuple[str, ...]


# What a training step measures: the programs, their export, the runtimes that step them, the kernels.
_TRAINING_STEP = ("toolchain/dcx/programs.py", "toolchain/dcx/training.py", "toolchain/dcx/models",
                  "toolchain/dcx/methods/dcccl", "toolchain/dcx/methods/coda", "toolchain/dcx/export",
                  "toolchain/dcx/passes", "toolchain/dcx/backends/executorch", "toolchain/dcx/backends/tflite",
                  "kernels/base", "kernels/training", "kernels/ops.def", "kernels/CMakeLists.txt", "kernels/python/training",
                  "toolchain/dcx/bench/runtimes.py", "toolchain/dcx/bench/mnn.py", "pyproject.toml")
_QEMU = ("runtimes/native", "android_harness/qemu.py", "android_harness/bundle.py", "toolchain/dcx/targets")
_SIMULATION = ("toolchain/dcx/simulate", "toolchain/dcx/methods", "toolchain/dcx/models", "toolchain/dcx/data",
               "toolchain/dcx/programs.py", "toolchain/dcx/training.py", "toolchain/dcx/export",
               "toolchain/dcx/backends/executorch", "kernels/base", "kernels/training", "kernels/partitioned_linear")

GENERATED = (
    GeneratedFile("benchmarks/runtimes.md", "dcx bench runtimes --markdown benchmarks/runtimes.md", _TRAINING_STEP),
    GeneratedFile("benchmarks/runtimes_mnv2.md",
                  "dcx bench runtimes --recipe dcccl_mnv2 --rounds 7 --markdown benchmarks/runtimes_mnv2.md",
                  _TRAINING_STEP),
    GeneratedFile("benchmarks/training_kernels.md", "dcx bench training --markdown benchmarks/training_kernels.md",
                  (*_TRAINING_STEP, "toolchain/dcx/bench/training.py", *_QEMU)),
    GeneratedFile("benchmarks/training_kernels_mnv2.md",
                  "dcx bench training --programs dcccl_mnv2.train --instructions fast --rounds 5 "
                  "--markdown benchmarks/training_kernels_mnv2.md",
                  (*_TRAINING_STEP, "toolchain/dcx/bench/training.py", *_QEMU)),
    GeneratedFile("benchmarks/native.md",
                  "dcx export --recipe all --format executorch --out out/pte --force && dcx bench native out/pte "
                  "--rounds 7 --iterations 200 --qemu-instructions --markdown benchmarks/native.md",
                  ("toolchain/dcx/bench/native.py", "toolchain/dcx/export", "toolchain/dcx/models",
                   "toolchain/dcx/methods", "toolchain/dcx/backends/executorch", *_QEMU)),
    GeneratedFile("benchmarks/README.md", "dcx bench kernels",
                  ("kernels/base", "kernels/partitioned_linear", "kernels/CMakeLists.txt",
                   "kernels/python/partitioned_linear.py", "toolchain/dcx/bench/kernels.py",
                   "toolchain/dcx/models/partitioned_linear.py")),
    GeneratedFile("benchmarks/iciia_mnv2.md",
                  "dcx evaluate --recipe iciia_mnv2 --seed 0 --markdown benchmarks/iciia_mnv2.md",
                  ("toolchain/dcx/methods/iciia", "toolchain/dcx/models", "toolchain/dcx/data",
                   "toolchain/dcx/programs.py", "toolchain/dcx/training.py")),
    GeneratedFile("benchmarks/simulate/*.md", "dcx simulate all --out benchmarks/simulate --force", _SIMULATION),
    GeneratedFile("benchmarks/verify.md", "dcx bench verify --markdown benchmarks/verify.md",
                  ("toolchain/dcx/export", "toolchain/dcx/verification.py", "toolchain/dcx/reference.py",
                   "toolchain/dcx/manifest.py", "toolchain/dcx/backends", "toolchain/dcx/programs.py",
                   "toolchain/dcx/methods", "toolchain/dcx/models", "toolchain/dcx/passes", "kernels/base",
                   "kernels/training", "kernels/partitioned_linear",
                   "toolchain/dcx/bench/verify.py", "pyproject.toml")),
    GeneratedFile("benchmarks/coverage.md", "dcx coverage --markdown benchmarks/coverage.md",
                  ("toolchain/dcx/coverage.py", "toolchain/dcx/finetune.py", "toolchain/dcx/models",
                   "toolchain/dcx/export", "toolchain/dcx/verification.py", "toolchain/dcx/reference.py",
                   "toolchain/dcx/manifest.py", "toolchain/dcx/backends", "toolchain/dcx/programs.py",
                   "toolchain/dcx/optim.py", "toolchain/dcx/passes", "kernels/base", "kernels/training",
                   "pyproject.toml")),
)


def _body(path: Path) -> str:
    """A generated file without its title line (the README section has its own heading)."""
    with os_errors(path):
        lines = path.read_text().splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip()


def sync(readme: Path = REPO / "README.md", root: Path = REPO, check: bool = False) -> list[str]:
    """Copy every section's file into the README (or, with ``check``, only compare); returns the sections that
    differed. A section whose file does not exist yet is left as it is and reported."""
    with os_errors(readme):
        text = readme.read_text()
    changed = []
    for name, rel in SECTIONS.items():
        pattern = re.compile(rf"(<!-- dcx:{name} -->\n)(.*?)(<!-- /dcx:{name} -->)", re.S)
        match = pattern.search(text)
        if match is None:
            raise DcxError(f"{readme}: no section <!-- dcx:{name} --> ... <!-- /dcx:{name} -->: add the markers")
        if not (root / rel).is_file():
            changed.append(f"{name} ({rel} not written yet: run the command that writes it)")
            continue
        body = _body(root / rel)
        if match.group(2).strip() != body:
            changed.append(name)
            text = text[: match.start(2)] + body + "\n" + text[match.end(2):]
    if changed and not check:
        with os_errors(readme):
            write_atomic(readme, text)
    return changed


# ---------------------------------------------------------------------------------------------- the checks

def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise DcxError(f"dcx readme --check needs git ({e.strerror}): install git") from None


def _staleness(root: Path, rel: str, entry: GeneratedFile) -> list[str]:
    """Why the generated file ``rel`` is older than the code it measures (nothing when it is not)."""
    rerun = f"rerun `{entry.command}`"
    stamp = read_stamp((root / rel).read_text(errors="replace"))
    if stamp is None:
        return [f"{rel}: no stamp line: {rerun}"]
    commit, dirty = stamp
    if dirty:
        return [f"{rel}: measured on a tree with uncommitted changes (commit {commit[:12]}): commit them, then {rerun}"]
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return [f"{rel}: its stamped commit {commit[:12]} is not in this repository's history: {rerun}"]
    problems = []
    for path in entry.measures:
        last = _git(root, "log", "-1", "--format=%H", "--", path).stdout.strip()
        if last and _git(root, "merge-base", "--is-ancestor", last, commit).returncode != 0:
            problems.append(f"{rel}: measured at {commit[:12]}, but {path} changed since (commit {last[:12]}): "
                            f"{rerun}")
    return problems


def _verdicts(root: Path, files: list[str]) -> dict[tuple[str, str], dict[str, list[str]]]:
    """(program, target) -> verdict -> the files that give it."""
    out: dict[tuple[str, str], dict[str, list[str]]] = {}
    for rel in files:
        for program, target, verdict in VERDICT_LINE.findall((root / rel).read_text(errors="replace")):
            out.setdefault((program, target), {}).setdefault(verdict, []).append(rel)
    return out


def check_generated(root: Path = REPO, generated: tuple[GeneratedFile, ...] = GENERATED) -> list[str]:
    """One line per problem with the committed generated files of ``root`` (a git checkout): a file missing, without
    a stamp, measured on a dirty tree or older than a path it declares; two files disagreeing on a verdict."""
    problems, files = [], []
    for entry in generated:
        for path in entry.measures:
            if not _git(root, "ls-files", "--cached", "--others", "--exclude-standard", "--", path).stdout.strip():
                problems.append(f"{entry.path}: declares {path}, which matches no file of the repository: "
                                "fix GENERATED in dcx/readme.py")
        matched = sorted(str(p.relative_to(root)) for p in root.glob(entry.path) if p.is_file())
        if not matched:
            problems.append(f"{entry.path}: missing: run `{entry.command}`")
        for rel in matched:
            files.append(rel)
            problems += _staleness(root, rel, entry)
    for (program, target), verdicts in sorted(_verdicts(root, files).items()):
        decided = {v: f for v, f in verdicts.items() if v != "n/a"}
        if len(decided) > 1:
            problems.append(f"{program} {target}: " + "; ".join(f"{v} in {', '.join(f)}" for v, f in decided.items())
                            + ": the files disagree; rerun both")
    return problems

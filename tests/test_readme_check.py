"""``dcx readme --check`` on generated files: stale against the code they measure, or disagreeing on a verdict.

The first tests build a throwaway git repository, so they do not depend on this checkout's history."""

import subprocess
from pathlib import Path

import pytest

from dcx.readme import GENERATED, GeneratedFile, check_generated
from dcx.stamp import Stamp, stamp_line

BENCH = GeneratedFile("results/step.md", "dcx bench step --markdown results/step.md", ("src/kernel.c",))
OTHER = GeneratedFile("results/other.md", "dcx bench other", ("src/other.c",))


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def commit(root: Path, files: dict[str, str], message: str) -> str:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git(root, "add", *files)
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def generated(commit_id: str, body: str = "", dirty: bool = False) -> str:
    stamp = Stamp(commit_id, dirty, "2026-12-01 10:00 UTC", "test CPU", 1, {"torch": "2.13.0"})
    return f"# A benchmark\n\nWritten by `dcx bench step`.\n\n{stamp_line(stamp)}\n\n{body}\n"


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    git(tmp_path, "init", "-q")
    return tmp_path, commit(tmp_path, {"src/kernel.c": "v1", "src/other.c": "v1"}, "code")


def test_a_file_measured_at_the_last_change_of_its_code_passes(repo):
    root, code = repo
    commit(root, {"results/step.md": generated(code), "results/other.md": generated(code)}, "results")
    assert check_generated(root, (BENCH, OTHER)) == []
    commit(root, {"src/unrelated.txt": "x"}, "a change that no benchmark declares")
    assert check_generated(root, (BENCH, OTHER)) == []


def test_a_file_older_than_the_code_it_measures_fails_naming_the_file_and_the_path(repo):
    root, code = repo
    commit(root, {"results/step.md": generated(code), "results/other.md": generated(code)}, "results")
    change = commit(root, {"src/kernel.c": "v2"}, "faster kernel")
    (problem,) = check_generated(root, (BENCH, OTHER))
    assert problem.startswith("results/step.md: ") and "src/kernel.c" in problem and change[:12] in problem
    assert "rerun `dcx bench step --markdown results/step.md`" in problem


@pytest.mark.parametrize("text,needle", [
    ("# A benchmark\n\nno stamp here\n", "no stamp line"),
    (None, "uncommitted changes"),
    ("Stamp: commit `" + "ab" * 20 + "`, 2026-12-01 10:00 UTC, cpu, 1 thread; .\n", "not in this repository"),
])
def test_a_missing_dirty_or_foreign_stamp_fails(repo, text, needle):
    root, code = repo
    commit(root, {"results/step.md": text or generated(code, dirty=True), "results/other.md": generated(code)},
           "results")
    (problem,) = check_generated(root, (BENCH, OTHER))
    assert problem.startswith("results/step.md: ") and needle in problem


def test_two_files_with_different_verdicts_for_one_target_fail(repo):
    root, code = repo
    met = "```\nverdict: dcccl_mnv2.train 2x-eager: met\nverdict: dcccl_mnv2.train faster-than-mnn: n/a\n```"
    not_met = "```\nverdict: dcccl_mnv2.train 2x-eager: not met\nverdict: dcccl_mnv2.train faster-than-mnn: met\n```"
    commit(root, {"results/step.md": generated(code, met), "results/other.md": generated(code, not_met)}, "r")
    (problem,) = check_generated(root, (BENCH, OTHER))  # n/a against met is no disagreement
    assert problem.startswith("dcccl_mnv2.train 2x-eager: ")
    assert "met in results/step.md" in problem and "not met in results/other.md" in problem


def test_a_declared_path_that_matches_nothing_fails(repo):
    root, code = repo
    commit(root, {"results/step.md": generated(code)}, "results")
    typo = GeneratedFile(BENCH.path, BENCH.command, ("src/kernel.cc",))
    (problem,) = check_generated(root, (typo,))
    assert problem.startswith("results/step.md: declares src/kernel.cc, which matches no file")


def test_every_declared_path_and_file_exists():
    """The registry cannot drift from the tree: each declared path matches a tracked file."""
    problems = [p for p in check_generated() if "declares" in p or "missing" in p]
    assert problems == []
    assert {g.path for g in GENERATED} >= {"benchmarks/runtimes.md", "benchmarks/runtimes_mnv2.md",
                                           "benchmarks/training_kernels.md", "benchmarks/training_kernels_mnv2.md",
                                           "benchmarks/native.md", "benchmarks/README.md", "benchmarks/iciia_mnv2.md",
                                           "benchmarks/simulate/*.md"}


def test_the_committed_generated_files_are_current():
    """Fails until every benchmark is rerun on the final code (GENERATED names the commands)."""
    assert check_generated() == []

import subprocess
import sys

import pytest
import torch

from dcx.methods import get_program, get_recipe, recipe_names
from dcx.errors import DcxError


def dcx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from dcx.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def test_help_lists_commands():
    r = dcx("--help")
    assert r.returncode == 0 and "recipes" in r.stdout and "info" in r.stdout


def test_info_reports_backends_and_datasets():
    r = dcx("info")
    assert r.returncode == 0
    assert "executorch" in r.stdout and "fashion-mnist          present" in r.stdout


def test_recipes_lists_programs_with_flops():
    r = dcx("recipes")
    assert r.returncode == 0
    for name in ("dcccl.train", "dcccl.infer", "iciia.infer", "coda.classifier.train", "coda.recommender.train"):
        assert name in r.stdout


@pytest.mark.parametrize("args,needle", [
    (("nope",), "No such command"),
    (("recipes", "--bogus"), "No such option"),
    (("evaluate", "--recipe", "nope"), "unknown recipe 'nope'"),
])
def test_bad_input_is_one_line_without_traceback(args, needle):
    r = dcx(*args)
    assert r.returncode != 0
    assert needle in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_registry_and_determinism():
    assert set(recipe_names(only_all=True)) == {"dcccl", "iciia", "coda"}
    assert set(recipe_names()) == {"dcccl", "iciia", "coda", "dcccl_mnv2", "iciia_mnv2"}
    a, b = get_program("dcccl.train", seed=3), get_program("dcccl.train", seed=3)
    assert torch.equal(a.run(*a.example_inputs)[0], b.run(*b.example_inputs)[0])
    with pytest.raises(DcxError, match="no program"):
        get_program("dcccl.nope")
    with pytest.raises(DcxError, match="unknown recipe"):
        get_recipe("nope")


def test_evaluate_is_deterministic():
    r = get_recipe("iciia")
    from dataclasses import replace
    r.cfg = replace(r.cfg, backbone_samples=1000, iciia_clients=500, iciia_epochs=1, backbone_epochs=1)
    assert r.evaluate(seed=5) == r.evaluate(seed=5)


def test_readme_numbers_are_the_benchmark_files():
    """Every measured section of README.md is the file a benchmark command wrote (`dcx readme` keeps them equal)."""
    r = dcx("readme", "--check")
    assert r.returncode == 0 and "out of date" not in r.stdout, r.stdout + r.stderr

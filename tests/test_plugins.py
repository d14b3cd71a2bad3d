"""Adding a method, a backend and a target: each is one folder plus one registration (an entry point), as
``docs/architecture.md`` says. A temporary folder on ``PYTHONPATH`` holds three toy packages and the distribution
metadata that declares their entry points; the real ``dcx`` command, in fresh processes, lists them
(``dcx recipes``, ``dcx info``) and uses them (``dcx export``, ``dcx verify``, ``dcx profile --target``)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

TOY_METHOD = '''
"""A toy method: a two-layer perceptron on random data, trained for nothing."""
from dataclasses import dataclass

import torch
from torch import nn

from dcx.methods import TrainedModules, register_recipe
from dcx.optim import SGD
from dcx.programs import DeviceProgram


class Loss(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.net(x), y)


@register_recipe
class Toy:
    name, summary, program_names = "toy", "a toy method", ("toy.train", "toy.infer")

    @dataclass(frozen=True)
    class Config:
        hidden: int = 8

    def __init__(self, cfg=None):
        self.cfg = cfg or self.Config()

    def build_modules(self, seed=0):
        torch.manual_seed(seed)
        return {"net": nn.Sequential(nn.Linear(4, self.cfg.hidden), nn.ReLU(), nn.Linear(self.cfg.hidden, 3))}

    def train(self, seed=0, progress=lambda s: None):
        return TrainedModules(self.build_modules(seed), {})

    def device_programs(self, seed=0, modules=None):
        net = (modules or self.build_modules(seed))["net"]
        x, y = torch.rand(5, 4, generator=torch.Generator().manual_seed(seed)), torch.tensor([0, 1, 2, 0, 1])
        return [DeviceProgram("toy.train", "train", Loss(net), (x, y), ("x", "y"), ("loss",), "toy step",
                              optimizer=SGD(0.1), recipe="toy"),
                DeviceProgram("toy.infer", "infer", net, (x[:1],), ("x",), ("logits",), "toy logits", recipe="toy")]

    def evaluate(self, seed=0):
        return {}
'''

TOY_BACKEND = '''
"""A toy format: a two-layer perceptron's weights in an .npz, run by numpy."""
import struct
import zipfile
from pathlib import Path

import numpy as np

from dcx.backends import ArtifactInfo, Backend, register_backend
from dcx.backends.runtime import Check
from dcx.backends.stored import StoredTensor
from dcx.manifest import Signature
from dcx.programs import TensorSpec


class Exporter:
    def supports(self, program):
        return None if set(program.module.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"} else "not an MLP"

    def suffix_for(self, program):
        return ".npz"

    def export(self, program, path, options=None, reference=None):
        with open(path, "wb") as f:
            np.savez(f, **{k: v.detach().numpy() for k, v in program.module.state_dict().items()})
        outputs = [TensorSpec.of(n, o) for n, o in zip(program.output_names, program.run(*program.example_inputs))]
        return ArtifactInfo(signatures={"forward": Signature(program.input_specs(), outputs)})

    def versions(self):
        return {"numpy": np.__version__}


class Session:
    def __init__(self, path):
        self.w = dict(np.load(path))

    def run(self, x):
        h = np.maximum(x @ self.w["0.weight"].T + self.w["0.bias"], 0)
        return [h @ self.w["2.weight"].T + self.w["2.bias"]]


class Runtime:
    format = "toyfmt"

    def static_checks(self, path, entry):
        return [Check("npz_opens", zipfile.is_zipfile(path), None)]

    def reference_checks(self, path, entry, reference, tolerance):
        return []

    def available(self):
        return None

    def load(self, path, entry):
        return Session(path)

    def version(self):
        return np.__version__


def stored_tensors(path):
    """Each array's raw bytes inside the uncompressed zip that np.savez writes."""
    data = Path(path).read_bytes()
    found = []
    for item in zipfile.ZipFile(path).infolist():
        name_len, extra_len = struct.unpack_from("<HH", data, item.header_offset + 26)
        start = item.header_offset + 30 + name_len + extra_len
        header_len = struct.unpack_from("<H", data, start + 8)[0]
        found.append(StoredTensor(f"array {item.filename}", "", start + 10 + header_len,
                                  item.file_size - 10 - header_len, item.filename.removesuffix(".npy")))
    return found


register_backend(Backend("toyfmt", Exporter(), Runtime(), stored_tensors,
                         profile={"host": "host session", "emulator": "host session", "phone": "not on phones"},
                         kinds=("infer",)))
'''

TOY_TARGET = '''
"""A toy target: this machine, under another name."""
from dcx.targets import register_target
from dcx.targets.host import HostTarget


class ToyTarget:
    name, emulated, arch = "toyhost", False, "host"

    def run(self, request, local_dir):
        return HostTarget().run(request, local_dir)


register_target("toyhost", lambda serial: ToyTarget())
'''

ENTRY_POINTS = """
[dcx.methods]
toy = toy_method

[dcx.backends]
toyfmt = toy_backend

[dcx.targets]
toyhost = toy_target
"""


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    for package, source in (("toy_method", TOY_METHOD), ("toy_backend", TOY_BACKEND), ("toy_target", TOY_TARGET)):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text(textwrap.dedent(source))
    dist = root / "toy_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


def dcx(plugins, *args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", "from dcx.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=900, env=env, cwd=cwd)


def test_a_toy_method_backend_and_target_are_listed(plugins):
    recipes = dcx(plugins, "recipes")
    assert recipes.returncode == 0, recipes.stderr
    assert "[toy] a toy method" in recipes.stdout and "toy.train" in recipes.stdout
    info = dcx(plugins, "info")
    assert info.returncode == 0, info.stderr
    assert "backend toyfmt" in info.stdout and "toyhost" in info.stdout and "toy" in info.stdout


def test_a_toy_method_exports_to_a_toy_backend_verifies_and_profiles_on_a_toy_target(plugins, tmp_path,
                                                                                     kernels_build):
    out = tmp_path / "out"
    for fmt, force in (("executorch", ()), ("toyfmt", ("--force",))):
        export = dcx(plugins, "export", "--recipe", "toy", "--format", fmt, "--out", str(out), *force)
        assert export.returncode == 0, export.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    formats = {(e["program"], e["format"]) for e in manifest["artifacts"]}
    assert {("toy.infer", "toyfmt"), ("toy.train", "executorch"), ("toy.infer", "executorch")} <= formats
    assert ("toy.train", "toyfmt") not in formats  # the toy backend takes inference programs only
    verify = dcx(plugins, "verify", str(out), "--program", "toy.infer")
    assert verify.returncode == 0, verify.stdout[-3000:]
    rows = [line for line in verify.stdout.splitlines() if line.startswith("toy.infer.npz")]
    assert {"npz_opens", "weights", "forward"} <= {line.split()[2] for line in rows if line.endswith("pass")
                                                   or " pass " in line}, rows
    assert any("weights checked: 4 of 4" in line for line in rows), rows
    profile = dcx(plugins, "profile", str(out), "--target", "toyhost", "--iterations", "2", "--json",
                  str(tmp_path / "rows.json"), cwd=tmp_path)
    assert profile.returncode == 0, profile.stderr[-3000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    native = [r for r in rows if r["format"] == "executorch"]
    assert native and all(r["target"] == "toyhost" and r["outputs_match"] for r in native), native
    assert any(r["format"] == "toyfmt" and r["outputs_match"] for r in rows), rows

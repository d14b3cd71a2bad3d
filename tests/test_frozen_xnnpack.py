"""The frozen layers of a training graph go to XNNPACK (``dcx.backends.executorch.passes.frozen_xnnpack``).

- ``frozen_region``: exactly the nodes that read a user input and no trainable parameter (DC-CCL's
  mimic forward; never a gradient, never a trained layer);
- ``restore_linears``: the frozen region's decomposed linear layers become ``linear`` again, so XNNPACK
  takes them;
- the partitioner never takes a layer that trains, even one XNNPACK would match (``dcx::linear`` looks
  like ``linear`` to it);
- a user's program with a frozen MobileNet-style backbone and a trainable head exports through
  ``dcx.export_programs`` with the backbone in XNNPACK (but its RGB stem, on the dcx stem kernel) and
  passes ``dcx.verify`` step for step;
- ``--no-fast-training`` keeps the whole graph on the portable kernels, XNNPACK included;
- ``ExecuTorchOptions(frozen_xnnpack=False)`` puts the frozen layers on the dcx kernels too, with the same
  step; ``dcx bench training`` times the two programs side by side.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dcx
from dcx.backends.executorch.passes.frozen_xnnpack import frozen_region, lower_frozen_to_xnnpack, restore_linears, trainable_parameters
from dcx.passes.graph_capture import capture_joint
from dcx.methods import get_program


@pytest.fixture(scope="module")
def dcccl_joint():
    return capture_joint(get_program("dcccl.train"))


def _reads_trainable(node, trainable: set[str]) -> bool:
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "placeholder" and n.name in trainable:
            return True
        stack.extend(n.all_input_nodes)
    return False


def test_frozen_region_is_the_mimic_forward(dcccl_joint):
    region = frozen_region(dcccl_joint)
    trainable = trainable_parameters(dcccl_joint)
    assert trainable and all(name.startswith("p_small_") for name in trainable)
    assert not any(_reads_trainable(n, trainable) for n in region)
    computing = {n for n in region if n.target in (torch.ops.aten.convolution.default, torch.ops.aten.addmm.default)}
    assert len(computing) == 4  # the mimic's two convolutions and two linear layers
    for n in computing:
        weight = n.args[1] if n.target == torch.ops.aten.convolution.default else n.args[2].args[0]
        assert weight.name.startswith("p_mimic_"), (n.name, weight.name)
    outputs = next(n for n in dcccl_joint.graph.nodes if n.op == "output").args[0]
    assert not set(outputs[1:]) & region  # no gradient is frozen


def test_restore_linears_gives_xnnpack_its_linear_layers(dcccl_joint):
    ep = copy.deepcopy(dcccl_joint)
    assert restore_linears(ep) == 2
    linears = [n for n in ep.graph.nodes if n.target == torch.ops.aten.linear.default]
    assert len(linears) == 2 and all(n.args[1].name.startswith("p_mimic_fc") for n in linears)
    assert sum(n.target == torch.ops.aten.addmm.default for n in ep.graph.nodes) == 2  # the small model's stay


def test_trained_layers_never_go_to_xnnpack(dcccl_joint):
    from dcx.backends.executorch.passes.fast_training import FastTraining

    ep, report = FastTraining(leave_frozen=True).rewrite(dcccl_joint)
    lowered = lower_frozen_to_xnnpack(copy.deepcopy(ep)).exported_program()
    kept = [n for n in lowered.graph.nodes if n.op == "call_function" and "schema = dcx::linear(" in str(n.target)]
    assert len(kept) == report["ops"]["dcx::linear"] == 2  # XNNPACK would match these
    delegates = [n for n in lowered.graph.nodes if "executorch_call_delegate" in str(n.target)]
    assert len(delegates) == 1
    trainable = trainable_parameters(lowered)
    assert not any(a.name in trainable for d in delegates for a in d.all_input_nodes)


class FrozenBackbone(nn.Module):
    """A frozen MobileNet-style backbone (conv + eval batch norm + ReLU6, depthwise, pointwise) under a
    trainable linear head: fine-tuning the last layer on the phone."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, 4)
        torch.manual_seed(0)
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.running_mean, -0.5, 0.5)
                nn.init.uniform_(m.running_var, 0.5, 2.0)
        self.backbone.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # the backbone's statistics stay frozen
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x, y):
        return F.cross_entropy(self.head(self.backbone(x)), y)


def _backbone_program():
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 4, (4,), generator=g)) for _ in range(4)]
    return dcx.training_program("user.finetune", FrozenBackbone(), batches[0], ["x", "y"], lr=0.1, batches=batches)


def test_frozen_backbone_trains_in_executorch_with_xnnpack(tmp_path):
    dcx.export_programs([_backbone_program()], tmp_path / "out", formats=["executorch"])
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["artifacts"][0]
    passes = {p["name"]: p["changes"] for p in entry["passes"]}
    assert passes["lower_frozen_to_xnnpack"]["delegates"] == 1
    assert passes["lower_frozen_to_xnnpack"]["frozen_ops_left_on_portable"] == []
    # the frozen RGB stem (conv + batch norm + ReLU6 over the input) runs on the dcx stem kernel, the rest in XNNPACK
    assert passes["fast_training"]["ops"] == {"dcx::conv2d_bn": 1, "dcx::linear": 1, "dcx::linear_backward": 1,
                                              "dcx::cross_entropy_loss": 1}
    left = {n["op"] for n in passes["fast_training"]["left_for_xnnpack"]}
    assert left == {"aten.convolution"}, left  # the depthwise and pointwise layers
    rows = dcx.verify(tmp_path / "out")
    assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]
    assert any(r.check.startswith("train_") and r.check.endswith("_loss") for r in rows)


def test_no_fast_training_keeps_everything_portable(tmp_path):
    dcx.export_programs([_backbone_program()], tmp_path / "out", formats=["executorch"], fast_training=False)
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["artifacts"][0]
    names = [p["name"] for p in entry["passes"]]
    assert "lower_frozen_to_xnnpack" not in names and "fast_training" not in names
    assert all(r.ok for r in dcx.verify(tmp_path / "out"))


def test_frozen_layers_on_dcx_kernels_alone_give_the_same_step():
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    from dcx.backends.executorch.options import ExecuTorchOptions
    from dcx.bench.training import build_training_program, render_markdown, xnnpack_rows
    from dcx.kernels.training import load_executorch_kernels

    load_executorch_kernels()
    program = get_program("dcccl.train")
    built = {frozen_xnnpack: build_training_program(program, ExecuTorchOptions(frozen_xnnpack=frozen_xnnpack))[:2]
             for frozen_xnnpack in (True, False)}
    with_xnnpack, alone = built[True][1], built[False][1]
    assert with_xnnpack["lower_frozen_to_xnnpack"]["delegates"] == 1 and "lower_frozen_to_xnnpack" not in alone
    assert alone["fast_training"]["left_for_xnnpack"] == []
    took = lambda r: sum(r["fast_training"]["ops"].values())  # noqa: E731
    assert took(alone) > took(with_xnnpack)  # the mimic's layers too
    batch = tuple(program.example_batches(1)[0])
    steps = [_load_for_executorch_from_buffer(pte).forward(batch) for pte, _ in built.values()]
    for a, b in zip(*steps):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    rows = xnnpack_rows(program, built[True][0], with_xnnpack["fast_training"], rounds=3)
    assert len(rows) == 1 and rows[0]["xnnpack_s"] > 0 and rows[0]["dcx_s"] > 0
    assert f"| dcccl.train | {rows[0]['xnnpack_s'] * 1e3:.3f} | {rows[0]['dcx_s'] * 1e3:.3f} |" in render_markdown(rows)

"""Training what users bring: a module's mode decides (batch norm with batch statistics and running statistics as
program state), and every optimizer of ``dcx.optim`` steps in ExecuTorch and TFLite as ``torch.optim`` does, its
state checked by verify; Core ML takes what its updatable models can express and refuses the rest in one line."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import dcx
from dcx.errors import DcxError
from dcx.manifest import read_manifest


class InvertedResidual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(self.dw(x))


class MobileNetStyle(nn.Module):
    """Depthwise blocks, batch norm, ReLU6 and a residual add: the MobileNet layer in miniature."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8), InvertedResidual(8))
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class CrossEntropy(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(x), y)


def _batches(n: int = 20, batch: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 3, 16, 16, generator=g), torch.randint(0, 5, (batch,), generator=g)) for _ in range(n)]


OPTIMIZERS = {
    "sgd-momentum": dcx.optim.SGD(0.01, momentum=0.9),
    "sgd-nesterov": dcx.optim.SGD(0.01, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": dcx.optim.Adam(1e-2),
    "adamw": dcx.optim.AdamW(1e-2, weight_decay=0.05),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_batch_norm_in_training_mode_trains_with_every_optimizer(tmp_path, name):
    torch.manual_seed(0)
    user = CrossEntropy(MobileNetStyle()).train()
    before = copy.deepcopy(user.state_dict())
    batches = _batches()
    program = dcx.training_program("mnet.train", user, batches[0], ("image", "label"), optimizer=OPTIMIZERS[name],
                                   batches=batches)
    summary = dcx.export_programs([program], tmp_path, formats=["executorch", "tflite"])
    assert not summary.failed, summary.failed

    # The user's module is untouched: its mode and every parameter and buffer.
    assert user.training and all(m.training for m in user.modules())
    assert all(torch.equal(before[k], v) for k, v in user.state_dict().items())

    manifest = read_manifest(tmp_path)
    for entry in manifest.artifacts:
        assert set(entry.norm_modes.values()) == {"train"} and len(entry.norm_modes) == 5
        assert len(entry.state) == 10 and all(n.endswith(("running_mean", "running_var")) for n in entry.state)
        assert entry.optimizer.optimizer() == OPTIMIZERS[name]

    rows = dcx.verify(tmp_path)
    assert [(r.format, r.check, r.error, r.tolerance) for r in rows if r.verdict != "pass"] == []
    checks = {(r.format, r.check): r for r in rows}
    for fmt in ("executorch", "tflite"):
        for check in ("loss", "weights", "state", "optimizer_state"):
            row = checks[(fmt, f"train_20_steps_{check}")]
            assert row.error <= 1e-5, (fmt, check, row.error)

    # The reference is eager PyTorch in training mode: batch statistics, running statistics updated.
    eager = copy.deepcopy(user)
    opt = OPTIMIZERS[name].torch_optimizer([p for p in eager.parameters()])
    for x, y in batches:
        opt.zero_grad()
        eager(x, y).backward()
        opt.step()
    reference = program.reference_training(batches)
    stem_bn = eager.net.stem[1]
    assert torch.allclose(reference.state["net.stem.1.running_var"], stem_bn.running_var, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(stem_bn.running_var, torch.ones(8))  # the statistics did move


def test_core_ml_takes_momentum_and_adam_and_refuses_the_rest_in_one_line(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(20)]
    programs = [dcx.training_program(f"mlp_{name}.train", CrossEntropy(net), batches[0], ("x", "label"),
                                     optimizer=OPTIMIZERS[name], batches=batches)
                for name in ("sgd-momentum", "adam", "adamw")]
    frozen_stats = CrossEntropy(MobileNetStyle()).train()
    programs.append(dcx.training_program("bn.train", frozen_stats, _batches(1)[0], ("image", "label"),
                                         optimizer=OPTIMIZERS["adam"]))
    summary = dcx.export_programs(programs, tmp_path, formats=["coreml"])
    skipped = {s["program"]: s["reason"] for s in summary.skipped}
    assert set(skipped) == {"mlp_adamw.train", "bn.train"}
    assert "Core ML" in skipped["mlp_adamw.train"] and "weight decay" in skipped["mlp_adamw.train"]
    assert "'net.stem.1'" in skipped["bn.train"] and ".eval()" in skipped["bn.train"]
    assert all("\n" not in r for r in skipped.values())
    rows = [r for r in dcx.verify(tmp_path) if r.check in ("coreml_optimizer", "coreml_training_gap")]
    assert len(rows) == 4 and all(r.verdict == "pass" for r in rows), rows
    assert all(r.error <= 1e-5 for r in rows if r.check == "coreml_training_gap")


def _image_program(module: nn.Module, inputs=None, **kw):
    return dcx.training_program("bad.train", CrossEntropy(module), inputs or _batches(1)[0], ("image", "label"),
                                **kw)


@pytest.mark.parametrize("case, words", [
    ("dropout", "dropout layer 'net.1' is in training mode"),
    ("batch1", "batch norm 'net.stem.1' is in training mode but sees 1 value per channel"),
    ("cumulative", "batch norm 'net.stem.1' has momentum=None"),
    ("both", "give either lr= (plain SGD) or optimizer="),
    ("not-an-optimizer", "optimizer= must be dcx.optim.SGD, Adam or AdamW"),
    ("bad-beta", "optimizer betas=(0.9, 1.5): must be two values in [0, 1)"),
])
def test_bad_input_is_one_line(case, words):
    torch.manual_seed(0)
    net = MobileNetStyle()
    with pytest.raises(DcxError) as e:
        if case == "dropout":
            _image_program(nn.Sequential(MobileNetStyle(), nn.Dropout(0.2)).train(), lr=0.1)
        elif case == "batch1":
            _image_program(net.train(), (torch.randn(1, 3, 2, 2), torch.tensor([0])), lr=0.1)
        elif case == "cumulative":
            net.stem[1].momentum = None
            _image_program(net.train(), lr=0.1)
        elif case == "both":
            _image_program(net, lr=0.1, optimizer=dcx.optim.Adam())
        elif case == "not-an-optimizer":
            _image_program(net, optimizer=torch.optim.SGD)
        else:
            _image_program(net, optimizer=dcx.optim.Adam(betas=(0.9, 1.5)))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_eval_mode_keeps_frozen_statistics(tmp_path):
    """A batch norm in eval() mode trains as before: frozen statistics, no state, the fast kernels' path."""
    torch.manual_seed(0)
    program = _image_program(MobileNetStyle().eval(), lr=0.05)
    assert program.state == {} and set(program.norm_modes.values()) == {"eval"}
    dcx.export_programs([program], tmp_path, formats=["executorch"])
    (entry,) = read_manifest(tmp_path).artifacts
    assert entry.state == {} and set(entry.norm_modes.values()) == {"eval"}
    assert all(r.verdict == "pass" for r in dcx.verify(tmp_path))


@pytest.mark.parametrize("target", ["host", "qemu"])
def test_native_runner_steps_adamw_and_the_running_statistics(native_built, tmp_path, target):
    """The on-device runner (x86 and the aarch64 build under qemu): AdamW's fused update kernel and the batch-norm
    state the program returns, against the reference that travels with the artifact."""
    import numpy as np

    from dcx.android.qemu import QemuTarget
    from dcx.kernels import library_path
    from dcx.reference import ProgramReference
    from dcx.targets.host import HostTarget
    from dcx.targets.runner import run_artifact

    torch.manual_seed(0)
    batches = _batches(5)
    program = dcx.training_program("mnet.train", CrossEntropy(MobileNetStyle()).train(), batches[0],
                                   ("image", "label"), optimizer=OPTIMIZERS["adamw"], batches=batches)
    dcx.export_programs([program], tmp_path / "out", formats=["executorch"], reference_steps=5)
    reference_path = tmp_path / "out" / "reference" / "mnet.train.safetensors"
    reference = ProgramReference.load(reference_path)
    lib = library_path("training", "executorch", "host" if target == "host" else "aarch64")
    run = run_artifact(HostTarget() if target == "host" else QemuTarget(), tmp_path / "out" / "mnet.train.pte",
                       reference_path, tmp_path / "run", kernel_libs=[lib])
    assert np.allclose(run.result["losses"], reference.losses, rtol=1e-5, atol=0)
    for prefix, expected in (("param/final/", reference.final), ("state/final/", reference.state_final),
                             ("optim/final/", reference.optimizer_final)):
        assert expected
        for name, value in expected.items():
            err = float(np.max(np.abs(run.outputs[prefix + name] - value))) / max(1.0, float(np.max(np.abs(value))))
            assert err <= 1e-5, (prefix + name, err)

"""``crop_to_slice``: the gradient of an explicit padding (a negative ``constant_pad_nd``) runs in ExecuTorch's
portable kernels, which refuse negative padding, as slices; the program still trains as PyTorch does."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import dcx
from dcx.backends.executorch.passes.crop_to_slice import CropToSlice
from dcx.passes import PassContext
from dcx.passes.graph_capture import capture_joint

PAD = torch.ops.aten.constant_pad_nd.default


class SamePadded(nn.Module):
    """TensorFlow's "same" padding before a strided convolution (EfficientNet-Lite's stem), then a head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.pad(x, (0, 1, 0, 1)))
        h = F.pad(h, (1, -1, 2, 1), value=0.5)  # pads and crops; so does its gradient
        return F.cross_entropy(self.fc(h.mean((2, 3))), y)


def _program(batches):
    return dcx.training_program("pad.train", SamePadded(), batches[0], ("image", "label"), lr=0.1, batches=batches)


def _batches(n: int = 4):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 3, (2,), generator=g)) for _ in range(n)]


def _run(ep, inputs):
    """The joint graph's outputs (loss, gradients) on ``inputs``, parameters and buffers from the program."""
    user = iter(inputs)
    args = [next(user) if s.kind.name == "USER_INPUT" else {**ep.state_dict, **ep.constants}[s.target]
            for s in ep.graph_signature.input_specs]
    return ep.graph_module(*args)


def test_crops_become_slices_and_the_joint_graph_computes_the_same():
    program = _program(_batches())
    joint = capture_joint(program)
    crops = [n for n in joint.graph.nodes if n.target == PAD and any(p < 0 for p in n.args[1])]
    assert len(crops) == 2  # the second padding and its gradient (the input's padding needs none)
    before = _run(joint, program.example_inputs)
    ctx = PassContext(program, None, "executorch")
    out = CropToSlice().run(joint, ctx)
    assert not [n for n in out.graph.nodes if n.target == PAD and any(p < 0 for p in n.args[1])]
    assert [r.changes for r in ctx.records if r.name == "crop_to_slice"] == [{"crops": 2}]
    after = _run(out, program.example_inputs)
    assert len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after))


def test_a_padded_network_trains_in_executorch_as_in_pytorch(tmp_path):
    for fast in (False, True):
        summary = dcx.export_programs([_program(_batches())], tmp_path / str(fast), ["executorch"], force=True,
                                      fast_training=fast, reference_steps=4)
        assert not summary.failed
        rows = dcx.verify(tmp_path / str(fast))
        assert rows and all(r.verdict == "pass" for r in rows), [(r.check, r.detail) for r in rows if not r.ok]

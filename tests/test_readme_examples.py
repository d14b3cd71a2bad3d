"""Every Python code block in README.md runs as written, in a fresh interpreter, in an empty folder."""

import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO

BLOCKS = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(), re.S | re.M)


def test_the_readme_has_python_examples():
    assert BLOCKS, "README.md shows no ```python block"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(index, tmp_path, kernels_build):
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(BLOCKS[index])
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"README block {index} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_programs_never_change_the_callers_module():
    """A training and an inference program made from one module, as the README's example does: the caller's
    module keeps its mode, its parameters and their requires_grad, and the training program still trains."""
    import dcx

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3)).train()
    net[0].weight.requires_grad_(False)
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in net.named_parameters()}
    buffers = {n: b.clone() for n, b in net.named_buffers()}

    class Loss(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, y):
            return torch.nn.functional.cross_entropy(self.inner(x), y)

    x, y = torch.rand(5, 4), torch.randint(0, 3, (5,))
    train = dcx.training_program("t.train", Loss(net), (x, y), ("x", "y"), lr=0.1)
    dcx.inference_program("t.infer", net, (x[:1],), ("x",), ("logits",))
    assert net.training and all(m.training for m in net.modules())
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n][0]) and p.requires_grad == before[n][1], n
    assert all(torch.equal(b, buffers[n]) for n, b in net.named_buffers())  # running statistics untouched
    assert set(train.trainable) == {"inner.0.bias", "inner.1.weight", "inner.1.bias", "inner.2.weight", "inner.2.bias"}
    assert set(train.state) == {"inner.1.running_mean", "inner.1.running_var"}

"""The fused shuffled partitioned linear (kernels/partitioned_linear/): native C kernels on x86 and aarch64 (qemu),
the PyTorch op (forward, autograd, gradcheck, export, bad input), and the ExecuTorch kernels
(ICIIA .pte in the pybindings, on-device training, a .pte on aarch64 under qemu).

A session fixture runs ``kernels/build.sh`` (idempotent; seconds when already built), so a plain
``pytest`` works on a fresh checkout; CI runs the same script during set-up.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dcx.errors import DcxError
from dcx.models.partitioned_linear import (
    PartitionedLinear,
    block_diagonal_weight,
    channel_shuffle,
    decompositions,
    disable_fused,
    enable_fused,
    lowering_note,
    partitioned_linear_reference,
)

REPO = Path(__file__).resolve().parents[1]
QEMU_PREFIX = "/usr/aarch64-linux-gnu"


@pytest.fixture(scope="session", autouse=True)
def kernels_built(kernels_build):
    import dcx.kernels.partitioned_linear as K

    assert K.is_built(), "the op library did not load after kernels/build.sh"
    return K


def dense_reference(x, weight, bias, shuffle=True):
    """The dense block-diagonal product, plus bias, then the shuffle: the definition of the op."""
    p = weight.shape[0]
    z = x @ block_diagonal_weight(weight).T
    if bias is not None:
        z = z + bias
    return channel_shuffle(z, p) if shuffle else z


def qemu() -> str:
    exe = shutil.which("qemu-aarch64")
    assert exe, "qemu-aarch64 not found: install the Debian package qemu-user"
    return exe


# ------------------------------------------------------------------------------- native drivers

def test_native_kernels_host():
    """Every ISA this CPU has (portable baseline, x86-64-v3): ~150 shapes x forward/packed/backward."""
    exe = REPO / "build" / "kernels" / "host" / "test_partitioned_linear_native"
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failures" in proc.stdout


def test_native_kernels_aarch64_qemu():
    """The aarch64 build (NEON and portable paths) over the shape sweep, in one qemu process."""
    exe = REPO / "build" / "kernels" / "aarch64" / "test_partitioned_linear_native"
    proc = subprocess.run([qemu(), "-L", QEMU_PREFIX, str(exe), "--quick"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "isa neon" in proc.stdout and "0 failures" in proc.stdout, proc.stdout


def _path_without(tmp_path: Path, hidden: tuple[str, ...]) -> str:
    """A PATH whose /usr/bin lacks the named programs (prefix match)."""
    shadow = tmp_path / "bin"
    shadow.mkdir()
    for entry in Path("/usr/bin").iterdir():
        if not entry.name.startswith(hidden):
            (shadow / entry.name).symlink_to(entry)
    return f"{shadow}:{Path(sys.executable).parent}"


@pytest.mark.parametrize("hidden,package", [(("gcc", "g++", "x86_64-linux-gnu-g"), "gcc"),
                                            (("aarch64-linux-gnu-",), "gcc-aarch64-linux-gnu")])
def test_build_names_the_missing_package(tmp_path, hidden, package):
    env = dict(os.environ, PATH=_path_without(tmp_path, hidden), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(REPO / "kernels" / "build.sh")], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert f"install the Debian package {package}" in last, proc.stderr


# ------------------------------------------------------------------------------- PyTorch op

SHAPES = [(n, d, d, p) for n, d, p in itertools.product((1, 3, 64), (8, 96, 256, 1024), (1, 2, 4, 16)) if d % p == 0]
SHAPES += [(n, di, do, p) for n in (1, 3, 64)
           for di, do, p in ((96, 64, 4), (64, 96, 16), (12, 20, 4), (24, 48, 3), (36, 60, 6), (40, 24, 8),
                             (5, 7, 1), (96, 144, 48), (72, 48, 24), (34, 34, 2))]


@pytest.mark.parametrize("n,d_in,d_out,p", SHAPES, ids=lambda v: str(v))
def test_forward_backward_match_dense_reference(kernels_built, n, d_in, d_out, p):
    g = torch.Generator().manual_seed(n * 7919 + d_in * 31 + d_out + p)
    x = torch.randn(n, d_in, generator=g)
    w = torch.randn(p, d_out // p, d_in // p, generator=g) / (d_in // p) ** 0.5
    b = torch.randn(d_out, generator=g)
    gy = torch.randn(n, d_out, generator=g)
    tol = dict(rtol=1e-4, atol=1e-4 * max(1.0, (d_in / p) ** 0.5))
    for shuffle, with_bias in ((True, True), (False, True), (True, False)):
        bias = b if with_bias else None
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        bs = bias.clone().requires_grad_() if with_bias else None
        y = kernels_built.shuffled_partitioned_linear(xs, ws, bs, shuffle)
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        br = bias.clone().requires_grad_() if with_bias else None
        yr = dense_reference(xr, wr, br, shuffle)
        torch.testing.assert_close(y, yr, **tol)
        y.backward(gy)
        yr.backward(gy)
        torch.testing.assert_close(xs.grad, xr.grad, **tol)
        torch.testing.assert_close(ws.grad, wr.grad, rtol=1e-4, atol=1e-4 * max(1.0, n**0.5))
        if with_bias:
            torch.testing.assert_close(bs.grad, br.grad, rtol=1e-4, atol=1e-4 * max(1.0, n**0.5))


def test_leading_dims_and_portable_path(kernels_built):
    """x [B, T, d] (how ICIIA calls its K/V projections), on the active and the portable kernels."""
    x = torch.randn(2, 5, 64)
    w = torch.randn(4, 24, 16)
    b = torch.randn(96)
    want = partitioned_linear_reference(x, w, b, True)
    active = kernels_built.kernel_isa()
    try:
        for isa in ("portable", active):
            kernels_built.kernel_isa(isa)
            for n in (1, 2, 5):  # the small-N dot path and the packed path
                torch.testing.assert_close(kernels_built.shuffled_partitioned_linear(x[:, :n].contiguous(), w, b),
                                           want[:, :n], rtol=1e-5, atol=1e-5)
    finally:
        kernels_built.kernel_isa(active)
    with pytest.raises(DcxError, match="unknown implementation"):
        kernels_built.kernel_isa("avx1024")


@pytest.mark.parametrize("p,shuffle", [(1, True), (2, True), (4, False), (8, True), (3, True)])
def test_gradcheck(kernels_built, p, shuffle):
    # float32 op: finite differences with a large eps are exact up to rounding (the op is linear)
    g = torch.Generator().manual_seed(p)
    x = torch.randn(3, 24, generator=g, requires_grad=True)
    w = torch.randn(p, 48 // p, 24 // p, generator=g, requires_grad=True)
    b = torch.randn(48, generator=g, requires_grad=True)
    op = torch.ops.dcx.shuffled_partitioned_linear
    with pytest.warns(UserWarning, match="double precision"):
        assert torch.autograd.gradcheck(lambda x, w, b: op(x, w, b, shuffle), (x, w, b), eps=1e-2, atol=2e-3,
                                        rtol=1e-3, check_batched_grad=False)


def test_out_variant_and_grad_ops(kernels_built):
    x, w, b = torch.randn(5, 32), torch.randn(4, 12, 8), torch.randn(48)
    out = torch.empty(0)
    res = torch.ops.dcx.shuffled_partitioned_linear.out(x, w, b, True, out=out)
    assert res.data_ptr() == out.data_ptr() and out.shape == (5, 48)
    torch.testing.assert_close(out, dense_reference(x, w, b), rtol=1e-5, atol=1e-5)
    gy = torch.randn(5, 48)
    gx = torch.ops.dcx.shuffled_partitioned_linear_grad_input(gy, w, True)
    gw = torch.ops.dcx.shuffled_partitioned_linear_grad_weight(gy, x, 4, True)
    gb = torch.ops.dcx.shuffled_partitioned_linear_grad_bias(gy, 4, True)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    with pytest.raises(RuntimeError, match="out must be float32"):
        torch.ops.dcx.shuffled_partitioned_linear.out(x, w, b, True, out=torch.empty(0, dtype=torch.int32))


def test_partitioned_linear_module_uses_fused_op(kernels_built):
    torch.manual_seed(0)
    layer = PartitionedLinear(64, 96, 4)
    x = torch.randn(7, 64)
    want = layer(x)
    assert enable_fused(torch.nn.Sequential(layer, torch.nn.ReLU())) == 1
    assert layer.use_fused_kernel
    got = layer(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert disable_fused(layer) == 1 and not layer.use_fused_kernel


def test_fallback_without_build(tmp_path):
    """No library: the op falls back to the batched-matmul path with the same results, and
    enable_fused refuses (an export with --fused-kernels must not silently drop the kernel)."""
    code = """
import warnings, torch
import dcx.kernels.partitioned_linear as K
from dcx.errors import DcxError
from dcx.models.partitioned_linear import enable_fused, partitioned_linear_reference
assert not K.is_built()
x, w, b = torch.randn(3, 16), torch.randn(4, 2, 4), torch.randn(8)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    y = K.shuffled_partitioned_linear(x, w, b, True)
assert torch.equal(y, partitioned_linear_reference(x, w, b, True))
assert any("kernels/build.sh" in str(c.message) for c in caught)
try:
    enable_fused(torch.nn.Linear(2, 2)); raise SystemExit("enable_fused did not raise")
except DcxError as e:
    assert "kernels/build.sh" in str(e), e
print("ok")
"""
    env = dict(os.environ, DCX_KERNELS_BUILD_DIR=str(tmp_path / "nowhere"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("args,match", [
    ((torch.randn(2, 10), torch.randn(4, 4, 2), None), "not divisible by P=4"),
    ((torch.randn(2, 12), torch.randn(4, 4, 2), None), "does not match weight"),
    ((torch.randn(2, 8), torch.randn(4, 4), None), "weight must have shape"),
    ((torch.randn(2, 8), torch.randn(4, 4, 2), torch.randn(15)), "bias must have shape"),
    ((torch.randn(2, 8).double(), torch.randn(4, 4, 2), None), "x must be float32"),
    ((torch.randn(2, 8), torch.randn(4, 4, 2).half(), None), "weight must be float32"),
    ((torch.randint(0, 3, (2, 8)), torch.randn(4, 4, 2), None), "x must be float32"),
    ((torch.randn(8, 2).t(), torch.randn(4, 4, 2), None), "x must be contiguous"),
    ((torch.randn(2, 8), torch.randn(4, 2, 4).transpose(1, 2), None), "weight must be contiguous"),
])
def test_bad_input_is_a_clear_error(kernels_built, args, match):
    with pytest.raises(DcxError, match=match) as e:
        kernels_built.shuffled_partitioned_linear(*args)
    assert "\n" not in str(e.value) and str(e.value).startswith("dcx::shuffled_partitioned_linear")
    # the raw op raises too (never a wrong answer or a crash)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.dcx.shuffled_partitioned_linear(*args)


def test_bad_input_to_grad_ops(kernels_built):
    with pytest.raises(RuntimeError, match="not divisible by P=3"):
        torch.ops.dcx.shuffled_partitioned_linear_grad_bias(torch.randn(2, 8), 3, True)
    with pytest.raises(RuntimeError, match="does not match d_out"):
        torch.ops.dcx.shuffled_partitioned_linear_grad_input(torch.randn(2, 12), torch.randn(4, 2, 2), True)
    with pytest.raises(RuntimeError, match="different numbers of rows"):
        torch.ops.dcx.shuffled_partitioned_linear_grad_weight(torch.randn(2, 8), torch.randn(3, 8), 4, True)


# ------------------------------------------------------------------------------- export + ExecuTorch

class TwoLayers(torch.nn.Module):
    """Only fused ops (shuffled and not), so the .pte needs no other kernel (aarch64 runner)."""

    def __init__(self):
        super().__init__()
        self.a = PartitionedLinear(64, 96, 4)
        self.b = PartitionedLinear(96, 32, 16, shuffle=False)

    def forward(self, x):
        return self.b(self.a(x))


def test_torch_export_with_dynamic_batch(kernels_built):
    torch.manual_seed(0)
    m = TwoLayers().eval()
    enable_fused(m)
    batch = torch.export.Dim("batch", min=1, max=512)
    ep = torch.export.export(m, (torch.randn(5, 64),), dynamic_shapes=({0: batch},))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.dcx.shuffled_partitioned_linear.default) == 2
    x = torch.randn(9, 64)
    torch.testing.assert_close(ep.module()(x), m(x))
    with pytest.raises(DcxError, match="not divisible by P=4"):
        torch.export.export(PartitionedLinearBad(), (torch.randn(2, 10),))
    # backends without custom kernels: the op decomposes to batched matmul + transpose
    dec = ep.run_decompositions(decompositions())
    assert not any("dcx" in str(n.target) for n in dec.graph.nodes if n.op == "call_function")
    torch.testing.assert_close(dec.module()(x), m(x), rtol=1e-5, atol=1e-5)
    assert "BATCH_MATMUL" in lowering_note("tflite")


class PartitionedLinearBad(torch.nn.Module):
    def forward(self, x):
        return torch.ops.dcx.shuffled_partitioned_linear(x, torch.ones(4, 2, 2), None, True)


def _to_pte(module, example_args) -> bytes:
    from executorch.exir import to_edge

    ep = torch.export.export(module, example_args)
    return to_edge(ep).to_executorch().buffer


def _program_ops(pte: bytes) -> list[str]:
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(pte)
    program = getattr(program, "program", program)
    return [f"{op.name}.{op.overload}" for op in program.execution_plan[0].operators]


def test_iciia_pte_with_fused_op_matches_pytorch(kernels_built):
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    from dcx.methods.iciia.recipe import ICIIA

    torch.manual_seed(0)
    model = ICIIA(d=64, heads=4, partitions=4, num_classes=10).eval()
    assert enable_fused(model) == 4
    h, cache = torch.randn(2, 64), torch.randn(2, 16, 64)
    pte = _to_pte(model, (h, cache))
    assert "dcx::shuffled_partitioned_linear.out" in _program_ops(pte)
    path = kernels_built.load_executorch_kernels()
    assert kernels_built.load_executorch_kernels() == path  # idempotent
    program = _load_for_executorch_from_buffer(pte)
    got = program.forward((h, cache))[0]
    disable_fused(model)
    torch.testing.assert_close(got, model(h, cache), rtol=1e-4, atol=1e-4)
    # a bad shape at run time fails the call with a logged message, it does not crash
    with pytest.raises(RuntimeError):
        program.forward((torch.randn(2, 64), torch.randn(2, 16, 60)))


def test_executorch_training_uses_fused_backward(kernels_built):
    from executorch.exir import to_edge
    from executorch.extension.training import _load_for_executorch_for_training_from_buffer
    from torch.export.experimental import _export_forward_backward

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = PartitionedLinear(32, 48, 4)
            self.head = torch.nn.Linear(48, 5)

        def forward(self, x, y):
            return torch.nn.functional.cross_entropy(self.head(torch.relu(self.a(x))), y)

    torch.manual_seed(0)
    net = Net()
    enable_fused(net)
    x, y = torch.randn(6, 32), torch.randint(0, 5, (6,))
    ep = _export_forward_backward(torch.export.export(net, (x, y), strict=False))
    pte = to_edge(ep).to_executorch().buffer
    ops = _program_ops(pte)
    assert "dcx::shuffled_partitioned_linear_grad_weight.out" in ops
    kernels_built.load_executorch_kernels()
    module = _load_for_executorch_for_training_from_buffer(pte)
    loss = module.forward_backward("forward", (x, y))[0]
    ref = net(x, y)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-5)
    params = dict(net.named_parameters())
    for name, grad in module.named_gradients().items():
        torch.testing.assert_close(grad, params[name].grad, rtol=1e-4, atol=1e-5)


def test_pte_with_fused_ops_on_aarch64_qemu(kernels_built, tmp_path):
    """The aarch64 ExecuTorch kernel library, cross-built against the aarch64 wheel, runs a .pte."""
    torch.manual_seed(0)
    m = TwoLayers().eval()
    enable_fused(m)
    x = torch.randn(3, 64)
    (tmp_path / "m.pte").write_bytes(_to_pte(m, (x,)))
    x.numpy().astype(np.float32).tofile(tmp_path / "in.f32")
    runner = REPO / "build" / "kernels" / "aarch64" / "partitioned_linear_pte_runner"
    proc = subprocess.run([qemu(), "-L", QEMU_PREFIX, str(runner), str(tmp_path / "m.pte"), str(tmp_path / "in.f32"),
                           str(tmp_path / "out.f32")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = torch.from_numpy(np.fromfile(tmp_path / "out.f32", dtype=np.float32)).reshape(3, 32)
    torch.testing.assert_close(got, m(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- bench

def test_bench_rows_and_markdown(kernels_built, tmp_path):
    from dcx.bench.kernels import bench_kernels, run_kernel_bench

    rows = run_kernel_bench(str(tmp_path / "b.json"), tmp_path / "README.md", shapes=[(1, 256, 4), (64, 256, 1)],
                            rounds=3, count_instructions=False)
    impls = {r["impl"] for r in rows}
    assert impls == {"fused", "dense", "bmm", "einsum", "conv1d", "loop", "gemm_peak"}
    for r in rows:
        assert {"n", "d_in", "d_out", "p", "impl", "median_s"} <= r.keys() and r["median_s"] > 0
    fused = [r for r in rows if r["impl"] == "fused"]
    assert all(0 < r["peak_fraction"] < 2 for r in fused)
    text = (tmp_path / "README.md").read_text()
    assert "dcx bench kernels" in text and "| 64 | 256 | 1 |" in text
    assert bench_kernels.name == "kernels"

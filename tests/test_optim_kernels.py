"""The fused optimizer updates (kernels/training/optim/) through the ATen adapter step like torch.optim.

Each op runs 20 steps on parameters whose sizes are and are not multiples of the kernels' 8 lanes, carrying
its state from step to step as a runtime does, against torch.optim's single-tensor path (foreach=False) on
the same gradients: parameters and every optimizer slot agree to 1e-6 relative; and each op's reference
(the op table's, ``dcx.kernels.ops``) is that same step.
"""

from __future__ import annotations

import pytest
import torch

from dcx.kernels.ops import OPS

STEPS = 20
SHAPES = [(7, 5), (64,), (3, 3, 3, 3), (1,)]
OPTIMIZERS = {
    "sgd-momentum": (torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    "sgd-nesterov-decay": (torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    "sgd-decay": (torch.optim.SGD, dict(lr=0.05, weight_decay=1e-2)),
    "adam": (torch.optim.Adam, dict(lr=1e-2)),
    "adam-decay": (torch.optim.Adam, dict(lr=1e-2, weight_decay=1e-2)),
    "adam-low-beta1": (torch.optim.Adam, dict(lr=1e-2, betas=(0.3, 0.99), eps=1e-6)),  # the other lerp formula
    "adamw": (torch.optim.AdamW, dict(lr=1e-2, weight_decay=1e-2)),
}


@pytest.fixture(scope="module", autouse=True)
def ops(kernels_build):
    from dcx.kernels import training

    assert training.is_built(), training.load_error()
    return torch.ops.dcx


def _step(op: str, hyper: dict, p: torch.Tensor, g: torch.Tensor, slots: list[torch.Tensor], step: int):
    """One call of the op: the arguments after the tensors, as a runtime passes them."""
    if op == "sgd_momentum_update":
        return (p, g, *slots, hyper["lr"], hyper.get("momentum", 0.0), hyper.get("nesterov", False),
                hyper.get("weight_decay", 0.0), step == 1)
    beta1, beta2 = hyper.get("betas", (0.9, 0.999))
    return (p, g, *slots, hyper["lr"], beta1, beta2, hyper.get("eps", 1e-8), hyper.get("weight_decay", 0.0),
            hyper["decoupled"], step)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_update_steps_like_torch_optim(ops, name):
    cls, hyper = OPTIMIZERS[name]
    adam = cls is not torch.optim.SGD
    op, slot_names = ("adam_update", ["exp_avg", "exp_avg_sq"]) if adam else ("sgd_momentum_update", ["momentum_buffer"])
    hyper = dict(hyper, decoupled=cls is torch.optim.AdamW) if adam else hyper
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen) for s in SHAPES]
    eager = [p.clone() for p in params]
    opt = cls(eager, foreach=False, **{k: v for k, v in hyper.items() if k != "decoupled"})
    slots = [[torch.zeros_like(p) for _ in slot_names] for p in params]
    for step in range(1, STEPS + 1):
        grads = [torch.randn(s, generator=gen) for s in SHAPES]
        for p, g in zip(eager, grads):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(grads):
            args = _step(op, hyper, params[i], g, slots[i], step)
            params[i], *slots[i] = getattr(ops, op)(*args)
            if step == 1:  # the op table's reference is the same step
                for got, want in zip((params[i], *slots[i]), OPS[op].reference(*args)):
                    assert _relative(got, want) <= 1e-6, f"{name}: {op} vs its reference"
    for i, p in enumerate(eager):
        assert _relative(params[i], p.detach()) <= 1e-6, f"{name}: parameter {SHAPES[i]}"
        uses_buffer = adam or hyper.get("momentum", 0) != 0
        for slot, got in zip(slot_names, slots[i]):
            if uses_buffer:
                assert _relative(got, opt.state[p][slot]) <= 1e-6, f"{name}: {slot} of {SHAPES[i]}"


def test_bad_arguments_are_one_line(ops):
    p = torch.zeros(4)
    with pytest.raises(RuntimeError, match="same shape"):
        ops.sgd_momentum_update(p, p, torch.zeros(5), 0.1, 0.9, False, 0.0, True)
    with pytest.raises(RuntimeError, match="step counts from 1"):
        ops.adam_update(p, p, p, p, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, 0)

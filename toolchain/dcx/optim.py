"""``dcx.optim``: the optimizers a training program steps on the device.

A training program names one of them (``dcx.training_program(..., optimizer=dcx.optim.AdamW(lr=1e-3))``).
Each is a frozen dataclass of its hyperparameters that knows

- the state it keeps per trainable parameter (``slots``), which the program's runtime carries from step to
  step and the reference records, so verify can compare it;
- ``torch_optimizer``: the ``torch.optim`` optimizer the reference steps in eager PyTorch, the ground truth
  every runtime is compared with;
- ``update``: the same step written out as tensor arithmetic (PyTorch's single-tensor order of operations),
  the reference implementation of the fused update kernels and what host sessions without an in-graph step
  call.

``Spec`` is the flat, typed record of any of them that manifests, references and cloud-device messages carry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Literal, Sequence, Union

import torch

OptimizerType = Literal["sgd", "adam", "adamw"]


@dataclass(frozen=True)
class SGD:
    """``torch.optim.SGD`` (no dampening): plain, with momentum, or Nesterov momentum; L2 weight decay."""

    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    type: ClassVar[OptimizerType] = "sgd"

    def __post_init__(self) -> None:
        _check(self.lr > 0, "lr", self.lr, "a positive learning rate")
        _check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "in [0, 1)")
        _check(not self.nesterov or self.momentum > 0, "nesterov", self.nesterov, "used with momentum > 0")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")

    @property
    def slots(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def torch_optimizer(self, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                               weight_decay=self.weight_decay, foreach=False)

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], step: int) -> None:
        """One step on ``p`` in place (``step`` counts from 1); ``state`` holds this parameter's slots."""
        with torch.no_grad():
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            if self.momentum:
                buf = state["momentum_buffer"]
                if step == 1:
                    buf.copy_(g)
                else:
                    buf.mul_(self.momentum).add_(g)
                g = g.add(buf, alpha=self.momentum) if self.nesterov else buf
            p.add_(g, alpha=-self.lr)


@dataclass(frozen=True)
class Adam:
    """``torch.optim.Adam``: bias-corrected first and second moments; ``weight_decay`` is L2 added to the
    gradient."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    type: ClassVar[OptimizerType] = "adam"
    slots: ClassVar[tuple[str, ...]] = ("exp_avg", "exp_avg_sq")

    def __post_init__(self) -> None:
        _check(self.lr > 0, "lr", self.lr, "a positive learning rate")
        _check(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), "betas", self.betas,
               "two values in [0, 1)")
        _check(self.eps > 0, "eps", self.eps, "> 0")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def torch_optimizer(self, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if self.type == "adamw" else torch.optim.Adam
        return cls(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                   foreach=False)

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], step: int) -> None:
        beta1, beta2 = self.betas
        with torch.no_grad():
            if self.type == "adamw":
                p.mul_(1 - self.lr * self.weight_decay)
            elif self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            step_size = self.lr / (1 - beta1 ** step)
            denom = (v.sqrt() / math.sqrt(1 - beta2 ** step)).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)


@dataclass(frozen=True)
class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (``p *= 1 - lr * weight_decay`` first)."""

    weight_decay: float = 0.01
    type: ClassVar[OptimizerType] = "adamw"


Optimizer = Union[SGD, Adam, AdamW]


@dataclass
class Spec:
    """Any optimizer as one flat typed record (manifest entries, references, messages); fields an optimizer
    does not have keep their defaults."""

    type: OptimizerType
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    betas: list[float] | None = None
    eps: float | None = None
    weight_decay: float = 0.0

    @classmethod
    def of(cls, optimizer: Optimizer) -> "Spec":
        values = asdict(optimizer)
        if "betas" in values:
            values["betas"] = list(values["betas"])
        return cls(type=optimizer.type, **values)

    def optimizer(self) -> Optimizer:
        cls = {"sgd": SGD, "adam": Adam, "adamw": AdamW}[self.type]
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in asdict(self).items() if k in names and k != "type"}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


def init_state(optimizer: Optimizer, params: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Zeroed slots for each parameter: the state a runtime starts with (as ``torch.optim`` does)."""
    return {n: {s: torch.zeros_like(p) for s in optimizer.slots} for n, p in params.items()}


class Stepper:
    """An optimizer and its per-parameter state, stepped with ``update``: what a runtime keeps when the step is
    not inside the program (ExecuTorch's host session, the eager simulation runtime)."""

    def __init__(self, optimizer: Optimizer, params: dict[str, torch.Tensor]):
        self.optimizer, self.steps = optimizer, 0
        self.state = init_state(optimizer, params)

    def step(self, params: dict[str, torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
        """Update ``params`` (by name, in the order of ``grads``) in place."""
        self.steps += 1
        for (name, p), g in zip(params.items(), grads):
            self.optimizer.update(p, g, self.state[name], self.steps)


def torch_state(opt: torch.optim.Optimizer, params: dict[str, torch.Tensor],
                slots: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """A ``torch.optim`` optimizer's per-parameter slots, keyed by parameter name (copies)."""
    return {n: {s: opt.state[p][s].detach().clone() for s in slots} for n, p in params.items()}


def _check(ok: bool, field_name: str, value: object, wanted: str) -> None:
    if not ok:
        from dcx.errors import DcxError

        raise DcxError(f"optimizer {field_name}={value!r}: must be {wanted}")

"""``batch_statistics``: each batch norm in training mode becomes the same computation in elementary ops, its
running statistics updated in place as buffers the program carries from step to step.

Why: ``torch.export`` gives a training-mode batch norm as ``_native_batch_norm_legit_functional``, which is not
core ATen (ExecuTorch refuses it, and its portable kernels have no training-mode batch norm) and whose
decomposition makes the new running statistics depend on the graph's gradients (the joint graph refuses
outputs that require grad besides the loss). Written as mean, biased variance and ``rsqrt``, with the running
statistics updated under ``no_grad``, every runtime gets ops it has, autograd gives the gradient through the
batch statistics, and the updates become buffer mutations: program state. Runs on the program's module,
before capture.

``StateOutputs`` also returns that state after the loss, for runtimes that cannot read a program's buffers
(ExecuTorch): outputs ``(loss, *state)`` in ``DeviceProgram.state`` order.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dcx.passes import PassContext


class BatchStatisticsNorm(nn.Module):
    """``nn.BatchNorm*d`` in training mode (momentum set), as elementary ops; keeps the original's parameters
    and buffers under the same names, so every name in the program stays what it was."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)
        self.eps, self.momentum = bn.eps, bn.momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dims)
        var = (x - mean.reshape(shape)).square().mean(dims)
        n = x.numel() // x.shape[1]
        # eager's update: the unbiased variance, the batch's weight ``momentum``. num_batches_tracked only
        # matters without a momentum, which programs refuse: it stays as it was.
        with torch.no_grad():
            self.running_mean.copy_(self.running_mean * (1 - self.momentum) + mean * self.momentum)
            self.running_var.copy_(self.running_var * (1 - self.momentum) + var * (self.momentum * n / (n - 1)))
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def replace_training_batch_norms(module: nn.Module) -> int:
    """Swap every training-mode batch norm of ``module`` (in place) for ``BatchStatisticsNorm``; returns how
    many."""
    from dcx.programs import _trains_statistics

    swapped = 0
    for name, child in list(module.named_children()):
        if _trains_statistics(child):
            setattr(module, name, BatchStatisticsNorm(child))
            swapped += 1
        else:
            swapped += replace_training_batch_norms(child)
    return swapped


class StateOutputs(nn.Module):
    """``(loss, *state)``: the loss module's loss, then each state buffer after this step's update (copies,
    outside autograd). It shares the loss module's children, parameters and buffers, so their names stay the
    program's names (no wrapper prefix)."""

    def __init__(self, loss_module: nn.Module, state: list[str]):
        super().__init__()
        self._modules, self._parameters, self._buffers = (loss_module._modules, loss_module._parameters,
                                                          loss_module._buffers)
        object.__setattr__(self, "loss_module", loss_module)  # not a child: its members are ours already
        self.state = state

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss = self.loss_module(*inputs)
        buffers = dict(self.named_buffers())
        return (loss, *(buffers[n].detach().clone() for n in self.state))


class BatchStatistics:
    """Training programs: training-mode batch norms as elementary ops with their state updated in place;
    ``outputs=True`` also returns the state after the loss (``StateOutputs``)."""

    name = "batch_statistics"

    def __init__(self, outputs: bool = False):
        self.outputs = outputs

    def run(self, module: nn.Module, ctx: PassContext) -> nn.Module:
        state = list(ctx.program.state)
        if not state:
            return module
        module = copy.deepcopy(module)
        swapped = replace_training_batch_norms(module)
        ctx.report(self.name, batch_norms=swapped, state=len(state))
        return StateOutputs(module, state) if self.outputs else module

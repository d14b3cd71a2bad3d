"""Device programs: what a recipe hands to the exporters.

A device program is the part of a method that runs on the phone: a module,
example inputs, which parameters train and which are frozen, the loss and the
optimizer. Every backend's graph is derived from it; nothing is written twice.

- An *inference* program maps ``inputs -> outputs``.
- A *training* program maps ``inputs + targets -> loss`` (a scalar); the
  parameters with ``requires_grad`` are trained on the device with plain SGD,
  the others are frozen constants.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Sequence, Union

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from dcx.training import sgd_step

SPREAD_RUNS = 8  # perturbed eager runs behind a training reference's rounding spread


@dataclass(frozen=True)
class SGD:
    lr: float


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, name: str, t: torch.Tensor) -> "TensorSpec":
        return cls(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


Batches = Union[Callable[[int, int], list[tuple[torch.Tensor, ...]]], Sequence[tuple[torch.Tensor, ...]]]


@dataclass
class DeviceProgram:
    name: str  # "<recipe>.<program>" for recipes (e.g. "dcccl.train"); any name for a user's program
    kind: Literal["train", "infer"]
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    summary: str
    optimizer: SGD | None = None
    notes: dict[str, str] = field(default_factory=dict)  # backend-independent facts worth a manifest line
    # Real-data batches shaped like example_inputs: batches(steps, seed) -> one tuple per step, or a list of them.
    batches: Batches | None = None
    recipe: str | None = None  # the recipe that built it; None for a user's own program
    metrics: dict[str, float] = field(default_factory=dict)  # computed facts, e.g. iciia_overhead_flops_pct

    def __post_init__(self) -> None:
        if len(self.input_names) != len(self.example_inputs):
            raise ValueError(f"{self.name}: {len(self.input_names)} input names for {len(self.example_inputs)} inputs")
        if (self.kind == "train") != (self.optimizer is not None):
            raise ValueError(f"{self.name}: training programs need an optimizer, inference programs none")
        self.module.eval()  # no dropout/batch-stat updates: on-device steps must be deterministic

    def copy(self) -> "DeviceProgram":
        """An independent copy: exporters may rewrite its module (e.g. switch on fused kernels)."""
        return replace(self, module=copy.deepcopy(self.module))

    @property
    def trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.module.named_parameters() if p.requires_grad and self.kind == "train"}

    @property
    def frozen(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer that does not train: all of them in an inference program."""
        frozen = {n: p for n, p in self.module.named_parameters() if not p.requires_grad or self.kind == "infer"}
        frozen.update(dict(self.module.named_buffers()))
        return frozen

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec.of(n, t) for n, t in zip(self.input_names, self.example_inputs)]

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Eager PyTorch: the reference every artifact is compared with."""
        out = self.module(*inputs)
        return out if isinstance(out, tuple) else (out,)

    def reference_training(self, batches: list[tuple[torch.Tensor, ...]]) -> tuple[list[float], dict[str, torch.Tensor]]:
        """Eager PyTorch SGD over ``batches`` on a copy: per-step losses (before each update) and final weights."""
        if self.optimizer is None:
            raise ValueError(f"{self.name} is not a training program")
        module = copy.deepcopy(self.module)
        params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        losses = []
        for batch in batches:
            loss = module(*batch)
            sgd_step(list(params.values()), torch.autograd.grad(loss, list(params.values())), self.optimizer.lr)
            losses.append(float(loss.detach()))
        return losses, {n: p.detach().clone() for n, p in params.items()}

    def rounding_spread(self, batches: list[tuple[torch.Tensor, ...]], losses: list[float],
                        final: dict[str, torch.Tensor], runs: int = SPREAD_RUNS) -> tuple[float, float]:
        """How far float32 rounding alone moves eager PyTorch's training over ``batches``: the largest per-step
        loss deviation (relative to max(1, |loss|)) and final-weight deviation from the unperturbed run, over
        ``runs`` runs whose floating-point inputs are moved by one ulp at random (up, down or not; exact zeros
        kept). Another float32 implementation that sums in another order differs from eager by about this much:
        where a ReLU's input is decided at the rounding level (a fresh deep network whose activations have
        decayed towards 1e-10) the mask, and so the gradient, flips between equally valid implementations, and
        the flips grow with depth and steps. Verify's training tolerances scale with it.

        ``losses`` and ``final``: ``reference_training(batches)``, the unperturbed run."""
        generator = torch.Generator().manual_seed(0)
        loss_spread = weight_spread = 0.0
        for _ in range(runs):
            perturbed = [tuple(_one_ulp(t, generator) for t in batch) for batch in batches]
            run_losses, run_final = self.reference_training(perturbed)
            loss_spread = max(loss_spread, *(abs(a - b) / max(1.0, abs(b)) for a, b in zip(run_losses, losses)))
            weight_spread = max(weight_spread, *(float((run_final[n] - w).abs().max()) for n, w in final.items()))
        return loss_spread, weight_spread

    def example_batches(self, steps: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
        """Real-data batches when the recipe (or the user) provides them, else the example inputs repeated."""
        if callable(self.batches):
            return self.batches(steps, seed)
        pool = list(self.batches) if self.batches else [self.example_inputs]
        return [pool[i % len(pool)] for i in range(steps)]

    def flops(self) -> dict[str, int]:
        """Forward FLOPs, and for training programs the backward FLOPs of one step."""
        with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as fwd:
            out = self.module(*self.example_inputs)
        result = {"forward": fwd.get_total_flops()}
        if self.kind == "train":
            with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as bwd:
                torch.autograd.grad(out, list(self.trainable.values()))
            result["backward"] = bwd.get_total_flops()
        return result

    def activation_bytes(self) -> dict[str, int]:
        """Activation memory of one call at the example inputs: the peak bytes of intermediate tensors alive at
        once during the forward, and for training programs the bytes the forward saves for the backward
        (parameters and inputs excluded). Memory planners can reuse buffers, so a runtime needs about this."""
        with _LiveBytes() as live:
            with torch.no_grad() if self.kind == "infer" else contextlib.nullcontext():
                self.module(*self.example_inputs)
        result = {"forward_peak": live.peak}
        if self.kind == "train":
            owned = {t.untyped_storage().data_ptr() for t in (*self.module.parameters(), *self.module.buffers(),
                                                             *self.example_inputs)}
            saved: dict[int, int] = {}

            def pack(t: torch.Tensor) -> torch.Tensor:
                storage = t.untyped_storage()
                if storage.data_ptr() not in owned:
                    saved[storage.data_ptr()] = storage.nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                self.module(*self.example_inputs)
            result["saved_for_backward"] = sum(saved.values())
        return result

    def parameter_count(self) -> dict[str, int]:
        return {"trainable": sum(p.numel() for p in self.trainable.values()),
                "frozen": sum(t.numel() for t in self.frozen.values())}


def _one_ulp(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``t`` with each non-zero floating-point element moved to its neighbour above or below, or kept, at random."""
    if not t.is_floating_point():
        return t
    step = torch.randint(-1, 2, t.shape, generator=generator).to(t.dtype)
    return torch.where((step == 0) | (t == 0), t, torch.nextafter(t, t + step))


class _LiveBytes(TorchDispatchMode):
    """Bytes of the tensors that ops produce and that are still alive, and their peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self._seen:
                    self._seen.add(key)
                    self.live += storage.nbytes()
                    weakref.finalize(t, self._free, key, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Each gradient of a convolution (input, weight) costs what the forward convolution costs.

    torch's own formula ignores ``groups`` and counts a depthwise convolution's backward as a dense one's
    (64 times too much for 64 channels); the forward formula reads the grouped weight shape and is right."""
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(x_shape, w_shape, grad_out_shape, transposed) * (int(output_mask[0]) + int(output_mask[1]))


FLOP_FORMULAS = {torch.ops.aten.convolution_backward: _conv_backward_flops}


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()

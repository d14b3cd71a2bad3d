"""Device programs: what a recipe hands to the exporters.

A device program is the part of a method that runs on the phone: a module,
example inputs, which parameters train and which are frozen, the loss and the
optimizer. Every backend's graph is derived from it; nothing is written twice.

- An *inference* program maps ``inputs -> outputs``.
- A *training* program maps ``inputs + targets -> loss`` (a scalar); the
  parameters with ``requires_grad`` are trained on the device by its optimizer
  (``dcx.optim``), the others are frozen constants.

A training program keeps its module's mode: a batch norm in training mode
normalises with batch statistics and updates its running statistics, which the
program carries as *state* (updated in the graph, returned after the loss,
checked by verify); in inference mode it is frozen. Dropout in training mode
is refused (no runtime here can carry PyTorch's generator), as is a batch norm
in training mode that would see one value per channel.
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

from dcx.errors import DcxError
from dcx.optim import Optimizer, torch_state

SPREAD_RUNS = 8  # perturbed eager runs behind a training reference's rounding spread


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
    optimizer: Optimizer | None = None
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
        if self.kind == "infer":
            self.module.eval()  # an inference program infers: dropout off, batch-norm statistics frozen
        else:
            _check_training_mode(self.name, self.module, self.example_inputs)

    def copy(self) -> "DeviceProgram":
        """An independent copy: exporters may rewrite its module (e.g. switch on fused kernels)."""
        return replace(self, module=copy.deepcopy(self.module))

    @property
    def trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.module.named_parameters() if p.requires_grad and self.kind == "train"}

    @property
    def frozen(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer that does not train and is not state: all of them in an inference
        program."""
        frozen = {n: p for n, p in self.module.named_parameters() if not p.requires_grad or self.kind == "infer"}
        state = self.state
        frozen.update({n: b for n, b in self.module.named_buffers() if n not in state})
        return frozen

    @property
    def state(self) -> dict[str, torch.Tensor]:
        """The buffers a training step updates: the running statistics of each batch norm in training mode, in
        module order. The program returns them after the loss (``state_outputs``)."""
        if self.kind != "train":
            return {}
        return {f"{prefix}.{b}" if prefix else b: getattr(m, b) for prefix, m in self.module.named_modules()
                if _trains_statistics(m) for b in ("running_mean", "running_var")}

    @property
    def norm_modes(self) -> dict[str, str]:
        """Each normalisation layer and its mode: "train" (batch statistics, running statistics updated) or
        "eval" (running statistics frozen)."""
        return {n: "train" if m.training and self.kind == "train" else "eval"
                for n, m in self.module.named_modules() if isinstance(m, _NORMS)}

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec.of(n, t) for n, t in zip(self.input_names, self.example_inputs)]

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Eager PyTorch: the reference every artifact is compared with. The program's state is left as it was."""
        with kept_state(self.module):
            out = self.module(*inputs)
        return out if isinstance(out, tuple) else (out,)

    def reference_training(self, batches: list[tuple[torch.Tensor, ...]]) -> "TrainingRun":
        """``torch.optim`` over ``batches`` on a copy of the module: per-step losses (before each update), the
        final weights and state, and the optimizer's state after the first and the last step."""
        if self.optimizer is None:
            raise ValueError(f"{self.name} is not a training program")
        module = copy.deepcopy(self.module)
        params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        opt = self.optimizer.torch_optimizer(list(params.values()))
        losses, first = [], {}
        for step, batch in enumerate(batches):
            loss = module(*batch)
            for p, g in zip(params.values(), torch.autograd.grad(loss, list(params.values()))):
                p.grad = g
            opt.step()
            losses.append(float(loss.detach()))
            if step == 0:
                first = torch_state(opt, params, self.optimizer.slots)
        buffers = dict(module.named_buffers())
        return TrainingRun(losses, {n: p.detach().clone() for n, p in params.items()},
                           {n: buffers[n].detach().clone() for n in self.state}, first,
                           torch_state(opt, params, self.optimizer.slots))

    def rounding_spread(self, batches: list[tuple[torch.Tensor, ...]], reference: TrainingRun,
                        runs: int = SPREAD_RUNS) -> tuple[float, float]:
        """How far float32 rounding alone moves eager PyTorch's training over ``batches``: the largest per-step
        loss deviation (relative to max(1, |loss|)) and final-tensor deviation (weights, program state and
        optimizer slots, relative to max(1, |value|)) from the unperturbed run, over
        - ``runs`` runs whose floating-point inputs are moved by one ulp at random (up, down or not; exact zeros
          kept): where a ReLU's input is decided at the rounding level (a fresh deep network whose activations
          have decayed towards 1e-10) the mask, and so the gradient, flips between equally valid
          implementations, and the flips grow with depth and steps; a batch norm over a handful of values per
          channel amplifies them;
        - and the same run in float64, where the module runs in it: eager's own distance from the exact run.
          The perturbed runs keep eager's order of summation, so their errors are correlated with eager's; a
          runtime as accurate as eager but summing in another order can be this far from the exact run on the
          other side (an embedding row that AdamW steps from a gradient near its epsilon, a GRU's recurrent
          weights).
        Verify's training tolerances scale with it.

        ``reference``: ``reference_training(batches)``, the unperturbed run."""
        generator = torch.Generator().manual_seed(0)
        others = (self.reference_training([tuple(_one_ulp(t, generator) for t in batch) for batch in batches])
                  for _ in range(runs))
        spreads = [_deviation(run, reference) for run in (*others, self._float64_training(batches)) if run]
        return max(loss for loss, _ in spreads), max(tensors for _, tensors in spreads)

    def _float64_training(self, batches: list[tuple[torch.Tensor, ...]]) -> "TrainingRun | None":
        """``reference_training`` in float64 (module and floating-point inputs); None where the module has no
        float64 form (a custom op with float32 kernels only)."""
        def cast(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return tuple(t.double() if t.is_floating_point() else t for t in batch)

        try:
            double = replace(self, module=copy.deepcopy(self.module).double(), example_inputs=cast(self.example_inputs))
            return double.reference_training([cast(batch) for batch in batches])
        except (RuntimeError, NotImplementedError):
            return None

    def example_batches(self, steps: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
        """Real-data batches when the recipe (or the user) provides them, else the example inputs repeated."""
        if callable(self.batches):
            return self.batches(steps, seed)
        pool = list(self.batches) if self.batches else [self.example_inputs]
        return [pool[i % len(pool)] for i in range(steps)]

    def flops(self) -> dict[str, int]:
        """Forward FLOPs, and for training programs the backward FLOPs of one step."""
        with kept_state(self.module):
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
        with _LiveBytes() as live, kept_state(self.module):
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

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), kept_state(self.module):
                self.module(*self.example_inputs)
            result["saved_for_backward"] = sum(saved.values())
        return result

    def parameter_count(self) -> dict[str, int]:
        return {"trainable": sum(p.numel() for p in self.trainable.values()),
                "frozen": sum(t.numel() for t in self.frozen.values())}


@dataclass
class TrainingRun:
    """Eager PyTorch's training over a program's reference batches."""

    losses: list[float]  # per step, before the update
    weights: dict[str, torch.Tensor]  # trainable parameters after the last step
    state: dict[str, torch.Tensor]  # the program's state (DeviceProgram.state) after the last step
    optimizer_first: dict[str, dict[str, torch.Tensor]]  # per parameter, each optimizer slot after step 1
    optimizer_final: dict[str, dict[str, torch.Tensor]]  # ... and after the last step


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _trains_statistics(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats


def _check_training_mode(name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """Refuse, in one line, what a device step cannot reproduce: dropout in training mode (its random masks come
    from PyTorch's generator, which no runtime here carries) and batch statistics over one value per channel."""
    for layer, m in module.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise DcxError(f"{name}: dropout layer {layer!r} is in training mode (p={m.p}): its random masks cannot "
                           f"be reproduced on the device; call .eval() on it (or set p=0) before making the program")
        if _trains_statistics(m) and m.momentum is None:
            raise DcxError(f"{name}: batch norm {layer!r} has momentum=None (a cumulative average): give it a "
                           "momentum (e.g. 0.1), or call .eval() on it to train with frozen statistics")
    counts: dict[str, int] = {}

    def count(layer: str):
        def hook(m: nn.Module, args: tuple) -> None:
            counts.setdefault(layer, args[0].numel() // args[0].shape[1])
        return hook

    hooks = [m.register_forward_pre_hook(count(layer)) for layer, m in module.named_modules()
             if _trains_statistics(m)]
    try:
        with torch.no_grad(), kept_state(module):
            module(*inputs)
    except ValueError:
        pass  # PyTorch's own batch-norm check at one value per channel: the loop below names the layer
    finally:
        for h in hooks:
            h.remove()
    for layer, n in counts.items():
        if n < 2:
            raise DcxError(f"{name}: batch norm {layer!r} is in training mode but sees {n} value per channel at "
                           "these example inputs (batch size 1?): use a batch of at least 2, or call .eval() on "
                           "it to train with frozen statistics")


@contextlib.contextmanager
def kept_state(module: nn.Module):
    """Run ``module`` without keeping what its forward changes in its buffers (batch-norm running statistics
    in training mode): describing a program (its outputs, FLOPs, memory) must not step it."""
    saved = {n: b.detach().clone() for n, b in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for n, b in module.named_buffers():
                b.copy_(saved[n])


def _deviation(run: "TrainingRun", reference: "TrainingRun") -> tuple[float, float]:
    """The largest per-step loss deviation of ``run`` from ``reference`` (relative to max(1, |loss|)) and final
    tensor deviation (weights, state, optimizer slots; relative to max(1, |value|))."""
    loss = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(run.losses, reference.losses))
    pairs = [*((run.weights[n], w) for n, w in reference.weights.items()),
             *((run.state[n], v) for n, v in reference.state.items()),
             *((run.optimizer_final[p][k], v) for p, slots in reference.optimizer_final.items()
               for k, v in slots.items())]
    tensors = max((float(((a.to(b.dtype) - b).abs() / b.abs().clamp(min=1.0)).max()) for a, b in pairs
                   if b.numel() and b.is_floating_point()), default=0.0)
    return loss, tensors


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

"""The public Python API: a user's own PyTorch modules -> device programs -> artifacts -> verification.

    import dcx
    train = dcx.training_program("mynet.train", loss_module, (x, y), ("image", "label"),
                                 optimizer=dcx.optim.AdamW(lr=1e-3))
    infer = dcx.inference_program("mynet.infer", net, (x[:1],), ("image",), ("logits",))
    dcx.export_programs([train, infer], "out/mynet", formats="all")
    rows = dcx.verify("out/mynet")

Parameters with ``requires_grad=False`` are frozen in the training artifact;
the others train with the program's optimizer (``dcx.optim``; ``lr=`` alone
means plain SGD). The module's mode decides how its layers train: a batch
norm in ``train()`` mode uses batch statistics and updates its running
statistics on the device, one in ``eval()`` mode stays frozen. A program holds
its own copy of the module it is given, taken when it is made: the caller's
module (its mode, its parameters, their ``requires_grad``, its buffers) is
never changed, so one module can feed a training and an inference program. The recipes' ``dcx export`` is a thin
layer over the same ``export_programs``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from dcx.backends.executorch.options import ExecuTorchOptions
from dcx.errors import DcxError
from dcx.export.pipeline import ExportSummary
from dcx.optim import SGD, Optimizer
from dcx.programs import Batches, DeviceProgram
from dcx.verification import Row


def _check_inputs(name: str, example_inputs: Sequence[torch.Tensor], names: Sequence[str], what: str) -> tuple:
    inputs = tuple(example_inputs)
    if not all(isinstance(t, torch.Tensor) for t in inputs):
        raise DcxError(f"{name}: example_inputs must be tensors")
    if len(names) != len(inputs):
        raise DcxError(f"{name}: {len(names)} {what} for {len(inputs)} example inputs; give one name per input")
    return inputs


def training_program(name: str, loss_module: nn.Module, example_inputs: Sequence[torch.Tensor],
                     input_names: Sequence[str], lr: float | None = None, *, optimizer: Optimizer | None = None,
                     batches: Batches | None = None, summary: str = "") -> DeviceProgram:
    """A training program: ``loss_module(*inputs)`` returns the scalar loss; its parameters with
    ``requires_grad`` train on the device with ``optimizer`` (or plain SGD at ``lr``), the others are frozen.

    ``batches``: real-data batches (a list of input tuples, or ``f(steps, seed) -> list``) for the reference
    that travels with the artifacts; without them the example inputs are used for every step.
    """
    inputs = _check_inputs(name, example_inputs, input_names, "input names")
    if (lr is None) == (optimizer is None):
        raise DcxError(f"{name}: give either lr= (plain SGD) or optimizer= (a dcx.optim optimizer), not "
                       f"{'both' if lr is not None else 'neither'}")
    if optimizer is not None and not isinstance(optimizer, Optimizer.__args__):
        raise DcxError(f"{name}: optimizer= must be dcx.optim.SGD, Adam or AdamW, got {type(optimizer).__name__}")
    if not any(p.requires_grad for p in loss_module.parameters()):
        raise DcxError(f"{name}: no parameter of the loss module requires grad; nothing would train")
    # The program's own copy keeps the caller's modes: they decide how each layer trains. DeviceProgram refuses
    # (in one line) what a device cannot train before the loss is computed here.
    program = DeviceProgram(name, "train", copy.deepcopy(loss_module), inputs, tuple(input_names), ("loss",),
                            summary or f"user training program {name}", optimizer=optimizer or SGD(float(lr)),
                            batches=batches)
    with torch.no_grad():
        loss = program.run(*inputs)
    if len(loss) != 1 or not isinstance(loss[0], torch.Tensor) or loss[0].dim() != 0:
        got = f"{len(loss)} outputs" if len(loss) != 1 else \
            tuple(loss[0].shape) if isinstance(loss[0], torch.Tensor) else type(loss[0]).__name__
        raise DcxError(f"{name}: the loss module must return a scalar tensor, got {got}")
    return program


def inference_program(name: str, module: nn.Module, example_inputs: Sequence[torch.Tensor],
                      input_names: Sequence[str], output_names: Sequence[str], *, summary: str = "") -> DeviceProgram:
    """An inference program ``module(*inputs) -> outputs`` (every parameter frozen)."""
    inputs = _check_inputs(name, example_inputs, input_names, "input names")
    module = copy.deepcopy(module).eval()  # the program's own copy, inferring: dropout off, statistics frozen
    for p in module.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        out = module.eval()(*inputs)
    count = len(out) if isinstance(out, tuple) else 1
    if count != len(output_names):
        raise DcxError(f"{name}: the module returns {count} outputs, {len(output_names)} output names given")
    return DeviceProgram(name, "infer", module, inputs, tuple(input_names), tuple(output_names),
                         summary or f"user inference program {name}")


def export_programs(programs: Sequence[DeviceProgram], out: str | Path, formats: str | Sequence[str] = "all", *,
                    force: bool = False, fused_kernels: bool = False, fast_training: bool = True,
                    reference_steps: int = 20, progress: Callable[[str], None] = lambda s: None) -> ExportSummary:
    """Export ``programs`` into the folder ``out``: artifacts, ``reference/`` and ``manifest.json``.

    ``fast_training=False`` keeps ExecuTorch training programs on the stock portable kernels.

    An op a backend cannot take fails that format (``summary.failed`` names the op, format and program);
    the other formats still export.
    """
    from dcx.export.pipeline import export_programs as _export

    options = {"executorch": ExecuTorchOptions(fused_kernels=fused_kernels, fast_training=fast_training)}
    return _export(list(programs), Path(out), formats, force=force, options=options, reference_steps=reference_steps,
                   progress=progress)


def verify(out: str | Path, program: str | None = None) -> list[Row]:
    """Every artifact in ``out`` in its real runtime against the reference that travels with it."""
    from dcx.verification import verify as _verify

    return _verify(Path(out), program_filter=program)

"""MNN as a training peer in ``dcx bench runtimes``: the same training program trained by MNN's own trainer.

How an MNN user trains a PyTorch model (mnn 3.6.1, found by experiment here): the model goes to ONNX, MNN's
converter turns it into an ``.mnn`` graph kept for training (``--forTraining``), ``MNN.nn.load_module(inputs,
outputs, True)`` turns its convolutions and fully connected layers into trainable MNN modules, and
``MNN.optim.SGD`` steps on the loss, MNN's autograd giving the gradients (after ``MNN.expr.lazy_eval(True)``).
The converter is called as the function of its extension (``_tools.mnnconvert``, in a process of its own): the
``mnnconvert`` command pip-installs a logging SDK and sends usage logs.

The peer must compute what the program computes, so:
- the whole loss module is the graph (its loss included), fed the program's batch; the part computed from the
  data and frozen weights alone (DC-CCL's mimic, CoDA's item table) is loaded as an inference module, as MNN's
  fine-tuning example loads its frozen feature extractor, and hands its outputs to the part that trains;
- SGD has no momentum and no weight decay, at the program's learning rate, and it is handed the program's
  trainable parameters only: frozen ones (constants inside MNN's layers, or folded into other ops) never move;
- a trainable parameter that is not a convolution's or fully connected layer's own weight or bias (batch-norm
  scale and shift, CoDA's user vector, a bias-free linear map) enters the graph as an input, held by an MNN
  variable fixed as trainable;
- three forms MNN 3.6.1 does not train are given in the same arithmetic (each measured here): batch norm in
  inference mode as a per-channel scale and shift (the converter needs a constant gamma), ``Flatten`` as
  ``Reshape`` and ``GlobalAveragePool`` as ``ReduceMean`` (MNN has no gradient for them: every layer before
  them would get a zero gradient);
- ``dcx bench runtimes`` checks the losses and weights of its first steps against eager PyTorch and leaves out a
  peer that differs (``dcx.bench.runtimes.check_parity``).
"""

from __future__ import annotations

import copy
import importlib.metadata
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dcx.programs import DeviceProgram

ONNX_OPSET = 17
# The converter's function (the ``mnnconvert`` command without its logging), run as ``python -c CONVERT ARGS``.
CONVERT = "import sys, _tools; sys.exit(0 if _tools.mnnconvert(['mnnconvert', *sys.argv[1:]]) else 1)"
LAYER_OPS = {"Conv": (1, 2), "Gemm": (1, 2)}  # ONNX ops whose weight/bias inputs MNN turns into trainable layers


class MnnCannotTrain(Exception):
    """MNN cannot take or run a program: the message is the one-line reason the benchmark table shows."""


def unavailable() -> str | None:
    """Why MNN cannot run here, or None."""
    try:
        importlib.metadata.version("mnn")
    except importlib.metadata.PackageNotFoundError:
        return "mnn is not installed: pip install 'dcx[mnn]'"
    return None


# ---------------------------------------------------------------------------------------------- the graph

class _FrozenStatsNorm(nn.Module):
    """Batch norm in inference mode as a per-channel scale and shift, keeping the norm's own (maybe trainable)
    ``weight`` and ``bias``: MNN's converter takes a batch norm only with a constant gamma."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.weight, self.bias = norm.weight, norm.bias
        self.register_buffer("invstd", torch.rsqrt(norm.running_var + norm.eps))
        self.register_buffer("mean", norm.running_mean.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = self.weight * self.invstd
        return x * scale.view(shape) + (self.bias - self.mean * scale).view(shape)


def _norms_as_scale_and_shift(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            if child.training or child.running_var is None or child.weight is None:
                raise MnnCannotTrain(f"batch norm {name} uses batch statistics or has no affine parameters")
            setattr(module, name, _FrozenStatsNorm(child))
        else:
            _norms_as_scale_and_shift(child)
    return module


class _WeightsAsInputs(nn.Module):
    """The loss module with some parameters taken from its inputs, so that they become ONNX graph inputs."""

    def __init__(self, module: nn.Module, names: list[str], data_inputs: int):
        super().__init__()
        self.module, self.names, self.data_inputs = module, names, data_inputs

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        for name, tensor in zip(self.names, args[self.data_inputs:]):
            owner, _, leaf = name.rpartition(".")
            self.module.get_submodule(owner)._parameters[leaf] = tensor
        return self.module(*args[: self.data_inputs])


def _export_onnx(module: nn.Module, program: DeviceProgram, batch: tuple[torch.Tensor, ...], inputs: list[str],
                 path: Path) -> None:
    """The loss module to ONNX, the trainable parameters named in ``inputs`` as graph inputs, the others as
    initializers under their PyTorch names (no constant folding: a parameter must stay a parameter)."""
    trainable = program.trainable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_WeightsAsInputs(module, inputs, len(batch)),
                          (*batch, *(trainable[n].detach() for n in inputs)), str(path),
                          input_names=[*program.input_names, *inputs], output_names=["loss"],
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=False)


def _outside_layers(path: Path, trainable: list[str]) -> list[str]:
    """The trainable parameters some ONNX node uses other than as a convolution's or Gemm's weight or bias."""
    import onnx

    graph = onnx.load(str(path)).graph
    outside = set()
    for node in graph.node:
        for i, name in enumerate(node.input):
            name = name.removeprefix("module.")  # the wrapper's attribute
            if name in trainable and i not in LAYER_OPS.get(node.op_type, ()):
                outside.add(name)
    return [n for n in trainable if n in outside]


def _differentiable_forms(path: Path) -> None:
    """``Flatten`` as ``Reshape`` and ``GlobalAveragePool`` as ``ReduceMean``: the same arithmetic, in ops that
    MNN's autograd differentiates."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    nodes = []
    for node in model.graph.node:
        if node.op_type == "Flatten":
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if axis != 1:
                raise MnnCannotTrain(f"Flatten at axis {axis}: MNN has no gradient for Flatten, and only axis 1 "
                                     "is given as a Reshape")
            shape = f"{node.output[0]}__shape"
            model.graph.initializer.append(numpy_helper.from_array(np.array([0, -1], np.int64), shape))
            node = helper.make_node("Reshape", [node.input[0], shape], list(node.output), name=node.name)
        elif node.op_type == "GlobalAveragePool":  # over an image's two spatial axes (Conv2d networks)
            node = helper.make_node("ReduceMean", list(node.input), list(node.output), name=node.name,
                                    axes=[2, 3], keepdims=1)
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))


def _frozen_frontier(path: Path, program: DeviceProgram) -> tuple[list[str], list[str]]:
    """Where the frozen part of the graph (nodes computed from the data and frozen weights alone, e.g. DC-CCL's
    mimic or CoDA's item table) hands over to the part that trains: the tensors it hands over, and the data
    inputs the trained part reads itself. An MNN user loads such a part as an inference module, as MNN's
    fine-tuning example loads its frozen feature extractor."""
    import onnx

    graph = onnx.load(str(path)).graph
    trainable = set(program.trainable)
    known = set(program.input_names) | {i.name for i in graph.initializer if i.name.removeprefix("module.")
                                        not in trainable}
    from_data, frozen = set(program.input_names), set()
    for k, node in enumerate(graph.node):
        if all(i == "" or i in known for i in node.input):
            known.update(node.output)
            frozen.add(k)
            if any(i in from_data for i in node.input):
                from_data.update(node.output)
    read_by_trained = {i for k, node in enumerate(graph.node) if k not in frozen for i in node.input}
    frontier = [t for k, node in enumerate(graph.node) if k in frozen for t in node.output
                if t in from_data and t in read_by_trained]
    return frontier, [n for n in program.input_names if n in read_by_trained]


def _convert(onnx_path: Path, mnn_path: Path) -> None:
    """MNN's converter function in a process of its own: its extension crashes when loaded after TensorFlow
    (their protobuf descriptors collide), and it prints from C++."""
    args = ["-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(mnn_path), "--bizCode", "dcx",
            "--forTraining"]
    proc = subprocess.run([sys.executable, "-c", CONVERT, *args], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not mnn_path.is_file():
        said = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        raise MnnCannotTrain(f"MNN's converter refuses the graph: {said[-1] if said else 'no message'}")


@dataclass
class MnnGraphs:
    """A training program as MNN graphs: the frozen part (None when there is none) and the part that trains."""

    frozen: Path | None
    trained: Path
    frontier: list[str]  # what the frozen part hands to the trained part
    data: list[str]  # the data inputs the trained part reads
    weight_inputs: list[str]  # trainable parameters that are inputs of the trained part


def convert(program: DeviceProgram, batch: tuple[torch.Tensor, ...], work: Path) -> MnnGraphs:
    """The program as MNN graphs kept for training (see the module docstring)."""
    from onnx.utils import extract_model

    work.mkdir(parents=True, exist_ok=True)
    onnx_path = work / f"{program.name}.onnx"
    module = _norms_as_scale_and_shift(copy.deepcopy(program.module))
    try:
        _export_onnx(copy.deepcopy(module), program, batch, [], onnx_path)
        inputs = _outside_layers(onnx_path, list(program.trainable))
        if inputs:
            _export_onnx(module, program, batch, inputs, onnx_path)
    except MnnCannotTrain:
        raise
    except Exception as e:  # the ONNX exporter's own refusal, e.g. an operator without an ONNX form
        raise MnnCannotTrain(f"no ONNX graph for MNN's converter: {str(e).splitlines()[0]}") from e
    _differentiable_forms(onnx_path)
    frontier, data = _frozen_frontier(onnx_path, program)
    if not frontier:
        data = list(program.input_names)
        _convert(onnx_path, work / "trained.mnn")
        return MnnGraphs(None, work / "trained.mnn", [], data, inputs)
    extract_model(str(onnx_path), str(work / "frozen.onnx"), list(program.input_names), frontier)
    extract_model(str(onnx_path), str(work / "trained.onnx"), [*frontier, *data, *inputs], ["loss"])
    for part in ("frozen", "trained"):
        _convert(work / f"{part}.onnx", work / f"{part}.mnn")
    return MnnGraphs(work / "frozen.mnn", work / "trained.mnn", frontier, data, inputs)


# ---------------------------------------------------------------------------------------------- the session

class MnnSession:
    """A training program in MNN: ``train_step`` and ``get_weights`` as the host runtimes' sessions have them."""

    def __init__(self, program: DeviceProgram, batch: tuple[torch.Tensor, ...], work: Path):
        import MNN

        self.F, nn_ = MNN.expr, MNN.nn
        self.F.lazy_eval(True)  # MNN trains in lazy mode
        self.F.set_thread_number(1)
        graphs = convert(program, batch, work)
        trained = self.F.load_as_dict(str(graphs.trained))
        try:
            self.frozen = None
            if graphs.frozen is not None:
                part = self.F.load_as_dict(str(graphs.frozen))
                self.frozen = nn_.load_module([part[n] for n in program.input_names],
                                              [part[t] for t in graphs.frontier], False)
            self.module = nn_.load_module([*(trained[t] for t in graphs.frontier), *(trained[n] for n in graphs.data),
                                           *(trained[n] for n in graphs.weight_inputs)], [trained["loss"]], True)
        except Exception as e:
            raise MnnCannotTrain(f"MNN cannot load its graphs for training: {e}") from e
        self.module.train(True)
        self.dtypes = [self.F.int if t.dtype in (torch.int32, torch.int64) else self.F.float for t in batch]
        self.data = [program.input_names.index(n) for n in graphs.data]
        trainable = program.trainable
        self.shapes = {n: tuple(t.shape) for n, t in trainable.items()}
        self.params = self._layer_parameters(trainable, exclude=graphs.weight_inputs)
        for name in graphs.weight_inputs:
            value = np.ascontiguousarray(trainable[name].detach().numpy())
            var = self.F.const(value, list(value.shape), self.F.NCHW, self.F.float)
            var.fix_as_trainable()
            self.params[name] = var
        self.weight_inputs = [self.params[n] for n in graphs.weight_inputs]
        self.optimizer = MNN.optim.SGD(_holder(nn_.Module, [self.params[n] for n in trainable]),
                                       program.optimizer.lr, 0.0, 0.0)

    def _layer_parameters(self, trainable: dict[str, torch.Tensor], exclude: list[str]) -> dict[str, object]:
        """MNN names no layer parameter: find each trainable one of the program among them by its values."""
        values = [(v, np.array(v.read(), dtype=np.float32).ravel()) for v in self.module.parameters]
        found = {}
        for name, tensor in trainable.items():
            if name in exclude:
                continue
            want = tensor.detach().numpy().ravel()
            hits = [v for v, have in values if have.size == want.size and np.array_equal(have, want)]
            if len(hits) != 1:
                raise MnnCannotTrain(f"{len(hits)} parameters of MNN's graph hold the values of {name}: "
                                     "cannot tell which one trains")
            found[name] = hits[0]
        return found

    def train_step(self, *inputs_and_targets: np.ndarray) -> float:
        """One SGD step on a batch; the loss before the update."""
        data = []
        for a, dtype in zip(inputs_and_targets, self.dtypes):
            a = np.ascontiguousarray(a, dtype=np.float32 if dtype == self.F.float else np.int32)
            data.append(self.F.const(a, list(a.shape), self.F.NCHW, dtype))
        handed = []
        if self.frozen is not None:
            out = self.frozen.forward(data)
            handed = out if isinstance(out, list) else [out]
        (loss,) = self.module.forward([*handed, *(data[i] for i in self.data), *self.weight_inputs])
        value = float(np.array(loss.read()))
        self.optimizer.step(loss)
        return value

    def get_weights(self) -> dict[str, np.ndarray]:
        return {n: np.array(v.read(), dtype=np.float32).reshape(self.shapes[n]) for n, v in self.params.items()}


def _holder(base: type, variables: list) -> object:
    """An MNN module that owns exactly ``variables``: what the optimizer updates."""

    class Holder(base):
        def __init__(self):
            super().__init__()
            for i, v in enumerate(variables):
                setattr(self, f"p{i}", v)

        def forward(self, x):
            return x

    return Holder()


def load(program: DeviceProgram, batch: tuple[torch.Tensor, ...], work: Path | None = None) -> MnnSession:
    """An MNN session of a training program; ``MnnCannotTrain`` with the reason where MNN cannot take it."""
    why = unavailable()
    if why:
        raise MnnCannotTrain(why)
    if work is not None:
        return MnnSession(program, batch, work)
    with tempfile.TemporaryDirectory(prefix="dcx-mnn-") as tmp:
        return MnnSession(program, batch, Path(tmp))

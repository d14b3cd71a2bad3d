"""Width split of a trained CNN into parallel large and small submodels (DC-CCL, docs/methods.md 1.1).

Every channel of every layer goes to the large group L or to the small group S
(a fraction ``ratio``); the weights that connect the two groups are dropped, so
``B(x) = L(x) + S(x)`` holds exactly once those weights are zero
(``zero_cross_group_weights``).

Which channels move together is read off the model's graph (``torch.export``
at an example input), so any network of convolutions (grouped and depthwise
included), batch norm, linear layers, elementwise activations, pooling,
residual adds, flatten/view and mean splits. Each tensor's channel axis lies in
a *channel space*; ops that tie two axes together put them in one space
(union-find): a residual add (both operands must share the grouping), a
depthwise convolution (channel i in is channel i out), batch norm and
activations (per channel). A flatten or view maps every position of the new
axis to the channel it came from (a channel expands into its spatial
positions). Each space is then cut once: the last ``round(width * ratio)``
channels go to S (per group, for grouped convolutions).

The input image is shared by L and S. The output layer keeps its full width in
both, since their logits are summed, and its bias goes to L. L and S are copies
of the model (same class, same forward) whose convolution, linear and
batch-norm tensors are narrowed to their group's channels.
"""

from __future__ import annotations

import contextlib
import copy
import math
import operator
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.fx.operator_schemas import normalize_function

from dcx.errors import DcxError

aten = torch.ops.aten

# Per-channel ops: the output's channel axis is the input's. ``LINEAR`` ones may also act on the summed logits.
ELEMENTWISE = {aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default,
               aten.hardswish.default, aten.hardswish_.default, aten.hardsigmoid.default, aten.hardsigmoid_.default,
               aten.sigmoid.default, aten.sigmoid_.default, aten.silu.default, aten.silu_.default}
LINEAR = {aten.dropout.default, aten.clone.default, aten.alias.default, aten.detach.default}
POOLS = {aten.max_pool2d.default, aten.avg_pool2d.default, aten.adaptive_avg_pool2d.default}
LINEAR_POOLS = {aten.avg_pool2d.default, aten.adaptive_avg_pool2d.default}
# Ops that only move elements around: the new channel axis is found by moving channel labels the same way.
VIEWS = {aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.flatten.using_ints,
         aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default, aten.permute.default, aten.transpose.int}
REDUCTIONS = {aten.mean.dim, aten.sum.dim_IntList}
ADDS = {aten.add.Tensor, aten.add_.Tensor}
MULS = {aten.mul.Tensor, aten.mul_.Tensor}
PRODUCTS = MULS | {aten.div.Tensor, aten.div_.Tensor}
CONVOLUTIONS = {aten.conv2d.default, aten.conv2d.padding}
BATCH_NORMS = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}
SHAPE_QUERIES = {aten.sym_size.int}

SHARED = "shared"  # a tensor computed from the input alone: identical in L and S


@dataclass(frozen=True)
class Axis:
    """A tensor's channel axis: its dim, its channel space, and the space channel at each position (None: i -> i)."""

    dim: int | None  # None: a one-channel axis that a view folded away
    space: int
    channels: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Param:
    """A parameter, buffer or constant placeholder (by its fully qualified name)."""

    name: str


@dataclass
class Layer:
    """A convolution, linear layer or batch norm: the module that owns it and the axes its tensors follow."""

    node: str
    owner: str  # fully qualified module name of the weight's owner
    kind: str  # "conv", "linear", "batch_norm"
    weight: str | None
    others: list[str]  # bias (and running stats): one value per output channel
    inp: Axis | str
    out: Axis | str
    groups: int = 1
    depthwise: bool = False  # one input channel per filter: out channel o reads in channel o // multiplier
    summed: bool = False  # the output layer: full width in L and S, bias to L


@dataclass
class SplitPlan:
    """Which channels of every space go to S, and how each layer's tensors follow."""

    find: Callable[[int], int]  # a space's root
    layers: list[Layer]
    spaces: dict[int, torch.Tensor] = field(default_factory=dict)  # root space -> is-small mask (absent: summed)

    def member(self, axis: Axis | str) -> torch.Tensor | None:
        """Is-small mask over the axis positions; None when the axis is not split (shared input, summed logits)."""
        if axis == SHARED:
            return None
        mask = self.spaces.get(self.find(axis.space))
        if mask is None:
            return None
        return mask if axis.channels is None else mask[list(axis.channels)]

    def dim_masks(self, layer: Layer) -> list[torch.Tensor | None]:
        """Is-small mask of each dim of a layer's weight: [out channels, in channels (of one group)].

        Every group of a grouped convolution's input is cut alike (``blocks``), so group 0's mask is all groups'.
        """
        out, inp = self.member(layer.out), self.member(layer.inp)
        if layer.kind == "batch_norm":
            return [out]
        if layer.depthwise or inp is None:
            return [out, None]
        return [out, inp.reshape(layer.groups, -1)[0]]


# ---------------------------------------------------------------- public API

@torch.no_grad()
def split_by_width(model: nn.Module, ratio: float, example_input: Any) -> tuple[nn.Module, nn.Module]:
    """The large and small submodels of ``model``: copies whose layers keep only their group's channels."""
    plan, outputs = _plan(model, ratio, example_input)
    subs = tuple(_narrowed(model, plan, small) for small in (False, True))
    for sub, label in zip(subs, ("large", "small")):
        with _eval_mode(sub):
            try:
                got = sub(*_as_tuple(example_input))
            except Exception as e:
                raise DcxError(f"split_by_width: the narrowed {label} submodel fails on the example input "
                               f"({_first_line(e)}); its forward may hard-code a width or call a layer "
                               "functionally: use nn.Conv2d/nn.Linear/nn.BatchNorm2d modules") from None
        shapes = [tuple(t.shape) for t in _tensors(got)]
        if shapes != outputs:
            raise DcxError(f"split_by_width: the {label} submodel returns shapes {shapes}, the model {outputs}")
    return subs  # type: ignore[return-value]


@torch.no_grad()
def zero_cross_group_weights(model: nn.Module, ratio: float, example_input: Any) -> None:
    """Zero, in place, the weights that ``split_by_width`` drops: afterwards ``L(x) + S(x) == model(x)``."""
    plan, _ = _plan(model, ratio, example_input)
    tensors = dict(model.named_parameters())
    for layer in plan.layers:
        if layer.kind == "batch_norm" or layer.weight is None:
            continue
        w = tensors[layer.weight]
        out, inp = plan.dim_masks(layer)
        if out is not None and inp is not None:
            cross = out[:, None] != inp[None, :]
            w[cross.reshape(*cross.shape, *[1] * (w.dim() - 2)).expand_as(w)] = 0


# ---------------------------------------------------------------- analysis

def _plan(model: nn.Module, ratio: float, example_input: Any) -> tuple[SplitPlan, list[tuple[int, ...]]]:
    if not 0.0 < ratio < 1.0:
        raise DcxError(f"split_by_width: ratio must be in (0, 1), got {ratio}")
    inputs = _as_tuple(example_input)
    with _eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ep = torch.export.export(model, inputs, strict=False)
        except Exception as e:
            shapes = ", ".join(str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__
                               for t in inputs)
            raise DcxError(f"split_by_width: the model cannot take the example input ({shapes}): "
                           f"{_first_line(e)}") from None
    graph = _ChannelGraph(ep)
    plan = graph.assign(ratio)
    outputs = [tuple(n.meta["val"].shape) for n in _tensors(graph.output_nodes)]
    return plan, outputs


class _ChannelGraph:
    """Walks an exported graph once, giving every tensor a channel axis and collecting the layers."""

    def __init__(self, ep: torch.export.ExportedProgram):
        sig = ep.graph_signature
        self.state = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
        self.parent: dict[int, int] = {}
        self.width: dict[int, int] = {}
        self.blocks: dict[int, int] = {}
        self.origin: dict[int, str] = {}
        self.layers: list[Layer] = []
        self.values: dict[str, Any] = {}
        self.output_nodes: list[torch.fx.Node] = []
        for node in ep.graph.nodes:
            if node.op == "placeholder":
                self.values[node.name] = Param(self.state[node.name]) if node.name in self.state else SHARED
            elif node.op == "call_function":
                self.values[node.name] = self._visit(node)
            elif node.op == "output":
                self.output_nodes = _tensors(node.args[0])
        self.summed = self._summed_spaces(ep.graph)

    # ------------------------------------------------------------ spaces (union-find)

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def new_space(self, width: int, origin: str, blocks: int = 1) -> Axis:
        s = len(self.parent)
        self.parent[s], self.width[s], self.blocks[s], self.origin[s] = s, width, blocks, origin
        return Axis(1, s)

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.blocks[a] = math.lcm(self.blocks[a], self.blocks[b])

    # ------------------------------------------------------------ nodes

    def _visit(self, node: torch.fx.Node) -> Any:
        t = node.target
        if t is operator.getitem:
            value = self.values[node.args[0].name]
            return value[node.args[1]] if isinstance(value, tuple) else value
        if t in SHAPE_QUERIES:
            return None
        kw = normalize_function(t, node.args, node.kwargs, normalize_to_only_use_kwargs=True)
        if kw is None:
            return self._unknown(node)
        kw = kw.kwargs
        x = self._value(kw.get("input", kw.get("self")))
        if t in CONVOLUTIONS:
            return self._convolution(node, x, kw)
        if t is aten.linear.default:
            return self._linear(node, x, kw)
        if t in BATCH_NORMS:
            return self._batch_norm(node, x, kw)
        tensors = [self._value(a) for a in node.all_input_nodes]
        if any(isinstance(v, Param) for v in tensors):
            return self._unknown(node)
        if t in ELEMENTWISE or t in LINEAR:
            return x
        if t in POOLS:
            self._channel_axis(node, x, kw["input"].meta["val"].dim() - 3)
            return x
        if t in VIEWS:
            return self._view(node, x)
        if t in REDUCTIONS:
            return self._reduction(node, x, kw)
        if t in ADDS | PRODUCTS:
            return self._binary(node, tensors)
        return self._unknown(node)

    def _value(self, arg: Any) -> Any:
        return self.values[arg.name] if isinstance(arg, torch.fx.Node) else None

    def _unknown(self, node: torch.fx.Node) -> Any:
        """An op the split does not know: fine on the shared input (e.g. resizing), an error on split channels."""
        inputs = [self._value(a) for a in node.all_input_nodes]
        if all(v == SHARED or isinstance(v, Param) or v is None for v in inputs):
            return SHARED
        params = [v.name for v in inputs if isinstance(v, Param)]
        if params:
            raise DcxError(f"split_by_width: node {node.name} uses parameter {params[0]} in {node.target} on split "
                           "channels; the split slices convolution, linear and batch-norm parameters only")
        raise DcxError(f"split_by_width: node {node.name} calls {node.target}, which the width split does not "
                       "know on split channels; it handles convolutions, batch norm, linear, ReLU/ReLU6/hardswish, "
                       "pooling, residual add, flatten/view and mean")

    def _channel_axis(self, node: torch.fx.Node, x: Any, dim: int) -> None:
        if x != SHARED and (not isinstance(x, Axis) or x.dim != dim):
            raise DcxError(f"split_by_width: node {node.name} ({node.target}) takes channels on dim {dim}, but its "
                           "input's channels are elsewhere; the split follows NCHW convolutions and [N, C] linears")

    def _layer_names(self, node: torch.fx.Node, kw: dict, *keys: str) -> list[str | None]:
        names = []
        for k in keys:
            v = self._value(kw.get(k))
            if v is not None and not isinstance(v, Param):
                raise DcxError(f"split_by_width: node {node.name} ({node.target}) takes a computed {k}; the split "
                               "slices parameters only")
            names.append(v.name if v is not None else None)
        return names

    def _convolution(self, node: torch.fx.Node, x: Any, kw: dict) -> Any:
        self._channel_axis(node, x, 1)
        weight, bias = self._layer_names(node, kw, "weight", "bias")
        cout, cin_per_group = kw["weight"].meta["val"].shape[:2]
        groups = kw["groups"]
        owner = _owner(weight)
        others = [bias] if bias else []
        depthwise = groups > 1 and cin_per_group == 1
        if depthwise:
            if x == SHARED:
                return SHARED
            cin = kw["input"].meta["val"].shape[1]
            positions = x.channels if x.channels is not None else tuple(range(cin))
            out = self._axis(x.space, tuple(c for c in positions for _ in range(cout // cin)))
        else:
            out = self.new_space(cout, owner, blocks=groups)
            if groups > 1 and x != SHARED:
                if x.channels is not None:
                    raise DcxError(f"split_by_width: grouped convolution {owner} (groups={groups}) reads a "
                                   "reshaped tensor; the split needs its input straight from a convolution")
                self.blocks[self.find(x.space)] = math.lcm(self.blocks[self.find(x.space)], groups)
        self.layers.append(Layer(node.name, owner, "conv", weight, others, x, out, groups, depthwise))
        return out

    def _linear(self, node: torch.fx.Node, x: Any, kw: dict) -> Any:
        rank = kw["input"].meta["val"].dim()
        self._channel_axis(node, x, rank - 1)
        weight, bias = self._layer_names(node, kw, "weight", "bias")
        owner = _owner(weight)
        out = self.new_space(kw["weight"].meta["val"].shape[0], owner)
        out = Axis(rank - 1, out.space)
        self.layers.append(Layer(node.name, owner, "linear", weight, [bias] if bias else [], x, out))
        return out

    def _batch_norm(self, node: torch.fx.Node, x: Any, kw: dict) -> Any:
        self._channel_axis(node, x, 1)
        names = self._layer_names(node, kw, "weight", "bias", "running_mean", "running_var")
        known = [n for n in names if n]
        if x != SHARED and known:
            self.layers.append(Layer(node.name, _owner(known[0]), "batch_norm", None, known, x, x))
        return x if node.target is aten.batch_norm.default else (x, None, None)

    def _axis(self, space: int, channels: tuple[int, ...] | None, dim: int = 1) -> Axis:
        if channels is not None and channels == tuple(range(self.width[space])):
            channels = None
        return Axis(dim, space, channels)

    def _view(self, node: torch.fx.Node, x: Any) -> Any:
        """Move a label per channel position through the same view; the axis is where the labels vary."""
        if x == SHARED or x.dim is None:
            return x
        shape = node.args[0].meta["val"].shape
        n = shape[x.dim]
        if n == 1:
            return Axis(None, x.space)
        labels = torch.arange(n).reshape([n if i == x.dim else 1 for i in range(len(shape))]).expand(shape)
        args, kwargs = torch.fx.node.map_arg((node.args[1:], node.kwargs), lambda a: a.meta["val"])
        moved = node.target(labels.contiguous(), *args, **kwargs)
        for d in range(moved.dim()):
            line = moved.movedim(d, 0).reshape(moved.shape[d], -1)[:, 0]
            along = line.reshape([-1 if i == d else 1 for i in range(moved.dim())]).expand(moved.shape)
            if moved.shape[d] > 1 and torch.equal(moved, along):
                positions = x.channels if x.channels is not None else tuple(range(n))
                return self._axis(x.space, tuple(positions[i] for i in line.tolist()), d)
        raise DcxError(f"split_by_width: node {node.name} ({node.target}) mixes channels with other dims; "
                       "the split needs each channel's values to stay on one axis")

    def _reduction(self, node: torch.fx.Node, x: Any, kw: dict) -> Any:
        if x == SHARED:
            return x
        rank = kw["input"].meta["val"].dim()
        dims = {d % rank for d in (kw["dim"] or range(rank))}
        if x.dim is None or x.dim in dims:
            raise DcxError(f"split_by_width: node {node.name} ({node.target}) reduces over channels, which "
                           "mixes the large and small groups")
        return x if kw.get("keepdim") else Axis(x.dim - sum(d < x.dim for d in dims), x.space, x.channels)

    def _binary(self, node: torch.fx.Node, tensors: list[Any]) -> Any:
        """Both operands of a residual add (or a gating product) must carry the same channels."""
        if len(tensors) == 1:
            return tensors[0]
        a, b = tensors
        if a == SHARED and b == SHARED:
            return SHARED
        if SHARED in (a, b):
            raise DcxError(f"split_by_width: node {node.name} ({node.target}) combines the shared input with "
                           "split channels; the split needs both operands computed by split layers")
        ra, rb, ro = (n.meta["val"].dim() for n in (*node.all_input_nodes, node))
        sa = node.all_input_nodes[0].meta["val"].shape
        sb = node.all_input_nodes[1].meta["val"].shape
        if (a.dim is None) != (b.dim is None) or (a.dim is not None and (
                a.dim - ra != b.dim - rb or sa[a.dim] != sb[b.dim] or a.channels != b.channels)):
            raise DcxError(f"split_by_width: node {node.name} ({node.target}) combines tensors whose channels "
                           "do not line up (a broadcast across channels or a different order)")
        self.union(a.space, b.space)
        return Axis(None if a.dim is None else ro + a.dim - ra, self.find(a.space), a.channels)

    # ------------------------------------------------------------ the summed output and the cut

    def _summed_spaces(self, graph: torch.fx.Graph) -> set[int]:
        """The outputs are the summed logits: one output layer makes them, and only linear ops follow it."""
        summed = set()
        for n in self.output_nodes:
            v = self.values.get(n.name)
            if v == SHARED:
                raise DcxError("split_by_width: an output is computed from the input alone; nothing to split")
            if isinstance(v, Axis):
                summed.add(self.find(v.space))
        is_summed = lambda v: isinstance(v, Axis) and self.find(v.space) in summed  # noqa: E731
        for layer in self.layers:
            if is_summed(layer.inp) or (is_summed(layer.out) and (layer.kind == "batch_norm" or layer.inp == SHARED)):
                raise DcxError(f"split_by_width: layer {layer.owner} ({layer.kind}) cannot make or follow the summed "
                               "output logits; they must come from a last convolution or linear layer that reads "
                               "split channels")
            layer.summed = is_summed(layer.out)
        layers = {layer.node for layer in self.layers}
        for node in graph.nodes:
            if node.op != "call_function" or node.name in layers or node.target in (operator.getitem, *SHAPE_QUERIES):
                continue
            touches = [self.values.get(node.name), *(self._value(a) for a in node.all_input_nodes)]
            if any(is_summed(v) for v in touches) and not _is_linear(node):
                raise DcxError(f"split_by_width: node {node.name} applies {node.target} to the output logits; "
                               "L(x) + S(x) equals B(x) only through linear ops there")
        return summed

    def assign(self, ratio: float) -> SplitPlan:
        """The last round(width * ratio) channels of each space (of each group in it) go to S."""
        plan = SplitPlan(self.find, self.layers)
        for s in {self.find(s) for s in self.parent} - self.summed:
            width, blocks = self.width[s], self.blocks[s]
            block = width // blocks
            small = round(block * ratio)
            if small == 0 or small == block:
                group = "small" if small == 0 else "large"
                per = f", {blocks} groups of {block}" if blocks > 1 else ""
                raise DcxError(f"split_by_width: ratio {ratio:g} leaves the {group} group empty in layer "
                               f"{self.origin[s] or '(root)'} (width {width}{per}); choose a ratio with "
                               f"1 <= round({block} * ratio) < {block}")
            mask = torch.zeros(blocks, block, dtype=torch.bool)
            mask[:, block - small:] = True
            plan.spaces[s] = mask.reshape(-1)
        return plan


# ---------------------------------------------------------------- building L and S

def _narrowed(model: nn.Module, plan: SplitPlan, small: bool) -> nn.Module:
    """A copy of ``model`` whose layer tensors keep only one group's channels (S: ``small``)."""
    sub = copy.deepcopy(model)
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for layer in plan.layers:
        for name in ([layer.weight] if layer.weight else []) + layer.others:
            masks = plan.dim_masks(layer) if name == layer.weight else plan.dim_masks(layer)[:1]
            sliced = tensors[name]
            for dim, mask in enumerate(masks):
                if mask is not None:
                    sliced = sliced[(slice(None),) * dim + (mask if small else ~mask,)]
            if layer.summed and name in layer.others and small:
                sliced = torch.zeros_like(sliced)  # the output bias goes to L
            _replace_tensor(sub, name, sliced.clone())
        _fix_layer_sizes(sub.get_submodule(layer.owner), layer)
    return sub


def _replace_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=owner._parameters[leaf].requires_grad)
    else:
        owner._buffers[leaf] = value


def _fix_layer_sizes(module: nn.Module, layer: Layer) -> None:
    """Keep a narrowed module's size attributes (and a depthwise convolution's groups) true to its tensors."""
    if isinstance(module, nn.Conv2d) and layer.kind == "conv":
        out, per_group = module.weight.shape[:2]
        if layer.depthwise:  # groups = input channels; the channel multiplier stays
            module.groups = out // (module.out_channels // module.in_channels)
        module.in_channels, module.out_channels = per_group * module.groups, out
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        per_channel = module.running_mean if module.running_mean is not None else module.weight
        module.num_features = per_channel.shape[0]


# ---------------------------------------------------------------- helpers

def _owner(tensor_name: str) -> str:
    """The fully qualified name of the module that holds a parameter or buffer."""
    return tensor_name.rpartition(".")[0]


def _is_linear(node: torch.fx.Node) -> bool:
    """Does the op commute with a sum of its input (f(a + b) = f(a) + f(b))?"""
    operands = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
    if node.target in ADDS:
        return len(operands) == 2
    if node.target in PRODUCTS:  # by a constant; a division only of the tensor
        return len(operands) == 1 and (node.target in MULS or operands[0] is node.args[0])
    return node.target in LINEAR | LINEAR_POOLS | VIEWS | REDUCTIONS


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the duration (batch norm uses its running statistics), each module's own mode restored."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _as_tuple(example_input: Any) -> tuple:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def _tensors(value: Any) -> list:
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return [value] if isinstance(value, (torch.Tensor, torch.fx.Node)) else []


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]

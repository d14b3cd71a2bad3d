"""Core ML pass: trace a program with named inputs and fold shape lookups to constants.

TorchScript tracing of ``x.shape[0]`` (e.g. CoDA's ``user_vec.expand(item.shape[0], -1)``)
leaves an ``int`` cast of a tensor that coremltools' frontend cannot convert.
Core ML models have static shapes anyway, so every ``x.shape[i]`` / ``x.size(i)``
is replaced by its value at the inputs the artifact is built for: in the FX graph
(``specialize_shapes``), and in the TorchScript trace for the modules FX keeps whole,
such as ``nn.MultiheadAttention`` (``trace_static``).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from dcx.passes.graph_capture import composite_attention


class _NamedInputs(nn.Module):
    """Calls ``module`` with explicitly named positional inputs (FX cannot trace ``*args`` forwards)."""

    def forward(self, *args):  # replaced per instance by ``trace_named``
        raise NotImplementedError


def trace_named(module: nn.Module, input_names: tuple[str, ...]) -> fx.GraphModule:
    """FX graph of ``module`` whose placeholders carry ``input_names``; module paths stay the module's own."""
    for name in input_names:
        if not name.isidentifier():
            raise ValueError(f"input name {name!r} is not a Python identifier")
    args = ", ".join(input_names)
    namespace: dict = {}
    exec(f"def forward(self, {args}):\n    return self.module({args})", namespace)  # noqa: S102
    shim = type("NamedInputs", (_NamedInputs,), {"forward": namespace["forward"]})()
    shim.module = module
    gm = fx.symbolic_trace(shim)
    # Drop the shim's "module." prefix so targets are the program module's own paths.
    root = gm.get_submodule("module")
    graph = gm.graph
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr") and node.target.startswith("module."):
            node.target = node.target[len("module."):]
    return fx.GraphModule(root, graph, class_name="Traced")


def specialize_shapes(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """Replace ``x.shape[i]`` and ``x.size(i)`` by their values at ``example_inputs``."""
    ShapeProp(gm).propagate(*example_inputs)
    changed = False
    for node in list(gm.graph.nodes):
        value = None
        if node.op == "call_function" and node.target is operator.getitem:
            src, index = node.args
            if (isinstance(src, fx.Node) and src.op == "call_function" and src.target is getattr
                    and src.args[1] == "shape" and isinstance(index, int)):
                value = int(src.args[0].meta["tensor_meta"].shape[index])
        elif node.op == "call_method" and node.target == "size" and len(node.args) == 2:
            value = int(node.args[0].meta["tensor_meta"].shape[node.args[1]])
        if value is not None:
            for user in list(node.users):
                user.args = fx.node.map_arg(user.args, lambda n, node=node, value=value: value if n is node else n)
                user.kwargs = fx.node.map_arg(user.kwargs, lambda n, node=node, value=value: value if n is node else n)
            gm.graph.erase_node(node)
            changed = True
    if changed:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return gm


def trace_static(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    """TorchScript trace of ``gm`` at ``example_inputs`` with every size folded to a constant.

    A module FX keeps whole reads sizes in its own code (``nn.MultiheadAttention``: ``embed_dim // num_heads``,
    ``bsz * num_heads``), which the trace records as ``aten::size`` and ``aten::Int`` arithmetic that
    coremltools cannot convert; the trace's tensors have complete static types, so those fold. Attention is
    traced as its composite: the trace's own no_grad re-run check would otherwise meet the fused MHA fast path.
    """
    with composite_attention():
        traced = torch.jit.trace(gm, example_inputs)
    torch._C._jit_pass_inline(traced.graph)
    torch._C._jit_pass_peephole(traced.graph, False)  # shape peepholes on: sizes of complete types -> constants
    torch._C._jit_pass_constant_propagation(traced.graph)
    return traced

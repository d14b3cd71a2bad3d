"""``split_reductions``: a ``sum`` or ``mean`` over several dims of many elements becomes a chain of one-dim
reductions, innermost dim first (ExecuTorch's joint graph, TFLite's forward graph).

Why: the runtimes' reduction kernels (ExecuTorch's portable ``sum``/``mean``, TFLite's ``SUM``/``MEAN``) add
every element into one float32 accumulator, so a batch norm's statistics over N x H x W values (6,272 at batch 8
and 28x28) carry an error that grows with that count, where eager PyTorch sums in cascades. Training on batch
statistics turns those errors into gradients: a MobileNetV3-Small's early-layer gradients came out about 1e-2
(relative to the tensor's largest) from float64 in both runtimes against 3e-6 in eager, and AdamW, which steps a
small gradient as far as a large one, made the loss 2.7e-5 (ExecuTorch) and 3.1e-5 (TFLite) off eager's after 5
steps. One dim at a time, each accumulator adds at most one dim's extent (the same value in exact arithmetic; a
mean of equal-sized means is the mean), and those losses came within 1.5e-6.

Reductions of at most ``SPLIT_ABOVE`` elements are left as they are: their error is small in any order, and
a frozen layer's global pooling stays the one op XNNPACK delegates. Runs after the fast-training rules,
which match a batch norm's reductions as ``BatchStatisticsNorm`` writes them.
"""

from __future__ import annotations

import math

import torch
from torch.export import ExportedProgram

from dcx.passes import PassContext

A = torch.ops.aten
SPLIT_ABOVE = 1024  # reduced elements per output value


def _splittable(node: torch.fx.Node) -> list[int] | None:
    """The dims of a plain multi-dim ``sum``/``mean`` over more than ``SPLIT_ABOVE`` elements, else None."""
    if node.target not in (A.sum.dim_IntList, A.mean.dim) or len(node.args) > 3 or node.kwargs.get("dtype"):
        return None
    shape = node.args[0].meta["val"].shape
    dims = node.args[1]
    if not dims or len(dims) < 2:
        return None
    dims = sorted({d % len(shape) for d in dims})
    return dims if math.prod(shape[d] for d in dims) > SPLIT_ABOVE else None


class SplitReductions:
    name = "split_reductions"

    def run(self, ep: ExportedProgram, ctx: PassContext) -> ExportedProgram:
        graph = ep.graph_module.graph
        split = 0
        for node in list(graph.nodes):
            dims = _splittable(node)
            if dims is None:
                continue
            keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
            x = node.args[0]
            val = x.meta["val"]
            with graph.inserting_before(node), val.fake_mode:
                for d in reversed(dims):
                    x = graph.call_function(node.target, (x, [d], True))
                    val = node.target(val, [d], True)
                    x.meta["val"] = val
                if not keepdim:
                    x = graph.call_function(A.squeeze.dims, (x, dims))
                    x.meta["val"] = node.meta["val"]
            node.replace_all_uses_with(x)
            graph.erase_node(node)
            split += 1
        ep.graph_module.recompile()
        ctx.report(self.name, reductions=split)
        return ep

"""``crop_to_slice``: a ``constant_pad_nd`` with negative padding (a crop) becomes ``slice`` ops (ExecuTorch).

Why: the gradient of a padding is the same op with the padding negated, so a network that pads explicitly
(EfficientNet-Lite's TensorFlow "same" padding before a strided convolution) has crops in its joint graph, and
ExecuTorch's portable ``constant_pad_nd`` refuses negative padding at run time. Each negative entry becomes a
slice of that dim; what is left positive stays a ``constant_pad_nd`` after them. Runs on the joint graph.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

from dcx.passes import PassContext

A = torch.ops.aten


class CropToSlice:
    name = "crop_to_slice"

    def run(self, ep: ExportedProgram, ctx: PassContext) -> ExportedProgram:
        graph = ep.graph_module.graph
        crops = [n for n in graph.nodes if n.target == A.constant_pad_nd.default and any(p < 0 for p in n.args[1])]
        for node in crops:
            x, pad = node.args[:2]
            value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
            val = x.meta["val"]
            with graph.inserting_before(node), val.fake_mode:
                for i in range(len(pad) // 2):
                    before, after = pad[2 * i], pad[2 * i + 1]
                    if before >= 0 and after >= 0:
                        continue
                    dim = val.dim() - 1 - i
                    start, end = max(0, -before), val.shape[dim] - max(0, -after)
                    x = graph.call_function(A.slice.Tensor, (x, dim, start, end))
                    val = A.slice.Tensor(val, dim, start, end)
                    x.meta["val"] = val
                rest = [max(0, p) for p in pad]
                if any(rest):
                    x = graph.call_function(A.constant_pad_nd.default, (x, rest, value))
                    x.meta["val"] = node.meta["val"]
            node.replace_all_uses_with(x)
            graph.erase_node(node)
        ep.graph_module.recompile()
        ctx.report(self.name, crops=len(crops))
        return ep

"""The dense gradient of an embedding table -> ``dcx::embedding_backward``.

Autograd writes it as ``index_put(full([V, D], 0), [clamp(idx)], where(~valid(idx), 0, grad),
accumulate=True)``: a scatter-add into a zero table that stock kernels run element by element. The
padding index, when there is one, is read from the ``ne`` that masks the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from .rewriter import A, Rule, _is, _is_zero, _ops, _reference, _shape, _tensor, _val


def _ancestors(node: fx.Node) -> list[fx.Node]:
    seen, stack = [], [node]
    while stack:
        n = stack.pop()
        if n in seen or n.op != "call_function":
            continue
        seen.append(n)
        stack.extend(n.all_input_nodes)
    return seen


@dataclass(frozen=True)
class EmbeddingBackward(Rule):
    """An accumulating ``index_put`` of a masked gradient into zeros, with int32/int64 indices."""

    targets = (A.index_put.default,)

    def match(self, rw, node: fx.Node):
        zeros, indices, values = node.args[:3]
        while _is(values, A.clone.default):  # a copy made contiguous changes no value
            values = values.args[0]
        accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
        if not (accumulate and _is(zeros, A.full.default) and _is_zero(zeros.args[1]) and len(indices) == 1
                and _is(indices[0], A.clamp.default) and _is(values, A.where.self) and _is_zero(values.args[1])):
            return "not the dense gradient of an embedding table"
        idx, grad = indices[0].args[0], values.args[2]
        pad = next((int(n.args[1]) for n in _ancestors(values.args[0]) if _is(n, A.ne.Scalar) and n.args[0] is idx), -1)
        num, dim = _shape(node)
        if not (_tensor(grad) and _val(idx).dtype in (torch.int32, torch.int64) and _shape(grad) == (*_shape(idx), dim)):
            return "embedding gradient with unsupported shapes or index dtype"
        return node, idx, grad, num, pad

    def check(self, rw, m):
        node, idx, grad, num, pad = m
        samples = [{idx: torch.randint(0, num, _shape(idx), dtype=_val(idx).dtype), grad: torch.randn(_shape(grad))}]
        ref = _reference("embedding_backward")
        if not rw.agrees([node], samples, lambda e: (ref(e[grad], e[idx], num, pad),)):
            return "the matched nodes do not compute the embedding gradient"
        return None

    def emit(self, rw, m):
        node, idx, grad, num, pad = m
        return rw.emit(_ops().embedding_backward.default, (grad, idx, num, pad), [node], [node])

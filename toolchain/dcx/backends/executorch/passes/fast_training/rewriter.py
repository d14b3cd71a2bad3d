"""The core every fast-training rule shares: graph helpers, the rewriter (emit, resolve, decline, the
numerical check of a matched region, the report) and ``Rule``, the match -> check -> emit protocol.

A rule never rewrites the graph itself: it hands ``Rewriter.emit`` the dcx op, its arguments, the stock
nodes it replaces and the nodes whose values it now gives, and the rewriter keeps the bookkeeping
(which node now gives a replaced node's value, the op counts, the reasons for what stayed stock).
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from typing import Any, Callable, Sequence

import torch
from torch import fx
from torch.export import ExportedProgram

from dcx.errors import DcxError

A = torch.ops.aten
D = None  # torch.ops.dcx, once the training op library is loaded (_ops)

# Stock ops a dcx kernel covers: each one left in the graph is reported, with its reason; so is every
# anchor a rule looked at and declined (a norm whose backward stayed stock).
COVERED = {
    A.convolution.default, A.convolution_backward.default, A.addmm.default, A.mm.default,
    A._log_softmax.default, A.max_pool2d_with_indices.default, A.max_pool2d_with_indices_backward.default,
    A.avg_pool2d.default, A.avg_pool2d_backward.default, A.index_put.default, A.sigmoid.default,
}


def _ops():
    """``torch.ops.dcx``; a one-line error when the training kernels are not built."""
    global D
    if D is None:
        from dcx.kernels import training

        if not training.is_built():
            raise DcxError(f"--fast-training needs the dcx training kernels: {training.load_error()}")
        D = torch.ops.dcx
    return D


def _reference(name: str) -> Callable:
    """The PyTorch reference of the dcx op ``name`` (``dcx.kernels.ops``): what a matched region must equal."""
    from dcx.kernels.ops import OPS

    return OPS[name].reference


# ---------------------------------------------------------------------------------------------- graph helpers

def _is(node: Any, *targets) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in targets


def _val(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, fx.Node) else node


def _tensor(node: Any, dtype: torch.dtype = torch.float32, dim: int | None = None) -> bool:
    v = _val(node)
    return isinstance(v, torch.Tensor) and v.dtype == dtype and (dim is None or v.dim() == dim)


def _shape(node: Any) -> tuple[int, ...]:
    return tuple(_val(node).shape)


def _strip_alias(node: fx.Node) -> fx.Node:
    while _is(node, A.alias.default):
        node = node.args[0]
    return node


def _is_zero(x: Any) -> bool:
    if isinstance(x, (int, float)):
        return x == 0
    if _is(x, A.scalar_tensor.default) or (_is(x, A.full.default) and list(x.args[0]) == []):
        return x.args[-1] == 0
    return False


def _is_transpose(node: Any) -> bool:
    return _is(node, A.permute.default) and list(node.args[1]) == [1, 0]


def _pair(v: Any, default: int) -> list[int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    if not v:
        return [default, default]
    return [int(v[0]), int(v[-1])]


def _target_name(target: Any) -> str:
    return str(target).replace("aten::", "aten.").replace(".default", "")


def _getitems(node: fx.Node) -> dict[int, fx.Node]:
    """The ``getitem`` users of a multi-output node, by index."""
    return {u.args[1]: u for u in node.users if _is(u, operator.getitem)}


def _alias_users(node: fx.Node) -> list[fx.Node]:
    out = []
    for u in node.users:
        out.extend(_alias_users(u) if _is(u, A.alias.default) else [u])
    return out


def _descendant(start: fx.Node, want: Callable[[fx.Node], bool], depth: int) -> fx.Node | None:
    """The one node ``want`` picks among the users of ``start`` at the nearest depth (up to ``depth``)."""
    frontier = [start]
    for _ in range(depth):
        frontier = [u for n in frontier for u in n.users]
        found = [n for n in frontier if want(n)]
        if len(found) == 1:
            return found[0]
    return None


def _single_relu(node: fx.Node) -> fx.Node:
    """The ``relu`` that alone reads ``node`` (folded into the dcx forward kernel), else ``node`` itself."""
    return next(iter(node.users)) if len(node.users) == 1 and _is(next(iter(node.users)), A.relu.default) else node


# ---------------------------------------------------------------------------------------------- rules

class Rule:
    """One op family's rewrite, anchored on the nodes whose target is in ``targets``.

    ``match`` finds the region around an anchor: the matched region (any object ``check`` and ``emit``
    take), a reason (str) to decline the anchor with, or None when the anchor is not this rule's (a
    later rule of the same phase may take it; a rule that declines some other node does so itself and
    returns None). ``check`` returns None when the region computes what the dcx op does, else why not
    (the anchor is declined). ``emit`` rewrites (``Rewriter.emit``); it returns False when nothing
    changed and a later rule of the phase may still try the anchor."""

    targets: tuple = ()

    def match(self, rw: "Rewriter", node: fx.Node) -> Any:
        raise NotImplementedError

    def check(self, rw: "Rewriter", m: Any) -> str | None:
        return None

    def emit(self, rw: "Rewriter", m: Any) -> bool | None:
        raise NotImplementedError

    def __call__(self, rw: "Rewriter", node: fx.Node) -> bool:
        """Match, check, emit; True when the anchor is taken or declined (no later rule tries it)."""
        m = self.match(rw, node)
        if m is None:
            return False
        reason = m if isinstance(m, str) else self.check(rw, m)
        if reason is not None:
            rw.decline(node, reason)
            return True
        return self.emit(rw, m) is not False


class Rewriter:
    """One rewrite of one graph: the bookkeeping the rules share and the report."""

    def __init__(self, ep: ExportedProgram):
        self.ep = ep
        self.graph = ep.graph_module.graph
        self.ops: Counter = Counter()
        self.replaced: Counter = Counter()
        self.declined: dict[str, str] = {}  # node name -> why a rule left it alone
        self.replacement: dict[fx.Node, fx.Node] = {}  # a replaced node -> the node that now gives its value
        self.leave: set[fx.Node] = set()  # nodes no rule touches (the frozen region XNNPACK takes)
        from torch._guards import detect_fake_mode

        self.fake_mode = detect_fake_mode([n.meta.get("val") for n in self.graph.nodes if n.op == "placeholder"])

    # ------------------------------------------------------------------ building nodes

    def _order(self) -> dict[fx.Node, int]:
        return {n: i for i, n in enumerate(self.graph.nodes)}

    def emit(self, op, args: tuple, replaces: Sequence[fx.Node], outputs: Sequence[fx.Node | None]) -> bool:
        """Insert ``op(*args)`` after its last input and point the users of each ``outputs[i]`` (None: that
        output unused) at result ``i`` (at the result itself for single-output ops). False, and nothing
        changed, when some user comes before the inputs are all available."""
        args = tuple(self.resolve(a) for a in args)
        order = self._order()
        inputs = [a for a in args if isinstance(a, fx.Node)]
        anchor = max(inputs, key=order.__getitem__)
        users = [u for o in outputs if o is not None for u in o.users]
        if not users:  # already replaced by another rewrite: nothing reads it any more
            return False
        if min(order[u] for u in users) <= order[anchor]:
            self.decline(replaces[0], "its gradient is read before all the fused kernel's inputs exist")
            return False
        vals = [_val(a) for a in args]
        with self.fake_mode:
            result = op(*vals)
        multi = isinstance(result, tuple)
        with self.graph.inserting_after(anchor):
            node = self.graph.call_function(op, args)
        node.meta["val"] = result
        source = next((o for o in outputs if o is not None), None)
        if source is not None:
            for key in ("stack_trace", "nn_module_stack", "source_fn_stack"):
                if key in source.meta:
                    node.meta[key] = source.meta[key]
        last = node
        for i, out in enumerate(outputs):
            if out is None:
                continue
            if multi:
                with self.graph.inserting_after(last):
                    item = self.graph.call_function(operator.getitem, (node, i))
                item.meta["val"] = result[i]
                last = item
            else:
                item = node
            out.replace_all_uses_with(item)
            self.replacement[out] = item
        name = str(op.overloadpacket._qualified_op_name)
        self.ops[name] += 1
        for r in replaces:
            self.replaced[_target_name(r.target)] += 1
        return True

    def resolve(self, node: Any) -> Any:
        """The node that now gives ``node``'s value (rules hold on to nodes that later rewrites replace)."""
        while isinstance(node, fx.Node) and node in self.replacement:
            node = self.replacement[node]
        return node

    def apply(self, rules: Sequence[Rule], everywhere: bool = False) -> None:
        """Offer each node, in graph order over the graph as it is now, to the rules that target it (in
        their order, until one takes or declines it); ``everywhere``: the frozen region and nodes nothing
        reads too."""
        by_target: dict[Any, list[Rule]] = {}
        for rule in rules:
            for target in rule.targets:
                by_target.setdefault(target, []).append(rule)
        for node in list(self.graph.nodes):
            if node.op != "call_function" or node.target not in by_target:
                continue
            if everywhere or (node.users and node not in self.leave):
                any(rule(self, node) for rule in by_target[node.target])

    def decline(self, node: fx.Node, reason: str) -> None:
        self.declined.setdefault(node.name, reason)

    # ------------------------------------------------------------------ structure

    def cse(self) -> None:
        """Merge identical pure nodes (the joint graph repeats ``unsqueeze``, ``ne`` ...), so that the
        gradient of one layer is one node."""
        seen: dict[tuple, fx.Node] = {}
        for node in list(self.graph.nodes):
            if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
                continue
            if node.target._schema.is_mutable or node.target in (A.empty.memory_format,):
                continue
            key = (node.target, repr(node.args), repr(sorted(node.kwargs.items())))
            if key in seen:
                node.replace_all_uses_with(seen[key])
                self.graph.erase_node(node)
            else:
                seen[key] = node

    def relu_mask(self, g: fx.Node) -> tuple[fx.Node, fx.Node, float, float] | None:
        """``g = where(x <= lo [or x >= hi], 0, grad)`` -> (grad, x, lo, hi): the backward of ReLU (the
        mask reads the ReLU's output) or of ReLU6 / hardtanh (it reads the input)."""
        if not _is(g, A.where.self) or not _is_zero(g.args[1]):
            return None
        cond, grad = g.args[0], g.args[2]
        lo, hi, x = None, math.inf, None
        if _is(cond, A.le.Scalar):
            x, lo = cond.args[0], cond.args[1]
        elif _is(cond, A.bitwise_or.Tensor) and _is(cond.args[0], A.le.Scalar) and _is(cond.args[1], A.ge.Scalar) \
                and cond.args[0].args[0] is cond.args[1].args[0]:
            x, lo, hi = cond.args[0].args[0], cond.args[0].args[1], cond.args[1].args[1]
        if x is None or not isinstance(lo, (int, float)) or not isinstance(grad, fx.Node):
            return None
        x = _strip_alias(x)
        if not (_tensor(x) and _tensor(grad) and _shape(x) == _shape(grad)):
            return None
        return grad, x, float(lo), float(hi)

    def folded_mask(self, g: fx.Node, consumers: set[fx.Node]) -> tuple[fx.Node, fx.Node | None]:
        """(gradient, relu_out): a ReLU mask (lo 0, no hi) that only ``consumers`` read is folded into
        the consumer's kernel; otherwise the gradient is used as it is."""
        m = self.relu_mask(g)
        if m and m[2] == 0.0 and m[3] == math.inf and set(g.users) <= consumers:
            return m[0], m[1]
        return g, None

    def conv_params(self, node: fx.Node, x: fx.Node, w: fx.Node) -> tuple | None:
        """(stride, padding, dilation, groups) when a dcx kernel takes this ``convolution`` or
        ``convolution_backward``, else None (``node`` declined)."""
        stride, padding, dilation, transposed, out_pad, groups = node.args[3:9] if node.target is A.convolution.default \
            else node.args[4:10]
        if not (_tensor(x, dim=4) and _tensor(w, dim=4)):
            return self.decline(node, "only 2-D float32 convolutions (NCHW) have a dcx kernel")
        if transposed or any(out_pad):
            return self.decline(node, "transposed convolutions have no dcx kernel")
        if len(padding) != 2 or isinstance(padding, str):
            return self.decline(node, "padding must be two integers")
        return _pair(stride, 1), _pair(padding, 0), _pair(dilation, 1), int(groups)

    # ------------------------------------------------------------------ the numerical check

    def agrees(self, outputs: list[fx.Node], samples: list[dict], reference: Callable) -> bool:
        """The matched nodes, evaluated from the sample inputs alone, equal the reference."""
        for env in samples:
            env = dict(env)
            try:
                got = [self.evaluate(o, env) for o in outputs]
            except LookupError:  # the region reads something besides the sample inputs
                return False
            want = reference(env)
            for g, w in zip(got, want):
                if g.shape != w.shape or not torch.allclose(g.float(), w.float(), rtol=1e-4, atol=1e-5, equal_nan=True):
                    return False
        return True

    def evaluate(self, node: Any, env: dict) -> Any:
        if not isinstance(node, fx.Node):
            if isinstance(node, (list, tuple)):
                return type(node)(self.evaluate(a, env) for a in node)
            return node
        if node in env:
            return env[node]
        if node.op != "call_function":
            raise LookupError(node.name)
        args = self.evaluate(node.args, env)
        kwargs = {k: self.evaluate(v, env) for k, v in node.kwargs.items()}
        env[node] = node.target(*args, **kwargs)
        return env[node]

    # ------------------------------------------------------------------ the end

    def finish(self) -> None:
        self.graph.eliminate_dead_code()
        out = next(n for n in self.graph.nodes if n.op == "output")
        names = [a.name if isinstance(a, fx.Node) else None for a in out.args[0]]
        for spec, name in zip(self.ep.graph_signature.output_specs, names):
            if name is not None and hasattr(spec.arg, "name"):
                spec.arg.name = name
        self.graph.lint()
        self.ep.graph_module.recompile()

    def report(self) -> dict:
        left = [{"node": n.name, "op": _target_name(n.target),
                 "reason": self.declined.get(n.name, "no dcx pattern matched this node")}
                for n in self.graph.nodes if n.op == "call_function" and n not in self.leave
                and (n.target in COVERED or n.name in self.declined)]
        frozen = [{"node": n.name, "op": _target_name(n.target)} for n in self.graph.nodes
                  if n in self.leave and n.target in COVERED]
        stock = Counter(_target_name(n.target) for n in self.graph.nodes
                        if n.op == "call_function" and n.target is not operator.getitem
                        and not str(n.target).startswith("dcx"))
        return {"ops": dict(sorted(self.ops.items())), "replaced": dict(sorted(self.replaced.items())),
                "left_alone": left, "left_for_xnnpack": frozen, "stock_ops": dict(sorted(stock.items()))}

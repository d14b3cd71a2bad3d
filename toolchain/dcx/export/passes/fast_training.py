"""Fast training: rewrite a joint forward+backward graph onto the dcx training kernels (ExecuTorch).

Stock ExecuTorch runs a training program's joint graph on its portable kernels, op by op: the
backward of a ReLU layer alone is ``le``, ``where``, two ``permute_copy`` and two ``mm`` calls.
This pass replaces what it recognizes with ops of the dcx training kernel library (kernels/csrc/tk_*,
``torch.ops.dcx.*``; ExecuTorch kernels in ``libdcx_train_executorch.so``):

- ``convolution`` (+ ``relu``) -> ``dcx::conv2d``; ``convolution_backward`` (with the ReLU mask of
  its output gradient folded in) -> ``dcx::conv2d_backward``; depthwise and grouped too.
- a MobileNet layer, ``convolution`` -> eval-mode batch norm -> clamp (ReLU6), forward and backward
  -> ``dcx::conv2d_bn`` / ``dcx::conv2d_bn_backward`` (the norm's affine gradients included).
- ``addmm``/``mm`` with a transposed weight (+ ``relu``) -> ``dcx::linear``; the backward ``mm``s
  and bias ``sum`` of that layer (with its ReLU mask) -> one ``dcx::linear_backward``.
- the mean cross entropy (``_log_softmax`` + NLL) and the mean binary cross entropy with logits,
  loss and gradient -> ``dcx::cross_entropy_loss`` / ``dcx::bce_with_logits_loss``.
- ReLU / ReLU6 masks left over -> ``dcx::threshold_backward``; max / average pooling and their
  backward -> ``dcx::max_pool2d*`` / ``dcx::avg_pool2d*``, the global average pool (``mean`` over
  H and W) and its gradient (``expand`` then ``div``) among them; the dense embedding gradient
  (``index_put`` into zeros) -> ``dcx::embedding_backward``; the decomposed backward of an eval-mode
  batch norm (frozen statistics) and of a layer norm over the last dim -> ``dcx::batch_norm_frozen_backward``
  / ``dcx::layer_norm_backward``.

Decomposed regions (the losses, the embedding gradient, the norms' backward) are matched by structure, then checked:
the pass evaluates the matched nodes and the dcx op's reference (``dcx.kernels.training_reference``)
on random data of the graph's shapes and rewrites only when they agree. A node whose shape or dtype
no kernel takes stays a stock node, and the report says which and why: an unsupported case never
becomes a run-time failure or a wrong answer. The report (``ops``, ``replaced``, ``left_alone``,
``left_for_xnnpack``, ``stock_ops``) goes
to the manifest; the artifact then requires the ``dcx_train_executorch`` kernel library. With
``leave_frozen`` the forward of frozen layers is left as it is, for XNNPACK (``frozen_xnnpack``),
but for a frozen RGB stem, which the dcx stem kernel runs faster (``frozen_stems``).
"""

from __future__ import annotations

import copy
import math
import operator
from collections import Counter
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import fx
from torch.export import ExportedProgram

from dcx.errors import DcxError
from dcx.export.passes import PassContext
from dcx.export.passes.frozen_xnnpack import frozen_region

A = torch.ops.aten
D = None  # torch.ops.dcx, once the training op library is loaded (FastTraining.rewrite)

# Stock ops a dcx kernel covers: each one left in the graph is reported, with its reason; so is every
# anchor a rule looked at and declined (a norm whose backward stayed stock).
COVERED = {
    A.convolution.default, A.convolution_backward.default, A.addmm.default, A.mm.default,
    A._log_softmax.default, A.max_pool2d_with_indices.default, A.max_pool2d_with_indices_backward.default,
    A.avg_pool2d.default, A.avg_pool2d_backward.default, A.index_put.default, A.sigmoid.default,
}


def _ops():
    global D
    if D is None:
        from dcx.kernels._library import load_training_ops, training_load_error

        if not load_training_ops():
            raise DcxError(f"--fast-training needs the dcx training kernels: {training_load_error()}")
        D = torch.ops.dcx
    return D


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


class _Rewriter:
    """One rewrite of one graph: the rules, the bookkeeping and the report."""

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

    def apply(self, rules: dict[Any, Callable[[fx.Node], None]]) -> None:
        """Run the rule of each node's target, in graph order, over the graph as it is now."""
        for node in list(self.graph.nodes):
            if node.op == "call_function" and node.target in rules and node.users and node not in self.leave:
                rules[node.target](node)

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

    # ------------------------------------------------------------------ losses

    def losses(self) -> None:
        for node in list(self.graph.nodes):
            if _is(node, A._log_softmax.default):
                self.cross_entropy(node)
            elif _is(node, A.sigmoid.default):
                self.bce(node)

    def cross_entropy(self, lsm: fx.Node) -> None:
        z, dim = lsm.args[0], lsm.args[1]
        if not (_tensor(z, dim=2) and dim in (1, -1)):
            return self.decline(lsm, "log_softmax over a dim other than the last of [n, classes] logits")
        gathers = [u for u in lsm.users if _is(u, A.gather.default)]
        exps = [u for u in self._alias_users(lsm) if _is(u, A.exp.default)]
        if len(gathers) != 1 or len(exps) != 1:
            return self.decline(lsm, "not the NLL of a cross entropy with its gradient")
        idx = gathers[0].args[2]  # unsqueeze(where(ne(y, ignore), y, 0), 1)
        w = idx.args[0] if _is(idx, A.unsqueeze.default) else None
        if not (_is(w, A.where.self) and _is(w.args[0], A.ne.Scalar) and w.args[1] is w.args[0].args[0]):
            return self.decline(lsm, "class targets not found")
        y, ignore = w.args[1], int(w.args[0].args[1])
        loss = self._descendant(gathers[0], lambda n: _is(n, A.div.Tensor) and not n.args[0].meta["val"].shape, 6)
        grad = self._descendant(exps[0], lambda n: _is(n, A.sub.Tensor) and _shape(n) == _shape(z), 2)
        if loss is None or grad is None or not _tensor(y, torch.int64, 1):
            return self.decline(lsm, "loss or gradient of the cross entropy not found (int64 targets needed)")
        n, c = _shape(z)
        samples = []
        for trial in range(2):
            yv = torch.randint(0, c, (n,))
            if trial:
                yv[:: max(1, n // 3)] = ignore
            samples.append({z: torch.randn(n, c) * 3, y: yv})
        ref = _reference("cross_entropy_loss")
        if not self._agrees([loss, grad], samples, lambda e: ref(e[z], e[y], ignore)):
            return self.decline(lsm, "the matched nodes do not compute the mean cross entropy and its gradient")
        self.emit(_ops().cross_entropy_loss.default, (z, y, ignore), [lsm], [loss, grad])

    def bce(self, sig: fx.Node) -> None:
        z = sig.args[0]
        subs = [u for u in sig.users if _is(u, A.sub.Tensor) and u.args[0] is sig]
        if not (_tensor(z, dim=1) and len(subs) == 1 and _tensor(subs[0].args[1]) and
                _shape(subs[0].args[1]) == _shape(z)):
            return self.decline(sig, "not the gradient of a binary cross entropy with logits over [n] logits")
        t = subs[0].args[1]
        grad = self._descendant(subs[0], lambda n: _is(n, A.div.Scalar) and _shape(n) == _shape(z), 2)
        loss = next((u for m in z.users if _is(m, A.mul.Tensor) for s in m.users if _is(s, A.sub.Tensor)
                     for u in s.users if _is(u, A.mean.default)), None)
        if loss is None or grad is None:
            return self.decline(sig, "loss or gradient of the binary cross entropy not found")
        n = _shape(z)[0]
        samples = [{z: torch.randn(n) * 4, t: (torch.rand(n) < 0.5).float()}, {z: torch.randn(n), t: torch.rand(n)}]
        ref = _reference("bce_with_logits_loss")
        if not self._agrees([loss, grad], samples, lambda e: ref(e[z], e[t])):
            return self.decline(sig, "the matched nodes do not compute the mean BCE with logits and its gradient")
        self.emit(_ops().bce_with_logits_loss.default, (z, t), [sig], [loss, grad])

    def _alias_users(self, node: fx.Node) -> list[fx.Node]:
        out = []
        for u in node.users:
            out.extend(self._alias_users(u) if _is(u, A.alias.default) else [u])
        return out

    @staticmethod
    def _descendant(start: fx.Node, want: Callable[[fx.Node], bool], depth: int) -> fx.Node | None:
        frontier = [start]
        for _ in range(depth):
            frontier = [u for n in frontier for u in n.users]
            found = [n for n in frontier if want(n)]
            if len(found) == 1:
                return found[0]
        return None

    def _agrees(self, outputs: list[fx.Node], samples: list[dict], reference: Callable) -> bool:
        """The matched nodes, evaluated from the sample inputs alone, equal the reference."""
        for env in samples:
            env = dict(env)
            try:
                got = [self._evaluate(o, env) for o in outputs]
            except LookupError:  # the region reads something besides the sample inputs
                return False
            want = reference(env)
            for g, w in zip(got, want):
                if g.shape != w.shape or not torch.allclose(g.float(), w.float(), rtol=1e-4, atol=1e-5, equal_nan=True):
                    return False
        return True

    def _evaluate(self, node: Any, env: dict) -> Any:
        if not isinstance(node, fx.Node):
            if isinstance(node, (list, tuple)):
                return type(node)(self._evaluate(a, env) for a in node)
            return node
        if node in env:
            return env[node]
        if node.op != "call_function":
            raise LookupError(node.name)
        args = self._evaluate(node.args, env)
        kwargs = {k: self._evaluate(v, env) for k, v in node.kwargs.items()}
        env[node] = node.target(*args, **kwargs)
        return env[node]

    # ------------------------------------------------------------------ linear layers

    def linear_sites(self) -> list[tuple[fx.Node, fx.Node, fx.Node, fx.Node | None, fx.Node]]:
        """(forward node, x, weight, bias, transposed weight) of every ``addmm(b, x, W^T)`` / ``mm(x, W^T)``."""
        sites = []
        for node in self.graph.nodes:
            if _is(node, A.addmm.default) and len(node.args) == 3 and not node.kwargs:
                b, x, wt = node.args
            elif _is(node, A.mm.default):
                (x, wt), b = node.args, None
            else:
                continue
            if node in self.leave or not _is_transpose(wt) or _is_transpose(x):
                continue
            w = wt.args[0]
            if not (_tensor(x, dim=2) and _tensor(w, dim=2) and (b is None or _tensor(b, dim=1))):
                self.decline(node, "a linear layer needs float32 x [n, in], weight [out, in] and bias [out]")
                continue
            sites.append((node, x, w, b, wt))
        return sites

    def linear_backward(self, site) -> None:
        fwd, x, w, b, wt = site
        # grad W = mm(G^T, x); grad x = mm(G, (W^T)^T); grad b = view(sum(G, [0], keepdim), [out])
        gw = next((u for u in x.users if _is(u, A.mm.default) and u.args[1] is x and _is_transpose(u.args[0])), None)
        if gw is None:
            return  # no weight gradient: a frozen layer
        g = gw.args[0].args[0]
        if not (_tensor(g, dim=2) and _shape(g) == (_shape(x)[0], _shape(w)[0])):
            return self.decline(gw, "the output gradient of this linear layer is not a float32 [n, out] tensor")
        gx = next((u for u in g.users if _is(u, A.mm.default) and u.args[0] is g and _is_transpose(u.args[1])
                   and u.args[1].args[0] is wt), None)
        s = next((u for u in g.users if _is(u, A.sum.dim_IntList) and list(u.args[1]) == [0]), None) if b is not None else None
        gb = next(iter(s.users)) if s is not None and len(s.users) == 1 else None
        if gb is not None and not (_is(gb, A.view.default) and _shape(gb) == (_shape(w)[0],)):
            gb = None
        grad, relu_out = self.folded_mask(g, {gw.args[0], *(n for n in (gx, s) if n is not None)})
        replaces = [n for n in (gw, gx, s, g if relu_out is not None else None) if n is not None]
        self.emit(_ops().linear_backward.default, (grad, x, w, relu_out, gx is not None, gb is not None), replaces,
                  [gx, gw, gb])

    def linear_forward(self, site) -> None:
        fwd, x, w, b, _ = site
        if not fwd.users:  # a backward product linear_backward took over
            return
        relu = len(fwd.users) == 1 and _is(next(iter(fwd.users)), A.relu.default)
        out = next(iter(fwd.users)) if relu else fwd
        self.emit(_ops().linear.default, (x, w, b, relu), [fwd, *([out] if relu else [])], [out])

    # ------------------------------------------------------------------ convolutions

    def conv_params(self, node: fx.Node, x: fx.Node, w: fx.Node) -> tuple | None:
        """(stride, padding, dilation, groups) when a dcx kernel takes this convolution, else None (declined)."""
        stride, padding, dilation, transposed, out_pad, groups = node.args[3:9] if node.target is A.convolution.default \
            else node.args[4:10]
        if not (_tensor(x, dim=4) and _tensor(w, dim=4)):
            return self.decline(node, "only 2-D float32 convolutions (NCHW) have a dcx kernel")
        if transposed or any(out_pad):
            return self.decline(node, "transposed convolutions have no dcx kernel")
        if len(padding) != 2 or isinstance(padding, str):
            return self.decline(node, "padding must be two integers")
        return _pair(stride, 1), _pair(padding, 0), _pair(dilation, 1), int(groups)

    def conv_backward(self, node: fx.Node) -> None:
        g, x, w, bias_sizes = node.args[:4]
        mask = list(node.args[10])
        params = self.conv_params(node, x, w)
        if params is None:
            return
        if not mask[1]:
            return self.decline(node, "a convolution backward without a weight gradient stays stock")
        items = {u.args[1]: u for u in node.users if _is(u, operator.getitem)}
        grad, relu_out = self.folded_mask(g, {node})
        if not _tensor(grad):
            return self.decline(node, "the output gradient is not float32")
        self.emit(_ops().conv2d_backward.default, (grad, x, w, relu_out, *params, bool(mask[0]), bool(mask[2])),
                  [node, *([g] if relu_out is not None else [])], [items.get(0), items.get(1), items.get(2)])

    def conv_forward(self, node: fx.Node) -> None:
        x, w, b = node.args[:3]
        params = self.conv_params(node, x, w)
        if params is None:
            return
        if b is not None and not _tensor(b, dim=1):
            return self.decline(node, "the bias is not a float32 vector")
        relu = len(node.users) == 1 and _is(next(iter(node.users)), A.relu.default)
        out = next(iter(node.users)) if relu else node
        self.emit(_ops().conv2d.default, (x, w, b, *params, relu), [node, *([out] if relu else [])], [out])

    def frozen_stems(self, region: set[fx.Node]) -> set[fx.Node]:
        """The nodes of the frozen ``region`` the dcx stem kernel runs rather than XNNPACK: a 3x3
        convolution (padding 1, stride 1 or 2, no groups) straight over a user input of 2 to 4 channels
        (the shapes ``is_stem3x3`` in kernels/csrc/tk_kernel_impl.h takes, one channel excepted), with
        the batch norm and clamp, or the ReLU, that fuse into it. XNNPACK would transpose that
        input to NHWC and then run a GEMM with K = 27; the dcx kernel reads the NCHW rows as they are
        (for the frozen MobileNet mimic, the delegate's time fell by more than the stem costs on dcx).
        A one-channel input needs no transpose, and there XNNPACK measured faster (the 28x28 mimic)."""
        users = set(self.ep.graph_signature.user_inputs)
        taken: set[fx.Node] = set()
        for conv in region:
            if not _is(conv, A.convolution.default) or conv.args[0].op != "placeholder" or conv.args[0].name not in users:
                continue
            stride, padding, dilation, transposed, _, groups = conv.args[3:9]
            shape = _shape(conv.args[1])
            if not (len(shape) == 4 and 2 <= shape[1] <= 4 and shape[2:] == (3, 3) and _pair(padding, 0) == [1, 1]
                    and _pair(dilation, 1) == [1, 1] and _pair(stride, 1) in ([1, 1], [2, 2]) and not transposed
                    and groups == 1):
                continue
            taken.add(conv)
            only = next(iter(conv.users)) if len(conv.users) == 1 else None
            fused = self._bn_act(only) if _is(only, A._native_batch_norm_legit_no_training.default) else None
            if fused is not None:
                taken |= {only, fused[0], fused[1]}
            elif _is(only, A.relu.default):
                taken.add(only)
        return taken

    # ------------------------------------------------------------------ pooling, masks, embeddings

    # schema argument names of the pooling ops, after (grad_output,) for the backward ones
    _MAX_POOL = ("self", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "indices")
    _AVG_POOL = ("self", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")

    def pool(self, node: fx.Node) -> None:
        backward = node.target in (A.max_pool2d_with_indices_backward.default, A.avg_pool2d_backward.default)
        is_max = node.target in (A.max_pool2d_with_indices.default, A.max_pool2d_with_indices_backward.default)
        names = self._MAX_POOL if is_max else self._AVG_POOL
        a = dict(zip(names, node.args[1:] if backward else node.args))
        x, k = a["self"], _pair(a["kernel_size"], 1)
        s, p = (_pair(a["stride"], 1) if a.get("stride") else k), _pair(a.get("padding", 0), 0)
        if a.get("ceil_mode") or (is_max and _pair(a.get("dilation", 1), 1) != [1, 1]) or a.get("divisor_override"):
            return self.decline(node, "pooling with ceil_mode, dilation or divisor_override has no dcx kernel")
        if not _tensor(x, dim=4) or p[0] * 2 > k[0] or p[1] * 2 > k[1]:
            return self.decline(node, "pooling needs float32 NCHW input and padding at most half the window")
        if is_max and backward:
            self.emit(_ops().max_pool2d_backward.default, (node.args[0], x, a["indices"], k, s, p), [node], [node])
        elif is_max:
            items = {u.args[1]: u for u in node.users if _is(u, operator.getitem)}
            self.emit(_ops().max_pool2d.default, (x, k, s, p), [node], [items.get(0), items.get(1)])
        else:
            include = bool(a.get("count_include_pad", True))
            op, args = ((_ops().avg_pool2d_backward.default, (node.args[0], x, k, s, p, include)) if backward
                        else (_ops().avg_pool2d.default, (x, k, s, p, include)))
            self.emit(op, args, [node], [node])

    def global_mean(self, node: fx.Node) -> None:
        """``mean`` over H and W (kept as 1 x 1) -> ``dcx::avg_pool2d`` with the whole plane as its window."""
        x, dims = node.args[0], node.args[1]
        if _tensor(x, dim=4) and sorted(d % 4 for d in dims) == [2, 3] and len(node.args) > 2 and node.args[2]:
            plane = list(_shape(x)[2:])
            self.emit(_ops().avg_pool2d.default, (x, plane, plane, [0, 0], True), [node], [node])

    def global_mean_backward(self, node: fx.Node) -> None:
        """The gradient of that mean, ``expand(g [n, c, 1, 1], [n, c, H, W]) / (H * W)`` ->
        ``dcx::avg_pool2d_backward`` over the mean's input."""
        spread = node.args[0]
        if not _is(spread, A.expand.default) or not _tensor(spread, dim=4):
            return
        n, c, h, w = _shape(spread)
        if _shape(spread.args[0]) != (n, c, 1, 1) or node.args[1] != h * w:
            return
        means = [m for m in self.graph.nodes if _is(m, A.mean.dim) and _tensor(m.args[0], dim=4)
                 and _shape(m.args[0]) == (n, c, h, w)]
        if means:
            plane = [h, w]
            self.emit(_ops().avg_pool2d_backward.default, (spread.args[0], means[0].args[0], plane, plane, [0, 0], True),
                      [spread, node], [node])

    def mask(self, node: fx.Node) -> None:
        m = self.relu_mask(node)
        if m:
            grad, x, lo, hi = m
            self.emit(_ops().threshold_backward.default, (grad, x, lo, hi), [node], [node])

    def _reshaped_from(self, node: Any, source: fx.Node) -> bool:
        """``node`` is ``source`` put through unsqueeze/view/reshape only (a [C] vector broadcast to [1, C, 1, 1])."""
        while _is(node, A.unsqueeze.default, A.view.default, A.reshape.default):
            node = node.args[0]
        return node is source

    def match_batch_norm_backward(self, rstd: fx.Node) -> dict | str | None:
        """Eval-mode batch norm: ``rsqrt(var + eps)`` anchors grad_x = g * (rstd * w), grad_w =
        sum(g * (x - mean)) * rstd and grad_b = sum(g) over every dim but 1. The matched nodes (not yet
        checked numerically), the reason it is not that backward, or None (no affine batch norm)."""
        add = rstd.args[0]
        if not (_is(add, A.add.Tensor, A.add.Scalar) and isinstance(add.args[1], float) and _tensor(add.args[0], dim=1)):
            return None
        var, eps = add.args
        scale = next((u for u in rstd.users if _is(u, A.mul.Tensor) and u.args[0] is rstd and _tensor(u.args[1], dim=1)), None)
        if scale is None:
            return "a batch norm without an affine weight keeps its stock backward"
        w = scale.args[1]
        gx = next((m for u in self._alias_users(scale) for m in self._reshape_users(u)
                   if _is(m, A.mul.Tensor) and self._reshaped_from(m.args[1], scale)), None)
        gw = next((u for u in rstd.users if _is(u, A.mul.Tensor) and u.args[1] is rstd and _is(u.args[0], A.sum.dim_IntList)), None)
        if gx is None or gw is None:
            return "not the backward of a batch norm with frozen statistics"
        g = gx.args[0]
        centered = gw.args[0].args[0]  # mul(g, sub(x, mean))
        if not (_is(centered, A.mul.Tensor) and centered.args[0] is g and _is(centered.args[1], A.sub.Tensor)):
            return "not the backward of a batch norm with frozen statistics"
        x, mean = centered.args[1].args[0], centered.args[1].args[1]
        while _is(mean, A.unsqueeze.default, A.view.default, A.reshape.default):
            mean = mean.args[0]
        dims = [0, *range(2, len(_shape(g)))] if _tensor(g) else []
        gb = next((u for u in g.users if _is(u, A.sum.dim_IntList) and list(u.args[1]) == dims and len(u.args) == 2), None)
        if not (_tensor(g) and _tensor(x) and _shape(x) == _shape(g) and len(dims) >= 1 and _tensor(mean, dim=1)):
            return "batch norm backward with unsupported shapes or dtypes"
        return {"g": g, "x": x, "w": w, "mean": mean, "var": var, "eps": eps, "gx": gx, "gw": gw, "gb": gb}

    def batch_norm_backward(self, rstd: fx.Node) -> None:
        m = self.match_batch_norm_backward(rstd)
        if isinstance(m, str):
            return self.decline(rstd, m)
        if m is None or self.conv_bn_backward(rstd, m):
            return
        g, x, w, mean, var, eps = (m[k] for k in ("g", "x", "w", "mean", "var", "eps"))
        c = _shape(x)[1]
        samples = [{g: torch.randn(_shape(g)), x: torch.randn(_shape(x)), w: torch.randn(c), mean: torch.randn(c),
                    var: torch.rand(c) + 0.1}]
        ref = _reference("batch_norm_frozen_backward")
        if not self._agrees([m["gx"], m["gw"]], samples, lambda e: ref(e[g], e[x], e[w], e[mean], e[var], eps, True, True)[:2]):
            return self.decline(rstd, "the matched nodes do not compute a frozen batch norm's gradients")
        self.emit(_ops().batch_norm_frozen_backward.default, (g, x, w, mean, var, eps, True, True), [rstd],
                  [m["gx"], m["gw"], m["gb"]])

    # ------------------------------------------------------------------ convolution + batch norm + clamp

    @staticmethod
    def _clamp_of(node: fx.Node) -> tuple[float, float] | None:
        """(low, high) of a ``hardtanh`` (ReLU6 and its kin) with constant bounds."""
        if _is(node, A.hardtanh.default) and all(isinstance(b, (int, float)) for b in node.args[1:3]) and len(node.args) == 3:
            return float(node.args[1]), float(node.args[2])
        return None

    def _bn_act(self, bn: fx.Node) -> tuple[fx.Node, fx.Node, float, float] | None:
        """(output item, clamp node, low, high) of an eval-mode batch norm whose output only a clamp reads,
        besides the clamp's backward mask (``le``/``ge``, directly or through a ``clone``)."""
        items = [u for u in bn.users if _is(u, operator.getitem)]
        if len(items) != 1 or items[0].args[1] != 0 or len(bn.users) != 1:
            return None
        acts = [u for u in items[0].users if self._clamp_of(u)]
        mask_reads = (A.clone.default, A.le.Scalar, A.ge.Scalar)
        if len(acts) != 1 or any(u is not acts[0] and not _is(u, *mask_reads) for u in items[0].users):
            return None
        return items[0], acts[0], *self._clamp_of(acts[0])

    def conv_bn_backward(self, rstd: fx.Node, m: dict) -> bool:
        """The backward of convolution -> frozen batch norm -> clamp (a MobileNet layer) as one
        ``dcx::conv2d_bn_backward``: the clamp's mask, the norm's gradients and the convolution backward.
        False (and nothing changed) when the region is not that."""
        mask = self.relu_mask(m["g"])
        conv = m["x"]
        if mask is None or not _is(conv, A.convolution.default):
            return False
        grad, pre, lo, hi = mask
        bn_out = pre.args[0] if _is(pre, A.clone.default) else pre
        bn = bn_out.args[0] if _is(bn_out, operator.getitem) else None
        if not _is(bn, A._native_batch_norm_legit_no_training.default) or bn.args[0] is not conv \
                or bn.args[3] is not m["mean"] or bn.args[4] is not m["var"] or bn.args[1] is not m["w"]:
            return False
        fused = self._bn_act(bn)
        cbs = [u for u in m["gx"].users if _is(u, A.convolution_backward.default) and u.args[0] is m["gx"]]
        if fused is None or fused[2:] != (lo, hi) or len(cbs) != 1 or len(m["gx"].users) != 1:
            return False
        cb = cbs[0]
        x, w = conv.args[:2]
        params = self.conv_params(cb, x, w)
        if params is None or cb.args[1] is not x or cb.args[2] is not w or list(cb.args[4:10]) != list(conv.args[3:9]):
            return False
        flags = list(cb.args[10])
        if not flags[1] or conv.args[2] is not None:
            return False
        items = {u.args[1]: u for u in cb.users if _is(u, operator.getitem)}
        bn_w, bn_b, mean, var, eps = m["w"], bn.args[2], m["mean"], m["var"], m["eps"]
        c = _shape(conv)[1]
        env = {grad: torch.randn(_shape(grad)), conv: torch.randn(_shape(conv)) * 2, x: torch.randn(_shape(x)),
               w: torch.randn(_shape(w)), bn_w: torch.randn(c), mean: torch.randn(c), var: torch.rand(c) + 0.1}
        env[pre] = F.batch_norm(env[conv], env[mean], env[var], env[bn_w], torch.randn(c), False, 0.0, eps)
        ref = _reference("conv2d_bn_backward")
        outs = [items.get(0), items.get(1), m["gw"], m["gb"]]
        pick = [i for i, n in zip((0, 1, 3, 4), outs) if n is not None]

        def want(e):
            r = ref(e[grad], e[pre].clamp(lo, hi), e[conv], e[x], e[w], e[bn_w], None, e[mean], e[var], eps, *params,
                    lo, hi, bool(flags[0]), False, True)
            return [r[i] for i in pick]

        if not self._agrees([n for n in outs if n is not None], [env], want):
            self.decline(rstd, "the matched nodes do not compute a convolution + frozen batch norm + clamp backward")
            return True
        return self.emit(_ops().conv2d_bn_backward.default,
                         (grad, fused[1], conv, x, w, bn_w, bn_b, mean, var, eps, *params, lo, hi, bool(flags[0]), False,
                          True),
                         [cb, rstd, m["g"]], [items.get(0), items.get(1), None, m["gw"], m["gb"]])

    def conv_bn_forward(self, bn: fx.Node) -> None:
        """convolution -> eval-mode batch norm -> clamp as one ``dcx::conv2d_bn`` (the convolution's output
        kept when its backward reads it; when only ``dcx::conv2d_bn_backward`` reads it, that recovers it
        from the layer's output where it can, and the kernel writes it only where it cannot)."""
        conv = bn.args[0]
        fused = self._bn_act(bn)
        if not _is(conv, A.convolution.default) or fused is None or any(u is not fused[1] for u in fused[0].users):
            return  # the plain convolution rule takes it
        x, w, b = conv.args[:3]
        params = self.conv_params(conv, x, w)
        bn_w, bn_b, mean, var, _, eps = bn.args[1:7]
        if params is None or not all(n is None or _tensor(n, dim=1) for n in (b, bn_w, bn_b, mean, var)) \
                or mean is None or var is None:
            return
        readers = [u for u in conv.users if u is not bn]
        only_dcx = all(u.target is _ops().conv2d_bn_backward.default and u.args[2] is conv
                       and u.args[5:10] == (bn_w, bn_b, mean, var, float(eps))
                       for u in readers)
        keep = bool(readers)
        self.emit(_ops().conv2d_bn.default,
                  (x, w, b, bn_w, bn_b, mean, var, float(eps), *params, *fused[2:], keep, keep and only_dcx),
                  [conv, bn, fused[1]], [conv if keep else None, fused[1]])

    def _reshape_users(self, node: fx.Node) -> list[fx.Node]:
        out = []
        for u in node.users:
            out.extend(self._reshape_users(u) if _is(u, A.unsqueeze.default, A.view.default, A.reshape.default) else [u])
        return out

    def layer_norm_backward(self, ln: fx.Node) -> None:
        """``native_layer_norm`` over the last dim: its saved mean and rstd anchor the decomposed backward."""
        x, shape, w = ln.args[0], list(ln.args[1]), ln.args[2]
        items = {u.args[1]: u for u in ln.users if _is(u, operator.getitem)}
        mean, rstd = items.get(1), items.get(2)
        if mean is None or rstd is None or not rstd.users:
            return  # a frozen layer: no backward
        if len(shape) != 1 or not _tensor(x) or w is None or not _tensor(w, dim=1):
            return self.decline(ln, "layer norm backward is fused for the last dim with an affine weight")
        scaled = [u for u in w.users if _is(u, A.mul.Tensor) and u.args[1] is w]  # g * w
        if len(scaled) != 1:
            return self.decline(ln, "not the backward of a layer norm")
        g = scaled[0].args[0]
        gx = self._descendant(rstd, lambda n: _is(n, A.mul.Tensor) and _tensor(n) and _shape(n) == _shape(x)
                              and _is(n.args[0], A.div.Tensor) and n.args[0].args[0] is rstd, 2)
        rows = list(range(len(_shape(x)) - 1))
        sums = [u for u in g.users if _is(u, A.sum.dim_IntList) and sorted(u.args[1]) == rows]
        gw = next((u for m in g.users if _is(m, A.mul.Tensor) for u in m.users
                   if _is(u, A.sum.dim_IntList) and sorted(u.args[1]) == rows), None)
        if gx is None or not _tensor(g) or _shape(g) != _shape(x):
            return self.decline(ln, "not the backward of a layer norm")
        gb = sums[0] if sums else None
        samples = [{g: torch.randn(_shape(g)), x: torch.randn(_shape(x)) * 2, w: torch.randn(_shape(w))}]
        for env in samples:  # mean and rstd as the forward saves them
            _, env[mean], env[rstd] = A.native_layer_norm(env[x], shape, env[w], None, ln.args[4])
        ref = _reference("layer_norm_backward")
        want = [gx, *(n for n in (gw, gb) if n is not None)]
        pick = [0, *([1] if gw is not None else []), *([2] if gb is not None else [])]
        if not self._agrees(want, samples, lambda e: [ref(e[g], e[x], e[mean], e[rstd], e[w], True, True)[i] for i in pick]):
            return self.decline(ln, "the matched nodes do not compute a layer norm's gradients")
        self.emit(_ops().layer_norm_backward.default, (g, x, mean, rstd, w, True, gw is not None or gb is not None),
                  [ln], [gx, gw, gb])

    def embedding_backward(self, node: fx.Node) -> None:
        # index_put(full([V, D], 0), [clamp(idx)], where(~valid(idx), 0, grad), accumulate=True)
        zeros, indices, values = node.args[:3]
        while _is(values, A.clone.default):  # a copy made contiguous changes no value
            values = values.args[0]
        accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
        if not (accumulate and _is(zeros, A.full.default) and _is_zero(zeros.args[1]) and len(indices) == 1
                and _is(indices[0], A.clamp.default) and _is(values, A.where.self) and _is_zero(values.args[1])):
            return self.decline(node, "not the dense gradient of an embedding table")
        idx, grad = indices[0].args[0], values.args[2]
        pad = next((int(n.args[1]) for n in self._ancestors(values.args[0]) if _is(n, A.ne.Scalar) and n.args[0] is idx), -1)
        num, dim = _shape(node)
        if not (_tensor(grad) and _val(idx).dtype in (torch.int32, torch.int64) and _shape(grad) == (*_shape(idx), dim)):
            return self.decline(node, "embedding gradient with unsupported shapes or index dtype")
        samples = [{idx: torch.randint(0, num, _shape(idx), dtype=_val(idx).dtype), grad: torch.randn(_shape(grad))}]
        ref = _reference("embedding_backward")
        if not self._agrees([node], samples, lambda e: (ref(e[grad], e[idx], num, pad),)):
            return self.decline(node, "the matched nodes do not compute the embedding gradient")
        self.emit(_ops().embedding_backward.default, (grad, idx, num, pad), [node], [node])

    @staticmethod
    def _ancestors(node: fx.Node) -> list[fx.Node]:
        seen, stack = [], [node]
        while stack:
            n = stack.pop()
            if n in seen or n.op != "call_function":
                continue
            seen.append(n)
            stack.extend(n.all_input_nodes)
        return seen

    # ------------------------------------------------------------------ clean-up

    def drop_double_transposes(self) -> None:
        for node in list(self.graph.nodes):
            if _is_transpose(node) and _is_transpose(node.args[0]):
                node.replace_all_uses_with(node.args[0].args[0])

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


def _reference(name: str) -> Callable:
    from dcx.kernels.training_reference import REFERENCES

    return REFERENCES[name]


class FastTraining:
    """Joint forward+backward ``ExportedProgram`` -> the same program on the dcx training kernels.

    ``leave_frozen``: leave the frozen region (``frozen_xnnpack.frozen_region``) as it is, for XNNPACK
    (a stem over RGB input excepted: ``_Rewriter.frozen_stems``)."""

    name = "fast_training"

    def __init__(self, leave_frozen: bool = False):
        self.leave_frozen = leave_frozen

    def run(self, joint: ExportedProgram, ctx: PassContext) -> ExportedProgram:
        ep, report = self.rewrite(joint)
        ctx.report(self.name, **report)
        if report["ops"]:
            from dcx.kernels.training import KERNEL_LIBRARY

            ctx.require(custom_ops=[f"{op}.out" for op in report["ops"]], kernel_libraries=[KERNEL_LIBRARY])
        return ep

    def rewrite(self, joint: ExportedProgram) -> tuple[ExportedProgram, dict]:
        """A rewritten copy of ``joint`` (which is left as it is) and the report of what changed."""
        _ops()
        ep = copy.deepcopy(joint)
        r = _Rewriter(ep)
        r.cse()
        if self.leave_frozen:
            region = frozen_region(ep)
            r.leave = region - r.frozen_stems(region)
        r.losses()
        sites = r.linear_sites()
        for site in sites:
            r.linear_backward(site)
        r.apply({A.convolution_backward.default: r.conv_backward, A.max_pool2d_with_indices_backward.default: r.pool,
                 A.avg_pool2d_backward.default: r.pool, A.index_put.default: r.embedding_backward,
                 A.div.Scalar: r.global_mean_backward,
                 A.rsqrt.default: r.batch_norm_backward, A.native_layer_norm.default: r.layer_norm_backward})
        r.graph.eliminate_dead_code()  # the masks folded above lose their last users
        r.apply({A.where.self: r.mask})
        for site in sites:
            r.linear_forward(site)
        r.apply({A._native_batch_norm_legit_no_training.default: r.conv_bn_forward})
        r.graph.eliminate_dead_code()  # the convolutions fused above lose their last (dead) users
        r.apply({A.convolution.default: r.conv_forward, A.max_pool2d_with_indices.default: r.pool,
                 A.avg_pool2d.default: r.pool, A.mean.dim: r.global_mean})
        r.drop_double_transposes()
        r.finish()
        return ep, r.report()

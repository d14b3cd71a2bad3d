"""The mean losses, loss and gradient together: cross entropy -> ``dcx::cross_entropy_loss``, binary
cross entropy with logits -> ``dcx::bce_with_logits_loss``.

Autograd decomposes both into a dozen stock nodes (``_log_softmax``, ``gather``, ``exp``, ``sub`` ...;
``sigmoid``, ``mul``, ``mean`` ...) that no single stock kernel runs; they are matched by structure
from the one node each loss starts with, then checked against the dcx op's reference on random data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from .rewriter import A, Rule, _alias_users, _descendant, _is, _ops, _reference, _shape, _tensor


@dataclass(frozen=True)
class CrossEntropy(Rule):
    """``_log_softmax`` over the classes of [n, classes] logits, the NLL of int64 targets (with an ignore
    index) and its gradient (``exp`` of the log-softmax minus the one-hot) -> one kernel call."""

    targets = (A._log_softmax.default,)

    def match(self, rw, lsm: fx.Node):
        z, dim = lsm.args[0], lsm.args[1]
        if not (_tensor(z, dim=2) and dim in (1, -1)):
            return "log_softmax over a dim other than the last of [n, classes] logits"
        gathers = [u for u in lsm.users if _is(u, A.gather.default)]
        exps = [u for u in _alias_users(lsm) if _is(u, A.exp.default)]
        if len(gathers) != 1 or len(exps) != 1:
            return "not the NLL of a cross entropy with its gradient"
        idx = gathers[0].args[2]  # unsqueeze(where(ne(y, ignore), y, 0), 1)
        w = idx.args[0] if _is(idx, A.unsqueeze.default) else None
        if not (_is(w, A.where.self) and _is(w.args[0], A.ne.Scalar) and w.args[1] is w.args[0].args[0]):
            return "class targets not found"
        y, ignore = w.args[1], int(w.args[0].args[1])
        loss = _descendant(gathers[0], lambda n: _is(n, A.div.Tensor) and not n.args[0].meta["val"].shape, 6)
        grad = _descendant(exps[0], lambda n: _is(n, A.sub.Tensor) and _shape(n) == _shape(z), 2)
        if loss is None or grad is None or not _tensor(y, torch.int64, 1):
            return "loss or gradient of the cross entropy not found (int64 targets needed)"
        return lsm, z, y, ignore, loss, grad

    def check(self, rw, m):
        _, z, y, ignore, loss, grad = m
        n, c = _shape(z)
        samples = []
        for trial in range(2):
            yv = torch.randint(0, c, (n,))
            if trial:
                yv[:: max(1, n // 3)] = ignore
            samples.append({z: torch.randn(n, c) * 3, y: yv})
        ref = _reference("cross_entropy_loss")
        if not rw.agrees([loss, grad], samples, lambda e: ref(e[z], e[y], ignore)):
            return "the matched nodes do not compute the mean cross entropy and its gradient"
        return None

    def emit(self, rw, m):
        lsm, z, y, ignore, loss, grad = m
        return rw.emit(_ops().cross_entropy_loss.default, (z, y, ignore), [lsm], [loss, grad])


@dataclass(frozen=True)
class BinaryCrossEntropy(Rule):
    """``sigmoid`` of [n] logits whose gradient is ``(sigmoid(z) - t) / n`` and whose loss is the
    ``mean`` of ``(1 - t) * z ...`` -> one kernel call."""

    targets = (A.sigmoid.default,)

    def match(self, rw, sig: fx.Node):
        z = sig.args[0]
        subs = [u for u in sig.users if _is(u, A.sub.Tensor) and u.args[0] is sig]
        if not (_tensor(z, dim=1) and len(subs) == 1 and _tensor(subs[0].args[1]) and
                _shape(subs[0].args[1]) == _shape(z)):
            return "not the gradient of a binary cross entropy with logits over [n] logits"
        t = subs[0].args[1]
        grad = _descendant(subs[0], lambda n: _is(n, A.div.Scalar) and _shape(n) == _shape(z), 2)
        loss = next((u for m in z.users if _is(m, A.mul.Tensor) for s in m.users if _is(s, A.sub.Tensor)
                     for u in s.users if _is(u, A.mean.default)), None)
        if loss is None or grad is None:
            return "loss or gradient of the binary cross entropy not found"
        return sig, z, t, loss, grad

    def check(self, rw, m):
        _, z, t, loss, grad = m
        n = _shape(z)[0]
        samples = [{z: torch.randn(n) * 4, t: (torch.rand(n) < 0.5).float()}, {z: torch.randn(n), t: torch.rand(n)}]
        ref = _reference("bce_with_logits_loss")
        if not rw.agrees([loss, grad], samples, lambda e: ref(e[z], e[t])):
            return "the matched nodes do not compute the mean BCE with logits and its gradient"
        return None

    def emit(self, rw, m):
        sig, z, t, loss, grad = m
        return rw.emit(_ops().bce_with_logits_loss.default, (z, t), [sig], [loss, grad])

"""Fast training: rewrite a joint forward+backward graph onto the dcx training kernels (ExecuTorch).

Stock ExecuTorch runs a training program's joint graph on its portable kernels, op by op: the
backward of a ReLU layer alone is ``le``, ``where``, two ``permute_copy`` and two ``mm`` calls.
This pass replaces what it recognizes with ops of the dcx training kernel library (kernels/training/,
``torch.ops.dcx.*``; ExecuTorch kernels in ``libdcx_training_executorch.so``). It is a list of rules,
one module per op family, each a ``Rule`` (``rewriter.py``: match -> check -> emit over a shared core):

- ``losses``: the mean cross entropy (``_log_softmax`` + NLL) and the mean binary cross entropy with
  logits, loss and gradient -> ``dcx::cross_entropy_loss`` / ``dcx::bce_with_logits_loss``.
- ``linear``: ``addmm``/``mm`` with a transposed weight (+ ``relu``) -> ``dcx::linear``; the backward
  ``mm``s and bias ``sum`` of that layer (with its ReLU mask) -> one ``dcx::linear_backward``.
- ``conv``: ``convolution`` (+ ``relu``) -> ``dcx::conv2d``; ``convolution_backward`` (with the ReLU mask
  of its output gradient folded in) -> ``dcx::conv2d_backward``; depthwise and grouped too.
- ``conv_bn``: a MobileNet layer, ``convolution`` -> eval-mode batch norm -> clamp (ReLU6), forward and
  backward -> ``dcx::conv2d_bn`` / ``dcx::conv2d_bn_backward`` (the norm's affine gradients included);
  the decomposed backward of an eval-mode batch norm alone -> ``dcx::batch_norm_frozen_backward``.
- ``conv_bn_batch``: the same layer in training mode, its norm on the batch's statistics (the elementary ops of
  ``dcx.passes.batch_statistics``), clamp ReLU6, ReLU or none, forward and backward ->
  ``dcx::conv2d_bn_batch_stats`` / ``dcx::conv2d_bn_batch_stats_backward``; the running statistics' update
  stays stock, on the fused forward's mean and variance.
- ``pool`` and ``mean``: max / average pooling and their backward -> ``dcx::max_pool2d*`` /
  ``dcx::avg_pool2d*``, the global average pool (``mean`` over H and W) and its gradient (``expand``
  then ``div``) among them.
- ``mask``: ReLU / ReLU6 masks left over -> ``dcx::threshold_backward``.
- ``layer_norm``, ``embedding``: the decomposed backward of a layer norm over the last dim and the dense
  embedding gradient (``index_put`` into zeros) -> ``dcx::layer_norm_backward`` / ``dcx::embedding_backward``.

Decomposed regions (the losses, the embedding gradient, the norms' backward) are matched by structure, then checked:
the rule evaluates the matched nodes and the dcx op's reference (``dcx.kernels.ops``)
on random data of the graph's shapes and rewrites only when they agree. A node whose shape or dtype
no kernel takes stays a stock node, and the report says which and why: an unsupported case never
becomes a run-time failure or a wrong answer. The report (``ops``, ``replaced``, ``left_alone``,
``left_for_xnnpack``, ``stock_ops``) goes
to the manifest; the artifact then requires the ``dcx_training_executorch`` kernel library. With
``leave_frozen`` the forward of frozen layers is left as it is, for XNNPACK (``frozen_xnnpack``),
but for a frozen RGB stem, which the dcx stem kernel runs faster (``conv_bn.frozen_stems``).

The order of ``PHASES`` is part of the behaviour: a backward rule folds the ReLU mask the forward
rules would otherwise see, the fused convolution + batch norm rules run before the plain ones, and the
forward rules see which outputs only a dcx backward still reads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch.export import ExportedProgram

from dcx.passes import PassContext
from dcx.backends.executorch.passes.frozen_xnnpack import frozen_region

from .conv import ConvBackward, ConvForward
from .conv_bn import ConvBnBackward, ConvBnForward, FrozenBatchNormBackward, frozen_stems
from .conv_bn_batch import ConvBnBatchBackward, ConvBnBatchForward
from .embedding import EmbeddingBackward
from .layer_norm import LayerNormBackward
from .linear import LinearBackward, LinearForward
from .losses import BinaryCrossEntropy, CrossEntropy
from .mask import ReluMask
from .mean import GlobalMean, GlobalMeanBackward
from .pool import Pool2d
from .rewriter import COVERED, Rewriter, Rule, _ops
from .transposes import DoubleTranspose

__all__ = ["COVERED", "FastTraining", "PHASES", "Phase", "Rewriter", "Rule"]


@dataclass(frozen=True)
class Phase:
    """Rules applied together in one walk over the graph (``Rewriter.apply``); ``everywhere``: the frozen
    region and unread nodes too; ``dce``: drop what the phase left dead before the next one."""

    name: str
    rules: tuple[Rule, ...]
    everywhere: bool = False
    dce: bool = False


PHASES = (
    Phase("losses", (CrossEntropy(), BinaryCrossEntropy()), everywhere=True),
    Phase("linear backward", (LinearBackward(),)),
    # a convolution + batch norm backward is tried before the batch norm's alone; the masks folded here
    # lose their last users (dce)
    Phase("backward", (ConvBackward(), Pool2d(backward=True), EmbeddingBackward(), GlobalMeanBackward(),
                       ConvBnBackward(), FrozenBatchNormBackward(), ConvBnBatchBackward(), LayerNormBackward()),
          dce=True),
    Phase("masks", (ReluMask(),)),
    Phase("linear forward", (LinearForward(),)),
    Phase("convolution + batch norm forward", (ConvBnForward(), ConvBnBatchForward()), dce=True),  # the fused convolutions' dead users
    Phase("forward", (ConvForward(), Pool2d(), GlobalMean())),
    Phase("clean-up", (DoubleTranspose(),), everywhere=True),
)


class FastTraining:
    """Joint forward+backward ``ExportedProgram`` -> the same program on the dcx training kernels.

    ``leave_frozen``: leave the frozen region (``frozen_xnnpack.frozen_region``) as it is, for XNNPACK
    (a stem over RGB input excepted: ``conv_bn.frozen_stems``)."""

    name = "fast_training"
    phases: tuple[Phase, ...] = PHASES  # a test sets one rule's phase on an instance

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
        r = Rewriter(ep)
        r.cse()
        if self.leave_frozen:
            region = frozen_region(ep)
            r.leave = region - frozen_stems(r, region)
        for phase in self.phases:
            r.apply(phase.rules, everywhere=phase.everywhere)
            if phase.dce:
                r.graph.eliminate_dead_code()
        r.finish()
        return ep, r.report()

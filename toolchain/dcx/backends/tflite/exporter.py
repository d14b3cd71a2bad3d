"""TFLite / LiteRT exporter: ``.tflite`` programs that run, and train, on builtin ops only.

The passes (each named, tested):

0. ``batch_statistics``      training-mode batch norms as elementary ops, their running statistics updated
                             as buffers (``dcx/passes/batch_statistics.py``): the ``state`` variables
1. ``capture_core_aten``     PyTorch program -> core-ATen graph (``torch.export`` + decompositions)
2. ``fold_frozen_batch_norm`` frozen convolution + batch norm -> one convolution, folded as XNNPACK folds it
                             (``passes/fold_frozen_batch_norm.py``), so verify can recompute the stored filter
3. ``split_reductions``      long multi-dim sums and means as chains of one-dim ones, which TF's gradients
                             keep one-dim (``dcx/passes/split_reductions.py``)
4. ``check_tf_lowerable``    every op has a TF builder, else ``UnsupportedOp`` naming it
5. ``lower_aten_to_tf``      core ATen -> TF ops, one builder per op (``passes/aten_to_tf.py``),
                             with builtin-only gradients (``passes/tf_builtin_gradients.py``)
6. ``build_tf_signatures``   ``train`` / ``infer`` / ``save`` / ``restore`` (``passes/tf_signatures.py``)

Serialization: ``convert_to_tflite`` (SavedModel -> flatbuffer, TFLITE_BUILTINS only, resource
variables on), then ``check_builtin_ops_only`` rejects any Flex/custom op.

Training programs get all four signatures (and ``state`` where the program or its optimizer keeps any),
with the program's optimizer inside ``train``; inference programs get ``infer``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path

import torch

from dcx.errors import DcxError, UnsupportedOp
from dcx.backends import ArtifactInfo, OneSuffixExporter
from dcx.backends.tflite.messages import converter_reason
from dcx.passes import FunctionPass, PassContext, run_passes
from dcx.backends.tflite.passes.fold_frozen_batch_norm import fold_frozen_batch_norm
from dcx.passes.batch_statistics import BatchStatistics
from dcx.passes.graph_capture import capture_module
from dcx.passes.split_reductions import SplitReductions
from dcx.manifest import Deviation, Signature
from dcx.programs import DeviceProgram, TensorSpec
from dcx.reference import ProgramReference

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ INFO/WARNING lines drown the CLI's output


def _capture_core_aten(module, ctx: PassContext) -> torch.export.ExportedProgram:
    """The program's graph as core ATen ops: the only description of the model the TF lowering reads."""
    ep = capture_module(module, ctx.program.example_inputs)
    if any(n.op == "call_function" and n.target in (torch.ops.aten.hardswish.default, torch.ops.aten.hardswish_.default)
           for n in ep.graph.nodes):
        ctx.deviations.append(Deviation(
            "hardswish runs as its core-ATen decomposition x * relu6(x + 3) / 6, whose gradient at exactly x = -3 "
            "and x = 3 is -0.5 and 1.5 where eager PyTorch gives 0 and 1; identical everywhere else"))
    return ep.run_decompositions()


def _check_tf_lowerable(ep: torch.export.ExportedProgram, ctx: PassContext) -> torch.export.ExportedProgram:
    from dcx.backends.tflite.passes.aten_to_tf import ATEN_TO_TF

    missing = sorted({str(n.target) for n in ep.graph.nodes if n.op == "call_function" and n.target not in ATEN_TO_TF})
    if missing:
        raise UnsupportedOp(missing[0], "tflite", ctx.program.name,
                            "no builtin-op lowering in toolchain/dcx/backends/tflite/passes/aten_to_tf.py"
                            + (f" (nor for {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    return ep


def _lower_aten_to_tf(ep: torch.export.ExportedProgram, ctx: PassContext):
    from dcx.backends.tflite.passes.aten_to_tf import lower_aten_to_tf

    if any(n.op == "call_function" and n.target == torch.ops.aten.log1p.default for n in ep.graph.nodes):
        ctx.deviations.append(Deviation(
            "log1p(x) is computed as log(1 + x) (TFLite has no LOG1P builtin); in BCE-with-logits x = exp(-|z|) is "
            "in (0, 1], where this adds at most ~1e-7 absolute error"))
    return lower_aten_to_tf(ep)


def _build_tf_signatures(graph, ctx: PassContext):
    from dcx.backends.tflite.passes.tf_signatures import build_tf_signatures

    specs = build_tf_signatures(ctx.program, graph)
    ctx.report("build_tf_signatures", signatures=sorted(specs.functions))
    return specs


PASSES = [BatchStatistics(), FunctionPass("capture_core_aten", _capture_core_aten),
          FunctionPass("fold_frozen_batch_norm", fold_frozen_batch_norm), SplitReductions(),
          FunctionPass("check_tf_lowerable", _check_tf_lowerable),
          FunctionPass("lower_aten_to_tf", _lower_aten_to_tf), FunctionPass("build_tf_signatures", _build_tf_signatures)]


def convert_to_tflite(functions: dict, module) -> bytes:
    """SavedModel (temporary folder) -> TFLite flatbuffer with builtin ops only and resource variables."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="dcx-tflite-") as tmp:
        # No custom gradients in the SavedModel: dcx's gradients are already traced into `train`, and saving
        # them again only costs time (20 s -> 1 s for a training model).
        tf.saved_model.save(module, tmp, signatures=functions,
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(functions))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        try:
            return converter.convert()
        except Exception as e:  # the converter's message lists the ops it could not lower to builtins
            raise DcxError(f"TFLite conversion with builtin ops only failed: {converter_reason(e)}; give "
                           "those ops builtin lowerings or builtin-only gradients in "
                           "toolchain/dcx/backends/tflite/passes/") from e


class TFLiteExporter(OneSuffixExporter):
    format = "tflite"
    suffix = ".tflite"

    def supports(self, program: DeviceProgram) -> str | None:
        from dcx.models.partitioned_linear import PartitionedLinear

        if any(isinstance(m, PartitionedLinear) and m.use_fused_kernel for m in program.module.modules()):
            return "the fused dcx:: PartitionedLinear kernel is ExecuTorch-only; TFLite needs the reference module"
        return None

    def export(self, program: DeviceProgram, path: Path, options: None = None,
               reference: ProgramReference | None = None) -> ArtifactInfo:
        from dcx.backends.tflite.spec import check_builtin_ops_only, operator_histogram

        reason = self.supports(program)
        if reason:
            raise DcxError(f"{program.name}: cannot export to tflite: {reason}")
        ctx = PassContext(program, options, self.format)
        with _quiet_tf():
            specs = run_passes(PASSES, program.module, ctx)
            model = convert_to_tflite(specs.functions, specs.module)
        check_builtin_ops_only(model, f"{program.name} -> {path}")
        Path(path).write_bytes(model)
        return ArtifactInfo(
            signatures=self.signatures(program),
            weights={n: n for n in program.trainable},
            deviations=ctx.deviations,
            passes=ctx.records,
            notes=self.notes(program, operator_histogram(model)),
        )

    # ------------------------------------------------------------ description

    @staticmethod
    def signatures(program: DeviceProgram) -> dict[str, Signature]:
        inputs = program.input_specs()
        with torch.no_grad():
            outs = program.run(*program.example_inputs)
        outputs = [TensorSpec.of(n, t) for n, t in zip(program.output_names, outs)]
        sigs = {"infer": Signature(inputs, outputs)}
        if program.kind == "train":
            weights = [TensorSpec.of(n, p) for n, p in program.trainable.items()]
            sigs["train"] = Signature(inputs, outputs)
            sigs["save"] = Signature([], weights)
            sigs["restore"] = Signature(weights, weights)
            state = [TensorSpec.of(n, t) for n, t in program.state.items()] + [
                TensorSpec.of(f"{n}/{slot}", p) for n, p in program.trainable.items() for slot in program.optimizer.slots]
            if state:
                sigs["state"] = Signature([], state)
        return sigs

    @staticmethod
    def notes(program: DeviceProgram, ops: dict) -> dict[str, str]:
        from dcx.models.partitioned_linear import PartitionedLinear

        notes = {
            "ops": ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())),
            "builtin_ops_only": "yes: no Flex or custom ops (checked on export)",
            "layout": "PyTorch NCHW kept at the signature; each convolution transposes to NHWC around CONV_2D",
        }
        if program.kind == "train":
            notes["training"] = (f"train = forward + builtin-only gradients + {program.optimizer} on resource "
                                 "variables; save/restore pass weights as tensors named by PyTorch parameter names")
        if any(isinstance(m, PartitionedLinear) for m in program.module.modules()):
            notes["partitioned_linear"] = ("PartitionedLinear lowers to builtin BATCH_MATMUL (one block per "
                                           "partition) + TRANSPOSE/RESHAPE for the partition split and the "
                                           "channel shuffle; no custom kernel")
        return notes

    def versions(self) -> dict[str, str]:
        return {name: _version(name) for name in ("tensorflow-cpu", "ai-edge-litert")}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


class _quiet_tf:
    """Silence TF's Python warnings (tracing, SavedModel writing, conversion) for the duration of an export."""

    names = ("tensorflow", "absl")

    def __enter__(self):
        from absl import logging as absl_logging  # its own logger object, not logging.getLogger("absl")

        self._levels = {n: logging.getLogger(n).level for n in self.names}
        self._absl = absl_logging.get_verbosity()
        for n in self.names:
            logging.getLogger(n).setLevel(logging.ERROR)
        absl_logging.set_verbosity(absl_logging.ERROR)

    def __exit__(self, *exc):
        from absl import logging as absl_logging

        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)
        absl_logging.set_verbosity(self._absl)


EXPORTER = TFLiteExporter()

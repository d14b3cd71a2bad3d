"""TFLite / LiteRT exporter: ``.tflite`` programs that run, and train, on builtin ops only.

The pipeline (each step a named, tested pass):

1. ``export_core_aten``          PyTorch program -> core-ATen graph (``torch.export`` + decompositions)
2. ``lower_aten_to_tf``          core ATen -> TF ops, one builder per op (``passes/aten_to_tf.py``),
                                 with builtin-only gradients (``passes/tf_builtin_gradients.py``)
3. ``build_tf_signatures``       ``train`` / ``infer`` / ``save`` / ``restore`` (``passes/tf_signatures.py``)
4. ``convert_to_tflite``         SavedModel -> flatbuffer, TFLITE_BUILTINS only, resource variables on
5. ``check_builtin_ops_only``    reject any Flex/custom op (``passes/tf_builtin_ops_only.py``)

Training programs get all four signatures, with plain SGD at
``program.optimizer.lr`` inside ``train``; inference programs get ``infer``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path

import torch

from dcx.errors import DcxError
from dcx.export import ArtifactInfo, ExportOptions
from dcx.export.passes.graph_capture import capture
from dcx.programs import DeviceProgram, TensorSpec

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ INFO/WARNING lines drown the CLI's output


def export_core_aten(program: DeviceProgram) -> torch.export.ExportedProgram:
    """The program's graph as core ATen ops: the only description of the model the TF lowering reads."""
    return capture(program).run_decompositions()


def convert_to_tflite(functions: dict, module) -> bytes:
    """SavedModel (temporary folder) -> TFLite flatbuffer with builtin ops only and resource variables."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="dcx-tflite-") as tmp:
        tf.saved_model.save(module, tmp, signatures=functions)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(functions))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        try:
            return converter.convert()
        except Exception as e:  # the converter's message lists the ops it could not lower to builtins
            raise DcxError(f"TFLite conversion with builtin ops only failed: {_converter_reason(e)}; give "
                           "those ops builtin lowerings or builtin-only gradients in "
                           "toolchain/dcx/export/passes/") from e


def _converter_reason(error: Exception) -> str:
    """The converter's one useful line (which ops are not builtins) out of its MLIR dump."""
    lines = [ln.strip() for ln in str(error).splitlines()]
    ops = [ln for ln in lines if ln.startswith(("TF Select ops:", "Custom ops:", "Flex ops:"))]
    if ops:
        return "non-builtin ops needed (" + "; ".join(ops) + ")"
    errors = [ln for ln in lines if "error:" in ln]
    return (errors[0].split("error:", 1)[1].strip() if errors else (lines[0] if lines else repr(error)))[:300]


class TFLiteExporter:
    format = "tflite"
    suffix = ".tflite"

    def suffix_for(self, program: DeviceProgram) -> str:
        return self.suffix

    def supports(self, program: DeviceProgram) -> str | None:
        from dcx.models.partitioned_linear import PartitionedLinear

        if any(isinstance(m, PartitionedLinear) and m.use_fused_kernel for m in program.module.modules()):
            return "the fused dcx:: PartitionedLinear kernel is ExecuTorch-only; TFLite needs the reference module"
        return None

    def export(self, program: DeviceProgram, path: Path, options: ExportOptions | None = None) -> ArtifactInfo:
        from dcx.export.passes.aten_to_tf import lower_aten_to_tf
        from dcx.export.passes.tf_builtin_ops_only import check_builtin_ops_only, operator_histogram
        from dcx.export.passes.tf_signatures import build_tf_signatures

        reason = self.supports(program)
        if reason:
            raise DcxError(f"{program.name}: cannot export to tflite: {reason}")
        ep = export_core_aten(program)
        with _quiet_tf():
            graph = lower_aten_to_tf(ep)
            specs = build_tf_signatures(program, graph)
            model = convert_to_tflite(specs.functions, specs.module)
        check_builtin_ops_only(model, f"{program.name} -> {path}")
        Path(path).write_bytes(model)
        return ArtifactInfo(
            signatures=self.signatures(program),
            weights={n: n for n in program.trainable},
            deviations=self.deviations(ep),
            notes=self.notes(program, operator_histogram(model), options),
        )

    # ------------------------------------------------------------ description

    @staticmethod
    def signatures(program: DeviceProgram) -> dict[str, dict]:
        inputs = [s.as_dict() for s in program.input_specs()]
        with torch.no_grad():
            outs = program.run(*program.example_inputs)
        outputs = [TensorSpec.of(n, t).as_dict() for n, t in zip(program.output_names, outs)]
        sigs = {"infer": {"inputs": inputs, "outputs": outputs}}
        if program.kind == "train":
            weights = [TensorSpec.of(n, p).as_dict() for n, p in program.trainable.items()]
            sigs["train"] = {"inputs": inputs, "outputs": outputs}
            sigs["save"] = {"inputs": [], "outputs": weights}
            sigs["restore"] = {"inputs": weights, "outputs": weights}
        return sigs

    @staticmethod
    def deviations(ep: torch.export.ExportedProgram) -> list[str]:
        targets = {n.target for n in ep.graph.nodes if n.op == "call_function"}
        out = []
        if torch.ops.aten.log1p.default in targets:
            out.append("log1p(x) is computed as log(1 + x) (TFLite has no LOG1P builtin); in BCE-with-logits "
                       "x = exp(-|z|) is in (0, 1], where this adds at most ~1e-7 absolute error")
        return out

    @staticmethod
    def notes(program: DeviceProgram, ops: dict, options: ExportOptions | None) -> dict[str, str]:
        from dcx.models.partitioned_linear import PartitionedLinear

        notes = {
            "ops": ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())),
            "builtin_ops_only": "yes: no Flex or custom ops (checked on export)",
            "layout": "PyTorch NCHW kept at the signature; each convolution transposes to NHWC around CONV_2D",
        }
        if program.kind == "train":
            notes["training"] = (f"train = forward + builtin-only gradients + plain SGD (lr={program.optimizer.lr}) "
                                 "on resource variables; save/restore pass weights as tensors named by PyTorch "
                                 "parameter names")
        if any(isinstance(m, PartitionedLinear) for m in program.module.modules()):
            notes["partitioned_linear"] = ("PartitionedLinear lowers to builtin BATCH_MATMUL (one block per "
                                           "partition) + TRANSPOSE/RESHAPE for the partition split and the "
                                           "channel shuffle; no custom kernel")
        if options is not None and options.fused_kernels:
            notes["fused_kernels"] = "ignored: the fused dcx:: kernels are ExecuTorch-only"
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
        self._levels = {n: logging.getLogger(n).level for n in self.names}
        for n in self.names:
            logging.getLogger(n).setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)


EXPORTER = TFLiteExporter()

"""ONNX exporter: inference programs only (ONNX Runtime's training build is stalled upstream and conflicts
with the main environment). One step, the TorchScript-based ``torch.onnx.export``, captures and serializes."""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

import torch

from dcx.errors import UnsupportedOp
from dcx.backends import ArtifactInfo, OneSuffixExporter
from dcx.backends.onnx.messages import unsupported_op
from dcx.manifest import PassRecord, Signature
from dcx.passes.graph_capture import composite_attention
from dcx.programs import DeviceProgram, TensorSpec
from dcx.reference import ProgramReference

OPSET = 17


class OnnxExporter(OneSuffixExporter):
    format = "onnx"
    suffix = ".onnx"

    def versions(self) -> dict[str, str]:
        return {"onnx": importlib.metadata.version("onnx"), "onnxruntime": importlib.metadata.version("onnxruntime"),
                "opset": str(OPSET)}

    def export(self, program: DeviceProgram, path: Path, options: None = None,
               reference: ProgramReference | None = None) -> ArtifactInfo:
        try:
            with warnings.catch_warnings(), composite_attention():
                warnings.simplefilter("ignore")
                # The TorchScript-based exporter: the dynamo one needs onnxscript, which adds nothing here.
                # No constant folding: batch norm stays a node of its own, so every weight is stored as PyTorch
                # has it (verify reads each back); ONNX Runtime folds it when it loads the model.
                torch.onnx.export(program.module, program.example_inputs, str(path),
                                  input_names=list(program.input_names), output_names=list(program.output_names),
                                  opset_version=OPSET, dynamo=False, do_constant_folding=False)
        except Exception as e:
            op = unsupported_op(e)
            if op:
                raise UnsupportedOp(op, self.format, program.name, f"not in ONNX opset {OPSET}") from e
            raise
        outputs = [TensorSpec.of(n, t) for n, t in zip(program.output_names, program.run(*program.example_inputs))]
        return ArtifactInfo(signatures={"default": Signature(program.input_specs(), outputs)},
                            passes=[PassRecord("torch_onnx_export", {"opset": OPSET, "constant_folding": False})])


EXPORTER = OnnxExporter()

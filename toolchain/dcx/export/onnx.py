"""ONNX exporter: inference programs only (ONNX Runtime's training build conflicts with the main environment)."""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

import torch

from dcx.export import ArtifactInfo, ExportOptions
from dcx.programs import DeviceProgram, TensorSpec

OPSET = 17


class OnnxExporter:
    format = "onnx"

    def suffix_for(self, program: DeviceProgram) -> str:
        return ".onnx"

    def supports(self, program: DeviceProgram) -> str | None:
        return "ONNX artifacts are inference-only in dcx" if program.kind == "train" else None

    def versions(self) -> dict[str, str]:
        return {"onnx": importlib.metadata.version("onnx"), "onnxruntime": importlib.metadata.version("onnxruntime"),
                "opset": str(OPSET)}

    def export(self, program: DeviceProgram, path: Path, options: ExportOptions) -> ArtifactInfo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript-based exporter: the dynamo one needs onnxscript, which adds nothing here.
            torch.onnx.export(program.module, program.example_inputs, str(path), input_names=list(program.input_names),
                              output_names=list(program.output_names), opset_version=OPSET, dynamo=False)
        outputs = [TensorSpec.of(n, t).as_dict() for n, t in zip(program.output_names, program.run(*program.example_inputs))]
        return ArtifactInfo(signatures={"default": {"inputs": [s.as_dict() for s in program.input_specs()],
                                                    "outputs": outputs}})


EXPORTER = OnnxExporter()

"""ONNX Runtime (CPU), inference only; one intra-op thread for repeatable measurements."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

from dcx.manifest import ManifestEntry
from dcx.backends.runtime import Check, InstalledPackageRuntime


class OnnxSession:
    def __init__(self, path: Path, entry: ManifestEntry):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self.input_names, inputs)))

    def train_step(self, *inputs: np.ndarray) -> float:
        raise NotImplementedError("ONNX artifacts are inference-only in dcx")

    def get_weights(self) -> dict[str, np.ndarray]:
        return {}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        raise NotImplementedError("ONNX artifacts are inference-only in dcx")


class OnnxRuntime(InstalledPackageRuntime):
    format = "onnx"
    package = "onnxruntime"

    def static_checks(self, path: Path, entry: ManifestEntry) -> list[Check]:
        import onnx

        try:
            onnx.checker.check_model(str(path))
            return [Check("onnx_checker", True, None)]
        except onnx.checker.ValidationError as e:
            return [Check("onnx_checker", False, None, str(e).splitlines()[0])]

    def reference_checks(self, path: Path, entry: ManifestEntry, reference, tolerance) -> list[Check]:
        return []  # everything is checked by running the artifact itself

    def load(self, path: Path, entry: ManifestEntry) -> OnnxSession:
        return OnnxSession(path, entry)


RUNTIME = OnnxRuntime()

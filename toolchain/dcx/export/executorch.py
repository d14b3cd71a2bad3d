"""ExecuTorch exporter: ``.pte`` programs.

- training programs: joint forward+backward graph (frozen parameters stay
  constants, trainable ones are returned with their gradients); SGD runs on
  device through ExecuTorch's training extension. Portable kernels.
- inference programs: lowered to the XNNPACK delegate.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from dcx.export import ArtifactInfo, ExportOptions
from dcx.export.passes.graph_capture import capture, capture_joint, gradient_targets
from dcx.programs import DeviceProgram, TensorSpec


class ExecuTorchExporter:
    format = "executorch"

    def suffix_for(self, program: DeviceProgram) -> str:
        return ".pte"

    def supports(self, program: DeviceProgram) -> str | None:
        return None

    def versions(self) -> dict[str, str]:
        return {"executorch": importlib.metadata.version("executorch"), "torch": importlib.metadata.version("torch")}

    def export(self, program: DeviceProgram, path: Path, options: ExportOptions) -> ArtifactInfo:
        notes = {}
        if options.fused_kernels:
            from dcx.kernels import enable_fused

            count = enable_fused(program.module)
            notes["fused_kernels"] = f"{count} PartitionedLinear layers run as dcx::shuffled_partitioned_linear.out"
        if program.kind == "train":
            buffer = self._training_buffer(program)
        else:
            buffer = self._inference_buffer(program, delegate=not options.fused_kernels)
            notes["delegate"] = "portable kernels + dcx custom op" if options.fused_kernels else "XNNPACK"
        path.write_bytes(buffer)
        weights = {n: n for n in program.trainable}
        return ArtifactInfo(signatures=_signatures(program), weights=weights, notes=notes)

    @staticmethod
    def _training_buffer(program: DeviceProgram) -> bytes:
        from executorch.exir import to_edge

        joint = capture_joint(program)
        missing = set(program.trainable) - set(gradient_targets(joint))
        if missing:
            raise RuntimeError(f"{program.name}: joint graph returns no gradient for {sorted(missing)}")
        return to_edge(joint).to_executorch().buffer

    @staticmethod
    def _inference_buffer(program: DeviceProgram, delegate: bool) -> bytes:
        from executorch.exir import to_edge, to_edge_transform_and_lower

        ep = capture(program)
        if not delegate:
            return to_edge(ep).to_executorch().buffer
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def _signatures(program: DeviceProgram) -> dict[str, dict]:
    outputs = [TensorSpec("loss", (), "float32").as_dict()] if program.kind == "train" else [
        TensorSpec.of(n, t).as_dict() for n, t in zip(program.output_names, program.run(*program.example_inputs))]
    method = "forward_backward" if program.kind == "train" else "forward"
    return {method: {"inputs": [s.as_dict() for s in program.input_specs()], "outputs": outputs}}


EXPORTER = ExecuTorchExporter()

"""ExecuTorch exporter: ``.pte`` programs.

- training programs: ``batch_statistics`` (training-mode batch norms as
  elementary ops, their running statistics program state returned after the
  loss) -> ``capture_program`` -> ``joint_graph`` (frozen parameters
  stay constants, trainable ones are returned with their gradients) ->
  ``crop_to_slice`` -> ``fast_training`` (onto the dcx training kernels, the
  frozen layers left alone) -> ``split_reductions`` (long multi-dim sums as
  one-dim chains: dcx/passes/split_reductions.py) -> ``lower_frozen_to_xnnpack`` (the frozen layers' forward to
  XNNPACK); ``--no-fast-training`` keeps ExecuTorch's portable kernels
  throughout (``joint_graph`` -> ``crop_to_slice`` -> ``split_reductions`` -> ``to_edge``). The optimizer runs on the
  device, in place on the parameters the program returns.
- inference programs: ``capture_program`` -> ``lower_to_xnnpack`` (or plain
  ``to_edge`` with ``--fused-kernels``: ``fuse_partitioned_linear`` first).
Serialization: ``to_executorch().buffer``, with the running statistics' initial values stored (ExecuTorch
leaves a mutated buffer uninitialised unless told).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from dcx.errors import UnsupportedOp
from dcx.backends import ArtifactInfo, OneSuffixExporter
from dcx.backends.executorch.messages import unsupported_op
from dcx.backends.executorch.options import ExecuTorchOptions
from dcx.passes import FunctionPass, PassContext, run_passes
from dcx.backends.executorch.passes.crop_to_slice import CropToSlice
from dcx.backends.executorch.passes.fast_training import FastTraining
from dcx.backends.executorch.passes.frozen_xnnpack import lower_frozen_to_xnnpack
from dcx.backends.executorch.passes.fuse_partitioned_linear import FusePartitionedLinear
from dcx.passes.batch_statistics import BatchStatistics
from dcx.passes.graph_capture import CaptureProgram, JointGraph
from dcx.passes.split_reductions import SplitReductions
from dcx.manifest import Signature
from dcx.programs import DeviceProgram, TensorSpec
from dcx.reference import ProgramReference


def _to_edge(ep, ctx: PassContext):
    from executorch.exir import to_edge

    return to_edge(ep)


def _lower_to_xnnpack(ep, ctx: PassContext):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from dcx.backends.executorch.passes.xnnpack_configs import XNNPACK_CONFIGS

    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner(configs=XNNPACK_CONFIGS)])
    delegated = sum(1 for n in edge.exported_program().graph.nodes if n.op == "call_function"
                    and "executorch_call_delegate" in str(n.target))
    ctx.report("lower_to_xnnpack", delegates=delegated)
    return edge


class ExecuTorchExporter(OneSuffixExporter):
    format = "executorch"
    suffix = ".pte"

    def versions(self) -> dict[str, str]:
        return {"executorch": importlib.metadata.version("executorch"), "torch": importlib.metadata.version("torch")}

    def passes(self, program: DeviceProgram, options: ExecuTorchOptions) -> list:
        training = program.kind == "train"
        fuse = [FusePartitionedLinear()] if options.fused_kernels or (training and options.fast_training) else []
        if training:
            joint = [*fuse, BatchStatistics(outputs=True), CaptureProgram(), JointGraph(), CropToSlice()]
            if not options.fast_training:
                return [*joint, SplitReductions(), FunctionPass("to_edge", _to_edge)]
            if not options.frozen_xnnpack:
                return [*joint, FastTraining(), SplitReductions(), FunctionPass("to_edge", _to_edge)]
            return [*joint, FastTraining(leave_frozen=True), SplitReductions(),
                    FunctionPass("lower_frozen_to_xnnpack", lower_frozen_to_xnnpack)]
        lower = FunctionPass("to_edge", _to_edge) if options.fused_kernels else \
            FunctionPass("lower_to_xnnpack", _lower_to_xnnpack)
        return [*fuse, CaptureProgram(), lower]

    def build(self, program: DeviceProgram, options: ExecuTorchOptions, ctx: PassContext) -> tuple[bytes, Any]:
        """The ``.pte`` bytes and the graph the last pass lowered (what benchmarks and tests inspect)."""
        passes = self.passes(program, options)
        graph = run_passes(passes[:-1], program.module, ctx)
        edge = run_passes(passes[-1:], graph, ctx)  # to_edge and lower_frozen_to_xnnpack leave their input as it is
        return edge.to_executorch(_keep_initial_state()).buffer, graph

    def export(self, program: DeviceProgram, path: Path, options: ExecuTorchOptions | None,
               reference: ProgramReference | None = None) -> ArtifactInfo:
        options = options or ExecuTorchOptions()
        ctx = PassContext(program, options, self.format)
        try:
            buffer, _ = self.build(program, options, ctx)
        except Exception as e:
            op = unsupported_op(e)
            if op:
                raise UnsupportedOp(op, self.format, program.name) from e
            raise
        Path(path).write_bytes(buffer)
        if program.kind == "train":
            frozen = ", XNNPACK for the frozen layers' forward" if options.frozen_xnnpack else ""
            notes = {"kernels": f"dcx training kernels where the fast_training pass rewrote the graph{frozen}, "
                                "portable elsewhere" if options.fast_training else "portable"}
        else:
            notes = {"kernels": "portable + dcx fused op" if options.fused_kernels else "XNNPACK delegate"}
        return ArtifactInfo(signatures=_signatures(program), weights={n: n for n in program.trainable},
                            requires=ctx.requires, passes=ctx.records, notes=notes)


def _keep_initial_state():
    """Serialise the running statistics' values: ExecuTorch leaves a buffer the graph mutates uninitialised."""
    from executorch.exir import ExecutorchBackendConfig
    from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass

    return ExecutorchBackendConfig(passes=[InitializedMutableBufferPass(["running_mean", "running_var"])])


def _signatures(program: DeviceProgram) -> dict[str, Signature]:
    outputs = [TensorSpec("loss", (), "float32"), *(TensorSpec.of(n, t) for n, t in program.state.items())] \
        if program.kind == "train" else [
        TensorSpec.of(n, t) for n, t in zip(program.output_names, program.run(*program.example_inputs))]
    method = "forward" if program.kind == "infer" else "forward_backward"
    return {method: Signature(program.input_specs(), outputs)}


EXPORTER = ExecuTorchExporter()

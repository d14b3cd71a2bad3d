"""ExecuTorch's Python pybindings: inference, and on-device training through its training extension."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import torch

from dcx.runtimes import Check


class ExecuTorchSession:
    def __init__(self, buffer: bytes, entry: dict):
        self.entry = entry
        self.buffer = buffer  # the loaded program points into these bytes: keep them alive
        self.training = entry["kind"] == "train"
        if self.training:
            from executorch.extension.training import _load_for_executorch_for_training_from_buffer

            self.module = _load_for_executorch_for_training_from_buffer(buffer)
            self.optimizer = None
        else:
            from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

            self.module = _load_for_executorch_from_buffer(buffer)

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if self.training:
            raise NotImplementedError("training .pte programs have no inference method; use the .infer twin")
        return [t.numpy() for t in self.module.forward(tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))]

    def train_step(self, *inputs: np.ndarray) -> float:
        from executorch.extension.training import get_sgd_optimizer

        out = self.module.forward_backward("forward", tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
        if self.optimizer is None:  # parameters exist only after the first forward_backward
            self.optimizer = get_sgd_optimizer(self.module.named_parameters(), self.entry["optimizer"]["lr"],
                                               0.0, 0.0, 0.0, False)
        self.optimizer.step(self.module.named_gradients())
        return float(out[0])

    def get_weights(self) -> dict[str, np.ndarray]:
        params = self.module.named_parameters()
        return {torch_name: params[name].detach().numpy().copy() for torch_name, name in self.entry["weights"].items()}


class ExecuTorchRuntime:
    format = "executorch"
    _kernels_loaded = False

    def available(self) -> str | None:
        return None

    def version(self) -> str:
        return importlib.metadata.version("executorch")

    def static_checks(self, path: Path, entry: dict) -> list[Check]:
        """The operators the program calls; a --fused-kernels export must call the dcx:: op."""
        from executorch.exir._serialize._program import deserialize_pte_binary

        try:
            program = deserialize_pte_binary(path.read_bytes())
        except Exception as e:  # a damaged file is a failed check, not a crash
            return [Check("pte_parses", False, None, f"{path.name}: {type(e).__name__}: {e}".splitlines()[0])]
        program = getattr(program, "program", program)
        ops = {f"{o.name}.{o.overload}" for plan in program.execution_plan for o in plan.operators}
        rows = [Check("pte_parses", True, None, f"{len(ops)} distinct operators")]
        if entry.get("notes", {}).get("fused_kernels"):
            fused = "dcx::shuffled_partitioned_linear.out" in ops
            rows.append(Check("fused_op_present", fused, None, "" if fused else "the .pte calls no dcx:: op"))
        return rows

    def load(self, path: Path, entry: dict) -> ExecuTorchSession:
        if entry.get("notes", {}).get("fused_kernels"):
            from dcx.kernels import load_executorch_kernels

            load_executorch_kernels()  # once per process: registering twice aborts
        return ExecuTorchSession(path.read_bytes(), entry)


RUNTIME = ExecuTorchRuntime()

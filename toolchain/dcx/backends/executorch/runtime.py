"""ExecuTorch's Python pybindings: inference, and on-device training through its training extension."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import torch

from dcx.errors import DcxError
from dcx.manifest import ManifestEntry
from dcx.backends.runtime import Check, InstalledPackageRuntime


def _tensors(arrays: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


class ExecuTorchSession:
    def __init__(self, buffer: bytes, entry: ManifestEntry):
        self.entry = entry
        self.buffer = buffer  # the loaded program points into these bytes: keep them alive
        self.training = entry.kind == "train"
        self.optimizer = None
        self._pending: dict[str, np.ndarray] | None = None  # weights set before the parameters exist
        try:
            if self.training:
                from executorch.extension.training import _load_for_executorch_for_training_from_buffer

                self.module = _load_for_executorch_for_training_from_buffer(buffer)
            else:
                from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

                self.module = _load_for_executorch_from_buffer(buffer)
        except RuntimeError as e:
            raise DcxError(f"{entry.file}: ExecuTorch cannot load it ({str(e).splitlines()[0]}); re-export it") from None

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if self.training:
            raise NotImplementedError("training .pte programs have no inference method; use the .infer twin")
        return [t.numpy() for t in self.module.forward(_tensors(inputs))]

    def _parameters(self) -> dict[str, torch.Tensor]:
        """The program's own parameter tensors (they exist after the first forward_backward)."""
        if self.optimizer is None:
            raise DcxError(f"{self.entry.file}: run one train_step before reading or writing its weights")
        return self.module.named_parameters()

    def train_step(self, *inputs: np.ndarray) -> float:
        """One SGD step. The first goes through the training extension (which materialises the parameters);
        later ones run the program once and update its parameter outputs in place — they are the program's own
        tensors — as the native runner does, without the extension's per-step method calls and gradient copies."""
        if self.optimizer is not None:
            out = self.module.model.run_method("forward", _tensors(inputs), clone_outputs=False)
            first_grad, first_param = self._layout
            torch._foreach_add_(list(out[first_param:]), list(out[first_grad:first_param]),
                                alpha=-self.entry.optimizer.lr)
            return float(out[0])
        from executorch.extension.training import get_sgd_optimizer

        out = self.module.forward_backward("forward", _tensors(inputs))
        self.optimizer = get_sgd_optimizer(self.module.named_parameters(), self.entry.optimizer.lr,
                                           0.0, 0.0, 0.0, False)
        self._layout = tuple(int(self.module.model.run_method(f"__et_training_{part}_index_forward", ())[0])
                             for part in ("gradients", "parameters"))
        if self._pending is not None:  # weights set before the first step: apply them, then step again
            self._copy_in(self._pending)
            out = self.module.forward_backward("forward", _tensors(inputs))
        self.optimizer.step(self.module.named_gradients())
        return float(out[0])

    def get_weights(self) -> dict[str, np.ndarray]:
        if self.optimizer is None and self._pending is not None:
            return {n: np.array(v) for n, v in self._pending.items()}
        params = self._parameters()
        return {torch_name: params[name].detach().numpy().copy() for torch_name, name in self.entry.weights.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        missing = sorted(set(self.entry.weights) - set(weights))
        if missing:
            raise DcxError(f"{self.entry.file}: set_weights needs every trainable weight; missing {', '.join(missing)}")
        if self.optimizer is None:
            self._pending = {n: np.asarray(weights[n], dtype=np.float32) for n in self.entry.weights}
            return
        self._copy_in(weights)

    def _copy_in(self, weights: dict[str, np.ndarray]) -> None:
        params = self.module.named_parameters()
        for torch_name, name in self.entry.weights.items():
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(weights[torch_name], dtype=np.float32)))


class ExecuTorchRuntime(InstalledPackageRuntime):
    format = "executorch"
    package = "executorch"

    def static_checks(self, path: Path, entry: ManifestEntry) -> list[Check]:
        """The operators the program calls; every custom op the manifest requires must be among them."""
        from executorch.exir._serialize._program import deserialize_pte_binary

        try:
            program = deserialize_pte_binary(path.read_bytes())
        except Exception as e:  # a damaged file is a failed check, not a crash
            return [Check("pte_parses", False, None, f"{path.name}: {type(e).__name__}: {e}".splitlines()[0])]
        program = getattr(program, "program", program)
        ops = {f"{o.name}.{o.overload}" for plan in program.execution_plan for o in plan.operators}
        rows = [Check("pte_parses", True, None, f"{len(ops)} distinct operators")]
        if entry.requires.custom_ops:
            absent = [o for o in entry.requires.custom_ops if o not in ops]
            rows.append(Check("custom_ops_present", not absent, None,
                              f"the .pte calls none of {absent}" if absent else ", ".join(entry.requires.custom_ops)))
        return rows

    def reference_checks(self, path: Path, entry: ManifestEntry, reference, tolerance) -> list[Check]:
        return []  # everything is checked by running the artifact itself

    def load(self, path: Path, entry: ManifestEntry) -> ExecuTorchSession:
        from dcx.kernels import load_executorch_library

        for library in entry.requires.kernel_libraries:
            load_executorch_library(library)  # once per process: registering twice aborts
        return ExecuTorchSession(Path(path).read_bytes(), entry)


RUNTIME = ExecuTorchRuntime()

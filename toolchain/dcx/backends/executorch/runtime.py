"""ExecuTorch's Python pybindings: inference, and on-device training through its training extension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dcx.errors import DcxError
from dcx.manifest import ManifestEntry
from dcx.backends.runtime import Check, InstalledPackageRuntime
from dcx.optim import Stepper


def _tensors(arrays: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


class ExecuTorchSession:
    """A ``.pte`` in ExecuTorch's pybindings. A training program is run as the native runner runs it: its method
    returns ``[loss, state..., gradients..., parameters...]``, the parameters being the program's own tensors, which
    the optimizer (``dcx.optim.Stepper``, its state kept here) updates in place between steps."""

    def __init__(self, buffer: bytes, entry: ManifestEntry):
        self.entry = entry
        self.buffer = buffer  # the loaded program points into these bytes: keep them alive
        self.training = entry.kind == "train"
        self._params: dict[str, torch.Tensor] | None = None  # by PyTorch name, once the first step returned them
        self._state: list[torch.Tensor] = []  # the program's state outputs of the last step
        self._pending: dict[str, np.ndarray] | None = None  # weights set before the parameters exist
        self.stepper: Stepper | None = None
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

    def _layout(self) -> tuple[int, int]:
        """Where the gradients and the parameters start among the outputs. ExecuTorch's index methods count the
        graph's buffer mutations, one per state tensor, which the method does not return."""
        state = len(self.entry.state)
        return tuple(int(self.module.model.run_method(f"__et_training_{part}_index_forward", ())[0]) - state
                     for part in ("gradients", "parameters"))

    def train_step(self, *inputs: np.ndarray) -> float:
        """One step of the program's optimizer on a batch; returns the loss before the update."""
        out = self.module.model.run_method("forward", _tensors(inputs), clone_outputs=False)
        first_grad, first_param = self._layout() if self._params is None else self._indices
        if self._params is None:
            self._indices = (first_grad, first_param)
            by_artifact_name = {a: n for n, a in self.entry.weights.items()}
            names = [str(v) for v in self.module.model.run_method("__et_training_fqn_forward", ())]
            self._params = {by_artifact_name[a]: t for a, t in zip(names, out[first_param:])}
            self.stepper = Stepper(self.entry.optimizer.optimizer(), self._params)
            if self._pending is not None:  # weights set before the first step: apply them, then run again
                self._copy_in(self._pending)
                return self.train_step(*inputs)
        self._state = list(out[1:first_grad])
        self.stepper.step(self._params, out[first_grad:first_param])
        return float(out[0])

    def get_weights(self) -> dict[str, np.ndarray]:
        if self._params is None:
            if self._pending is not None:
                return {n: np.array(v) for n, v in self._pending.items()}
            raise DcxError(f"{self.entry.file}: run one train_step before reading its weights")
        return {n: p.detach().numpy().copy() for n, p in self._params.items()}

    def get_state(self) -> dict[str, np.ndarray]:
        """The program's state (``entry.state``) after the last step."""
        return {n: t.numpy().copy() for n, t in zip(self.entry.state, self._state)}

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """Each optimizer slot per parameter, as ``"<param>/<slot>"``."""
        return {f"{n}/{slot}": t.numpy().copy() for n, slots in (self.stepper.state if self.stepper else {}).items()
                for slot, t in slots.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        missing = sorted(set(self.entry.weights) - set(weights))
        if missing:
            raise DcxError(f"{self.entry.file}: set_weights needs every trainable weight; missing {', '.join(missing)}")
        if self._params is None:
            self._pending = {n: np.asarray(weights[n], dtype=np.float32) for n in self.entry.weights}
            return
        self._copy_in(weights)

    def _copy_in(self, weights: dict[str, np.ndarray]) -> None:
        for name, p in self._params.items():
            p.copy_(torch.from_numpy(np.ascontiguousarray(weights[name], dtype=np.float32)))
        self._pending = None


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

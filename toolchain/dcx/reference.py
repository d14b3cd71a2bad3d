"""The reference that travels with every artifact: ``reference/<program>.safetensors`` (docs/reference.md).

Computed once per program at export time in eager PyTorch: fixed inputs and
their outputs; the weights as exported; for training programs the real-data
batches, the per-step losses, the final weights and state of ``torch.optim``
and its optimizer state after the first and the last step. ``dcx verify``,
``dcx profile`` and the native runner read only this file: no recipe, no
dataset, no seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dcx.errors import DcxError
from dcx.manifest import from_dict
from dcx.optim import Spec
from dcx.programs import DeviceProgram

REFERENCE_SCHEMA = "2"
REFERENCE_DIR = "reference"
TRAIN_STEPS = 20


def reference_file(program_name: str) -> str:
    """The reference's path relative to the export folder."""
    return f"{REFERENCE_DIR}/{program_name}.safetensors"


@dataclass
class ProgramReference:
    program: str
    kind: str  # "train" | "infer"
    input_names: list[str]
    output_names: list[str]
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # inference
    frozen: dict[str, np.ndarray] = field(default_factory=dict)
    initial: dict[str, np.ndarray] = field(default_factory=dict)  # training: trainable, before step 0
    batches: list[dict[str, np.ndarray]] = field(default_factory=list)  # training
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))  # training, F64 [steps]
    final: dict[str, np.ndarray] = field(default_factory=dict)  # training: trainable after the steps
    optimizer: Spec | None = None  # training
    trainable: list[str] = field(default_factory=list)
    state: list[str] = field(default_factory=list)  # training: DeviceProgram.state's names, in program order
    state_initial: dict[str, np.ndarray] = field(default_factory=dict)  # training: that state before the steps
    state_final: dict[str, np.ndarray] = field(default_factory=dict)  # ... and after the steps
    # training: each optimizer slot per parameter ("<param>/<slot>") after the first and after the last step
    optimizer_first: dict[str, np.ndarray] = field(default_factory=dict)
    optimizer_final: dict[str, np.ndarray] = field(default_factory=dict)
    # training: how far float32 rounding alone moves eager PyTorch's run (DeviceProgram.rounding_spread)
    loss_spread: float = 0.0
    weight_spread: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.batches)

    @property
    def lr(self) -> float | None:
        return self.optimizer.lr if self.optimizer else None

    def input_arrays(self) -> list[np.ndarray]:
        return [self.inputs[n] for n in self.input_names]

    def output_arrays(self) -> list[np.ndarray]:
        return [self.outputs[n] for n in self.output_names]

    def batch_arrays(self, step: int) -> list[np.ndarray]:
        return [self.batches[step][n] for n in self.input_names]

    def weights(self) -> dict[str, np.ndarray]:
        """Every weight as exported: frozen and (for training programs) the initial trainable ones."""
        return {**self.frozen, **self.initial}

    # ------------------------------------------------------------ file format

    def tensors(self) -> dict[str, np.ndarray]:
        t: dict[str, np.ndarray] = {f"input/{k}": v for k, v in self.inputs.items()}
        t.update({f"output/{k}": v for k, v in self.outputs.items()})
        t.update({f"param/frozen/{k}": v for k, v in self.frozen.items()})
        t.update({f"param/initial/{k}": v for k, v in self.initial.items()})
        t.update({f"param/final/{k}": v for k, v in self.final.items()})
        t.update({f"state/initial/{k}": v for k, v in self.state_initial.items()})
        t.update({f"state/final/{k}": v for k, v in self.state_final.items()})
        t.update({f"optim/step1/{k}": v for k, v in self.optimizer_first.items()})
        t.update({f"optim/final/{k}": v for k, v in self.optimizer_final.items()})
        for step, batch in enumerate(self.batches):
            t.update({f"batch/{step}/{k}": v for k, v in batch.items()})
        if self.kind == "train":
            t["loss"] = np.asarray(self.losses, dtype=np.float64)
        return {k: np.ascontiguousarray(v) for k, v in t.items()}

    def metadata(self) -> dict[str, str]:
        meta = {"dcx.reference.schema": REFERENCE_SCHEMA, "program": self.program, "kind": self.kind,
                "inputs": json.dumps(self.input_names), "outputs": json.dumps(self.output_names),
                "trainable": json.dumps(self.trainable)}
        if self.kind == "train":
            meta.update({"steps": str(self.steps), "lr": repr(self.lr), "rounding_spread.loss": repr(self.loss_spread),
                         "rounding_spread.weights": repr(self.weight_spread), "state": json.dumps(self.state),
                         "optimizer": json.dumps(asdict(self.optimizer))})
            meta.update(_flat_optimizer(self.optimizer))
        return meta

    def digests(self) -> tuple[dict[str, str], str]:
        """sha256 of each tensor (its dtype, shape and bytes) and of the metadata: the manifest records them,
        and verify refuses a reference that no longer matches."""
        tensors = {}
        for name, array in self.tensors().items():
            h = hashlib.sha256(f"{array.dtype.str}{list(array.shape)}".encode())
            h.update(array.tobytes())
            tensors[name] = h.hexdigest()
        return tensors, hashlib.sha256(json.dumps(self.metadata(), sort_keys=True).encode()).hexdigest()

    def save(self, path: Path) -> None:
        from safetensors.numpy import save

        from dcx.fileio import write_atomic

        write_atomic(Path(path), save(self.tensors(), metadata=self.metadata()))

    @classmethod
    def load(cls, path: Path) -> "ProgramReference":
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise DcxError(f"{path} is missing: the reference travels with the artifacts; re-run `dcx export`")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise DcxError(f"{path} is not a readable reference ({e}): re-run `dcx export`") from None
        if meta.get("dcx.reference.schema") != REFERENCE_SCHEMA:
            raise DcxError(f"{path}: reference schema {meta.get('dcx.reference.schema')!r}, this dcx reads "
                           f"{REFERENCE_SCHEMA}: re-export")

        def group(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        try:
            steps = int(meta.get("steps", "0"))
            ref = cls(program=meta["program"], kind=meta["kind"], input_names=json.loads(meta["inputs"]),
                      output_names=json.loads(meta["outputs"]), inputs=group("input/"), outputs=group("output/"),
                      frozen=group("param/frozen/"), initial=group("param/initial/"), final=group("param/final/"),
                      batches=[group(f"batch/{s}/") for s in range(steps)],
                      losses=tensors.get("loss", np.zeros(0)),
                      optimizer=from_dict(Spec, json.loads(meta["optimizer"]), f"{path}: metadata optimizer")
                      if "optimizer" in meta else None,
                      trainable=json.loads(meta.get("trainable", "[]")),
                      state=json.loads(meta.get("state", "[]")), state_initial=group("state/initial/"), state_final=group("state/final/"),
                      optimizer_first=group("optim/step1/"), optimizer_final=group("optim/final/"),
                      loss_spread=float(meta.get("rounding_spread.loss", "0")),
                      weight_spread=float(meta.get("rounding_spread.weights", "0")))
        except (KeyError, ValueError) as e:
            raise DcxError(f"{path}: metadata field {e} is missing or malformed: re-export") from None
        missing = [n for n in ref.input_names if n not in ref.inputs] + \
                  [f"batch {s}" for s, b in enumerate(ref.batches) if set(b) != set(ref.input_names)]
        if missing:
            raise DcxError(f"{path}: lacks {missing[0]}: re-export")
        return ref


def _flat_optimizer(spec: Spec) -> dict[str, str]:
    """The optimizer as flat ``optimizer.<field>`` metadata strings: what the native runner reads."""
    flat = {"optimizer.type": spec.type, "optimizer.lr": repr(spec.lr), "optimizer.momentum": repr(spec.momentum),
            "optimizer.nesterov": "true" if spec.nesterov else "false",
            "optimizer.weight_decay": repr(spec.weight_decay)}
    if spec.betas is not None:
        flat.update({"optimizer.beta1": repr(spec.betas[0]), "optimizer.beta2": repr(spec.betas[1]),
                     "optimizer.eps": repr(spec.eps)})
    return flat


def _slots(state: dict[str, dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    return {f"{param}/{slot}": _numpy(t) for param, slots in state.items() for slot, t in slots.items()}


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy().copy()


def build_reference(program: DeviceProgram, steps: int = TRAIN_STEPS, seed: int = 0) -> ProgramReference:
    """Everything verify needs about ``program``, computed in eager PyTorch now."""
    inputs = {n: _numpy(t) for n, t in zip(program.input_names, program.example_inputs)}
    frozen = {n: _numpy(t) for n, t in program.frozen.items()}
    if program.kind == "infer":
        with torch.no_grad():
            outputs = program.run(*program.example_inputs)
        return ProgramReference(program.name, "infer", list(program.input_names), list(program.output_names), inputs,
                                outputs={n: _numpy(o) for n, o in zip(program.output_names, outputs)}, frozen=frozen)
    batches = program.example_batches(steps, seed)
    run = program.reference_training(batches)
    loss_spread, weight_spread = program.rounding_spread(batches, run)
    return ProgramReference(
        program.name, "train", list(program.input_names), list(program.output_names), inputs, frozen=frozen,
        initial={n: _numpy(p) for n, p in program.trainable.items()},
        batches=[{n: _numpy(t) for n, t in zip(program.input_names, b)} for b in batches],
        losses=np.asarray(run.losses, dtype=np.float64), final={n: _numpy(w) for n, w in run.weights.items()},
        optimizer=Spec.of(program.optimizer), trainable=list(program.trainable), loss_spread=loss_spread,
        weight_spread=weight_spread, state=list(program.state), state_initial={n: _numpy(t) for n, t in program.state.items()},
        state_final={n: _numpy(t) for n, t in run.state.items()}, optimizer_first=_slots(run.optimizer_first),
        optimizer_final=_slots(run.optimizer_final))

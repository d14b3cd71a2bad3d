"""Core ML training without Core ML: an updatable ``.mlmodel``'s own spec driven the way an app drives it.

``ReferenceSession`` runs the spec in the reference interpreter: prediction
per sample, the app-side target where the formulation needs one, one SGD step
per mini-batch. It is *not* Core ML; it measures how far the artifact's
formulation trains from the exact PyTorch objective (``measure_deviation``),
at export time and in verify.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dcx.errors import DcxError
from dcx.backends.coreml.spec import gradient_matching_target, load_spec, metadata
from dcx.manifest import ManifestEntry, TrainingGap


class ReferenceSession:
    """An updatable NeuralNetwork spec run by the reference interpreter, driven as the app drives Core ML."""

    def __init__(self, spec, input_names: list[str], weights: dict[str, str], trainable: dict[str, list[int]]):
        from dcx.backends.coreml.interpreter import NNInterpreter

        self.spec = spec
        self.interp = NNInterpreter(spec)
        self.input_names = list(input_names)
        self.weights = dict(weights)
        self.trainable = {n: tuple(s) for n, s in trainable.items()}
        self.prediction_inputs = [i.name for i in spec.description.input]
        self.outputs = [o.name for o in spec.description.output]
        meta = metadata(spec)
        self.formulation = meta.get("dcx.formulation", "")
        self.label_input = meta.get("dcx.label_input", "")
        self.loss_target = meta.get("dcx.loss_target", "")
        self.trainable_output = meta.get("dcx.trainable_output")
        self.frozen_output = meta.get("dcx.frozen_output")
        self.target_scale = float(meta["dcx.target_scale"]) if "dcx.target_scale" in meta else None
        self.kinds = {layer.name: layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers}

    @classmethod
    def from_entry(cls, path: Path, entry: ManifestEntry) -> "ReferenceSession":
        return cls(load_spec(path), [i.name for i in entry.inputs], entry.weights, entry.trainable)

    # -- per-sample feeds

    def _arrays(self, inputs: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        if len(inputs) == len(self.input_names):
            return dict(zip(self.input_names, inputs))
        if len(inputs) == len(self.prediction_inputs):
            return dict(zip(self.prediction_inputs, inputs))
        raise DcxError(f"coreml: expected inputs {self.input_names} (or {self.prediction_inputs}), got {len(inputs)}")

    def _feeds(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Prediction inputs as a batch of samples: ``[B, *per-sample shape]``."""
        shapes = self.interp.input_shapes
        batch = len(arrays[self.prediction_inputs[0]])
        return {n: torch.as_tensor(np.asarray(arrays[n], dtype=np.float32).reshape(batch, *shapes[n]))
                for n in self.prediction_inputs}

    def _predict(self, feeds: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Per-sample outputs stacked on the batch axis (each sample's leading 1 is dropped)."""
        with torch.no_grad():
            out = self.interp.forward_batch(feeds, blobs=self.outputs)
        result = {}
        for o in self.outputs:
            v = out[o].numpy()
            result[o] = v.reshape(v.shape[0], *v.shape[2:]) if v.ndim >= 2 and v.shape[1] == 1 else v
        return result

    # -- Session

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        out = self._predict(self._feeds(self._arrays(inputs)))
        return [out[o] for o in self.outputs]

    def train_step(self, *inputs_and_targets: np.ndarray) -> float:
        arrays = self._arrays(inputs_and_targets)
        feeds = self._feeds(arrays)
        labels = np.asarray(arrays[self.label_input])
        if self.formulation == "mse_gradient_matching":
            out = self._predict(feeds)
            s, m = out[self.trainable_output], out[self.frozen_output]
            z = (s + m).reshape(len(labels), -1).astype(np.float64)
            logp = z - z.max(1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(1, keepdims=True))
            loss = float(-logp[np.arange(len(labels)), labels.astype(np.int64)].mean())
            targets = gradient_matching_target(s, m, labels, self.target_scale)
            feeds[self.loss_target] = torch.as_tensor(targets.reshape(len(labels), -1), dtype=torch.float32)
            self.interp.step(feeds)
            return loss
        feeds[self.loss_target] = torch.as_tensor(np.rint(labels.astype(np.float64)).reshape(-1, 1))
        return self.interp.step(feeds)

    def _as_torch(self, name: str, value: torch.Tensor) -> np.ndarray:
        """A spec weight (or an optimizer slot of it) in the PyTorch parameter ``name``'s layout."""
        layer, field = self.weights[name].rsplit("/", 1)
        value = value.detach().numpy()
        if self.kinds.get(layer) == "embeddingND" and field == "weights":
            shape = self.trainable[name]
            value = value.reshape(shape[1], shape[0]).T
        return np.ascontiguousarray(value).reshape(self.trainable[name])

    def get_weights(self) -> dict[str, np.ndarray]:
        return {name: self._as_torch(name, self.interp.params[ref]) for name, ref in self.weights.items()
                if name in self.trainable}

    def get_state(self) -> dict[str, np.ndarray]:
        return {}  # Core ML programs keep no state: batch norm in training mode is refused at export

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        state = self.interp.stepper.state if self.interp.stepper else {}
        return {f"{name}/{slot}": self._as_torch(name, t) for name, ref in self.weights.items()
                if name in self.trainable and ref in state for slot, t in state[ref].items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        for name, value in weights.items():
            ref = self.weights[name]
            layer, field = ref.rsplit("/", 1)
            value = np.asarray(value, dtype=np.float32)
            if self.kinds.get(layer) == "embeddingND" and field == "weights":
                value = value.T
            self.interp.params[ref] = torch.from_numpy(np.ascontiguousarray(value).reshape(-1).copy())

    def accuracy(self, batches: list[tuple[np.ndarray, ...]]) -> tuple[float, np.ndarray]:
        """Accuracy of the served prediction (``logits``) on the batches' samples, and the predictions."""
        preds, labels = [], []
        for batch in batches:
            arrays = self._arrays(batch)
            logits = self._predict(self._feeds(arrays))["logits"]
            label = np.asarray(arrays[self.label_input]).reshape(-1)
            flat = logits.reshape(len(label), -1)
            pred = flat.argmax(1) if flat.shape[1] > 1 else (flat[:, 0] > 0).astype(np.int64)
            preds.append(pred)
            labels.append(np.rint(label).astype(np.int64))
        p, y = np.concatenate(preds), np.concatenate(labels)
        return float((p == y).mean()), p


def measure_deviation(input_names: list[str], trainable: dict[str, list[int]], spec, weights: dict[str, str],
                      reference, alternative: tuple[object, dict[str, str]] | None = None) -> TrainingGap:
    """How far the artifact's Core ML formulation trains from the exact PyTorch objective.

    Runs the artifact's spec in the reference interpreter, driven as the app drives Core ML, on the
    reference's batches (``dcx.reference.ProgramReference``) and compares with its eager PyTorch losses
    and final weights; also the accuracy of the served prediction on those samples. ``alternative``
    (spec, weights) is measured the same way, e.g. the naive valid formulation that drops a frozen offset.
    """
    batches = [tuple(reference.batch_arrays(s)) for s in range(reference.steps)]
    ref_losses = [float(v) for v in reference.losses]
    ref_weights = reference.final

    def run(spec_, weights_) -> TrainingGap:
        session = ReferenceSession(spec_, input_names, weights_, trainable)
        losses = [session.train_step(*b) for b in batches]
        got = session.get_weights()
        per_param = {n: float(np.max(np.abs(got[n] - w))) for n, w in ref_weights.items() if n in got}
        acc, pred = session.accuracy(batches)
        ref_session = ReferenceSession(spec_, input_names, weights_, trainable)
        ref_session.set_weights({n: w for n, w in ref_weights.items() if n in weights_})
        ref_acc, ref_pred = ref_session.accuracy(batches)
        loss_abs = [abs(a - b) for a, b in zip(losses, ref_losses)]
        return TrainingGap(
            method=("reference interpreter of the exported spec, driven per sample as the app drives Core ML, "
                    "vs eager torch.optim on the reference batches"),
            formulation=metadata(spec_).get("dcx.formulation", ""),
            samples_for_accuracy=int(sum(len(b[0]) for b in batches)), steps=len(losses),
            loss_first=[losses[0], ref_losses[0]], loss_last=[losses[-1], ref_losses[-1]],
            loss_max_abs_diff=max(loss_abs),
            loss_max_rel_diff=max(d / max(1.0, abs(r)) for d, r in zip(loss_abs, ref_losses)),
            weight_max_abs_diff=max(per_param.values()), weight_max_abs_diff_by_param=per_param,
            accuracy_coreml_formulation=acc, accuracy_exact=ref_acc, accuracy_abs_diff=abs(acc - ref_acc),
            prediction_agreement=float((pred == ref_pred).mean()),
            moved=sorted(n for n, w in got.items() if not np.array_equal(w, reference.initial[n])))

    gap = run(spec, weights)
    if alternative is not None:
        gap.alternative_drop_frozen_offset = run(*alternative)
    return gap

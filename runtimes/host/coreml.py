"""Core ML host runtime.

Core ML compiles and predicts only on macOS. Here:

- ``available()`` says so on other systems, and ``load`` raises a ``DcxError``;
  on macOS ``load`` predicts through coremltools' ``MLModel.predict`` (training
  runs in the app through ``MLUpdateTask``, which coremltools does not expose:
  ``train_step`` says so).
- ``static_checks`` run anywhere: the spec parses (an ML program is also
  re-loaded into coremltools' MIL, which type-checks every op), inputs,
  outputs and signatures match the manifest entry, and for updatable models:
  updatable layers and flags, the loss layer, SGD at the manifest's learning
  rate and batch, Core ML's updatable-model rules (``coreml_updatable_rule``),
  and a reference execution of the spec.
- ``ReferenceSession`` runs an updatable ``.mlmodel``'s own spec in the
  reference interpreter (``coreml_interpreter``) the way an app drives Core ML:
  prediction per sample, the app-side target where the formulation needs one,
  one SGD step per mini-batch. It is *not* Core ML; it measures how far the
  artifact's formulation trains from the exact PyTorch objective
  (``measure_deviation``).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from dcx.errors import DcxError
from dcx.runtimes import Check

NEEDS_MACOS = "Core ML prediction needs macOS (coremltools compiles and runs models only there)"


# ---------------------------------------------------------------- loading specs

def load_spec(path: Path):
    """The Model protobuf of an ``.mlmodel`` file or ``.mlpackage`` folder."""
    from dcx.export.coreml import _quiet

    path = Path(path)
    if not path.exists():
        raise DcxError(f"{path} is missing: re-run `dcx export --format coreml`")
    with _quiet():
        from coremltools.models.utils import load_spec as _load

        try:
            return _load(str(path))
        except Exception as e:  # corrupt protobuf, missing Manifest.json, ...
            raise DcxError(f"{path} is not a readable Core ML model ({type(e).__name__}: {e}): re-export it") from None


def _meta(spec) -> dict[str, str]:
    return dict(spec.description.metadata.userDefined)


# ---------------------------------------------------------------- the app-side driver, on the reference interpreter

class ReferenceSession:
    """An updatable NeuralNetwork spec run by the reference interpreter, driven as the app drives Core ML."""

    def __init__(self, spec, input_names: list[str], weights: dict[str, str], trainable: dict[str, list[int]]):
        from dcx.export.passes.coreml_interpreter import NNInterpreter

        self.spec = spec
        self.interp = NNInterpreter(spec)
        self.input_names = list(input_names)
        self.weights = dict(weights)
        self.trainable = {n: tuple(s) for n, s in trainable.items()}
        self.prediction_inputs = [i.name for i in spec.description.input]
        self.outputs = [o.name for o in spec.description.output]
        meta = _meta(spec)
        self.formulation = meta.get("dcx.formulation", "")
        self.label_input = meta.get("dcx.label_input", "")
        self.loss_target = meta.get("dcx.loss_target", "")
        self.trainable_output = meta.get("dcx.trainable_output")
        self.frozen_output = meta.get("dcx.frozen_output")
        self.target_scale = float(meta["dcx.target_scale"]) if "dcx.target_scale" in meta else None
        self.kinds = {layer.name: layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers}

    @classmethod
    def from_entry(cls, path: Path, entry: dict) -> "ReferenceSession":
        return cls(load_spec(path), [i["name"] for i in entry["inputs"]], entry.get("weights", {}),
                   entry.get("trainable", {}))

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
            from dcx.export.passes.coreml_loss_head import gradient_matching_target

            out = self._predict(feeds)
            s, m = out[self.trainable_output], out[self.frozen_output]
            z = (s + m).reshape(len(labels), -1).astype(np.float64)
            logp = z - z.max(1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(1, keepdims=True))
            loss = float(-logp[np.arange(len(labels)), labels.astype(np.int64)].mean())
            targets = gradient_matching_target(s, m, labels, self.target_scale)
            feeds[self.loss_target] = torch.as_tensor(targets.reshape(len(labels), -1), dtype=torch.float32)
            self.interp.sgd_step(feeds)
            return loss
        feeds[self.loss_target] = torch.as_tensor(np.rint(labels.astype(np.float64)).reshape(-1, 1))
        return self.interp.sgd_step(feeds)

    def get_weights(self) -> dict[str, np.ndarray]:
        out = {}
        for name, ref in self.weights.items():
            if name not in self.trainable:
                continue
            layer, field = ref.rsplit("/", 1)
            value = self.interp.params[ref].detach().numpy()
            if self.kinds.get(layer) == "embeddingND" and field == "weights":
                shape = self.trainable[name]
                value = value.reshape(shape[1], shape[0]).T
            out[name] = np.ascontiguousarray(value).reshape(self.trainable[name])
        return out

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


def _sig(x: float) -> float:
    return float(f"{x:.3g}") if x and math.isfinite(x) else float(x)


def measure_deviation(program, model=None, *, path: Path | None = None, entry: dict | None = None,
                      steps: int = 50, seed: int = 0, alternatives: bool = True) -> dict:
    """How far the artifact's Core ML formulation trains from the exact PyTorch objective.

    Runs ``steps`` SGD steps of the artifact's spec (``model`` from the exporter, or ``path`` + ``entry``)
    in the reference interpreter on ``program.example_batches(steps, seed)`` and compares with
    ``program.reference_training`` on the same batches: per-step loss, final weights, and accuracy of the
    served prediction on those samples. For a formulation that drops a frozen offset, also measures the
    naive valid alternative (CE on the trainable term alone).
    """
    if model is not None:
        spec, weights = model.spec, model.weights
    elif path is not None and entry is not None:
        spec, weights = load_spec(path), entry["weights"]
    else:
        raise ValueError("measure_deviation needs the exporter's model or path + entry")
    trainable = {n: list(p.shape) for n, p in program.trainable.items()}
    batches = program.example_batches(steps, seed)
    np_batches = [tuple(t.numpy() for t in b) for b in batches]
    ref_losses, ref_weights = program.reference_training(batches)
    ref_weights = {n: w.numpy() for n, w in ref_weights.items()}

    def run(spec_, weights_) -> dict:
        session = ReferenceSession(spec_, list(program.input_names), weights_, trainable)
        losses = [session.train_step(*b) for b in np_batches]
        got = session.get_weights()
        per_param = {n: float(np.max(np.abs(got[n] - w))) for n, w in ref_weights.items() if n in got}
        acc, pred = session.accuracy(np_batches)
        ref_session = ReferenceSession(spec_, list(program.input_names), weights_, trainable)
        ref_session.set_weights({n: w for n, w in ref_weights.items() if n in weights_})
        ref_acc, ref_pred = ref_session.accuracy(np_batches)
        loss_abs = [abs(a - b) for a, b in zip(losses, ref_losses)]
        return {
            "steps": len(losses),
            "loss_first": [_sig(losses[0]), _sig(ref_losses[0])],
            "loss_last": [_sig(losses[-1]), _sig(ref_losses[-1])],
            "loss_max_abs_diff": _sig(max(loss_abs)),
            "loss_max_rel_diff": _sig(max(d / max(1.0, abs(r)) for d, r in zip(loss_abs, ref_losses))),
            "weight_max_abs_diff": _sig(max(per_param.values())),
            "weight_max_abs_diff_by_param": {n: _sig(v) for n, v in per_param.items()},
            "accuracy_coreml_formulation": round(acc, 4),
            "accuracy_exact": round(ref_acc, 4),
            "accuracy_abs_diff": round(abs(acc - ref_acc), 4),
            "prediction_agreement": round(float((pred == ref_pred).mean()), 4),
        }

    result = {"method": ("reference interpreter of the exported spec (coreml_interpreter), driven per sample as the "
                         "app drives Core ML, vs program.reference_training on program.example_batches"),
              "seed": seed, "formulation": _meta(spec).get("dcx.formulation", ""),
              "samples_for_accuracy": int(sum(len(b[0]) for b in np_batches)), **run(spec, weights)}
    if alternatives and result["formulation"] == "mse_gradient_matching":
        from dcx.export.coreml import build_updatable

        alt = build_updatable(program, "drop_frozen_offset")
        result["alternative_drop_frozen_offset"] = run(alt.spec, alt.weights)
    return result


# ---------------------------------------------------------------- macOS session

class CoreMLSession:
    """Prediction through Core ML itself (macOS). Training runs in the app (MLUpdateTask)."""

    def __init__(self, path: Path, entry: dict):
        import coremltools as ct

        self.path, self.entry = Path(path), entry
        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        self.spec = self.model.get_spec()
        self.prediction_inputs = [i.name for i in self.spec.description.input]
        self.outputs = [o.name for o in self.spec.description.output]
        self.input_names = [i["name"] for i in entry["inputs"]]
        self.per_sample = self.spec.WhichOneof("Type") != "mlProgram"
        self.types = {i.name: i.type.multiArrayType for i in self.spec.description.input}

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        names = self.input_names if len(inputs) == len(self.input_names) else self.prediction_inputs
        arrays = dict(zip(names, inputs))
        if not self.per_sample:
            out = self.model.predict({n: arrays[n] for n in self.prediction_inputs})
            return [np.asarray(out[o]) for o in self.outputs]
        batch = len(arrays[self.prediction_inputs[0]])
        feeds = [{n: np.asarray(arrays[n][i:i + 1], dtype=np.float32).reshape(tuple(self.types[n].shape))
                  for n in self.prediction_inputs} for i in range(batch)]
        outs = self.model.predict(feeds)
        return [np.concatenate([np.asarray(o[name]).reshape(1, *np.asarray(o[name]).shape[1:]) for o in outs])
                for name in self.outputs]

    def train_step(self, *inputs_and_targets: np.ndarray) -> float:
        raise NotImplementedError(f"{self.path.name}: Core ML trains updatable models through MLUpdateTask in an "
                                  "app, which coremltools does not expose; see coreml_deviation_measured")

    def get_weights(self) -> dict[str, np.ndarray]:
        return ReferenceSession(self.spec, self.input_names, self.entry.get("weights", {}),
                                self.entry.get("trainable", {})).get_weights()


# ---------------------------------------------------------------- static checks

def _feature_rows(features) -> list[dict]:
    from dcx.export.coreml import _feature_spec

    return [_feature_spec(f) for f in features]


def _same_specs(got: list[dict], want: list[dict]) -> str | None:
    g = [(f["name"], list(f["shape"]), f["dtype"]) for f in got]
    w = [(f["name"], list(f["shape"]), f["dtype"]) for f in want]
    return None if g == w else f"artifact {g} vs manifest {w}"


def _check_io_infer(spec, entry) -> list[Check]:
    rows = []
    ins = _feature_rows(spec.description.input)
    outs = _feature_rows(spec.description.output)
    problem = _same_specs(ins, entry.get("inputs", []))
    rows.append(Check("coreml_inputs", problem is None, None, problem or "names, shapes, dtypes match the manifest"))
    want_out = entry.get("outputs", [])
    problem = _same_specs(outs, want_out)
    rows.append(Check("coreml_outputs", problem is None, None, problem or "names, shapes, dtypes match the manifest"))
    return rows


def _check_io_train(spec, entry) -> list[Check]:
    """Per-sample model inputs against the manifest's batched program inputs."""
    rows = []
    by_name = {i["name"]: i for i in entry.get("inputs", [])}
    batch = None
    problems = []
    for f in _feature_rows(spec.description.input):
        want = by_name.get(f["name"])
        if want is None:
            problems.append(f"model input {f['name']} is not a program input")
            continue
        batch = want["shape"][0] if want["shape"] else 1
        if int(np.prod(f["shape"])) * batch != int(np.prod(want["shape"])) or f["dtype"] != "float32":
            problems.append(f"{f['name']}: per-sample {f['shape']} {f['dtype']} vs manifest {want['shape']} "
                            f"{want['dtype']}")
    meta = _meta(spec)
    label = meta.get("dcx.label_input")
    if label and label not in by_name:
        problems.append(f"metadata dcx.label_input {label!r} is not a manifest input")
    used = {f["name"] for f in _feature_rows(spec.description.input)} | {label}
    unused = [n for n in by_name if n not in used]
    if unused:
        problems.append(f"manifest inputs {unused} are not consumed by the model")
    rows.append(Check("coreml_inputs", not problems, None,
                      "; ".join(problems) or f"per-sample model inputs cover the manifest inputs (batch {batch}); "
                                              f"target from {label}"))
    sigs = entry.get("signatures", {})
    from dcx.export.coreml import signatures_of

    mine = signatures_of(spec)
    problem = None if sigs == mine else f"artifact signatures {mine} vs manifest {sigs}"
    rows.append(Check("coreml_signatures", problem is None, None, problem or "predict and train signatures match"))
    return rows


def _check_updatable(spec, entry) -> list[Check]:
    from dcx.export.passes.coreml_updatable_rule import check_updatable_model

    rows = []
    nn = spec.neuralNetwork
    weights = entry.get("weights", {})
    trainable = entry.get("trainable", {})
    layers = {layer.name: layer for layer in nn.layers}
    updatable = [layer.name for layer in nn.layers if layer.isUpdatable]
    problems = []
    for name, shape in trainable.items():
        ref = weights.get(name)
        if ref is None:
            problems.append(f"{name}: no weight mapping")
            continue
        layer_name, fld = ref.rsplit("/", 1)
        layer = layers.get(layer_name)
        if layer is None:
            problems.append(f"{name}: layer {layer_name} is missing")
            continue
        params = getattr(layer, layer.WhichOneof("layer"))
        w = getattr(params, fld, None)
        size = len(w.floatValue) if w is not None else -1
        if size != int(np.prod(shape)):
            problems.append(f"{name}: {ref} holds {size} values, manifest shape {shape}")
        if layer.isUpdatable and not w.isUpdatable:
            problems.append(f"{ref} is in an updatable layer but not marked updatable")
    frozen_in_coreml = [n for n, ref in weights.items() if n in trainable and ref.rsplit("/", 1)[0] not in updatable]
    documented = all(any(n in d for d in entry.get("deviations", [])) for n in frozen_in_coreml)
    if not documented:
        problems.append(f"trainable parameters frozen in Core ML without a deviation entry: {frozen_in_coreml}")
    rows.append(Check("coreml_updatable_layers", not problems and spec.isUpdatable and bool(updatable), None,
                      "; ".join(problems) or f"updatable: {', '.join(updatable)}"
                      + (f"; frozen (documented): {', '.join(frozen_in_coreml)}" if frozen_in_coreml else "")))

    losses = list(nn.updateParams.lossLayers)
    loss_ok, detail = len(losses) == 1, f"{len(losses)} loss layers"
    if loss_ok:
        kind = losses[0].WhichOneof("LossLayerType")
        params = getattr(losses[0], kind)
        meta = _meta(spec)
        formulation = meta.get("dcx.formulation", "")
        expected = "meanSquaredErrorLossLayer" if formulation == "mse_gradient_matching" else \
            "categoricalCrossEntropyLossLayer"
        training = {t.name for t in spec.description.trainingInput}
        loss_ok = kind == expected and params.target in training and params.target == meta.get("dcx.loss_target")
        detail = f"{kind}({params.input}, target {params.target}) for formulation {formulation}"
    rows.append(Check("coreml_loss_layer", loss_ok, None, detail))

    opt = nn.updateParams.optimizer
    lr_want = (entry.get("optimizer") or {}).get("lr")
    batch_want = entry["inputs"][0]["shape"][0] if entry.get("inputs") and entry["inputs"][0]["shape"] else None
    if opt.WhichOneof("OptimizerType") != "sgdOptimizer" or lr_want is None:
        rows.append(Check("coreml_optimizer", False, None,
                          f"optimizer {opt.WhichOneof('OptimizerType')} vs manifest {entry.get('optimizer')}"))
    else:
        sgd = opt.sgdOptimizer
        err = abs(sgd.learningRate.defaultValue - lr_want)
        ok = (err <= 1e-12 and sgd.momentum.defaultValue == 0 and sgd.miniBatchSize.defaultValue == batch_want
              and nn.updateParams.epochs.defaultValue == 1)
        rows.append(Check("coreml_optimizer", ok, err,
                          f"SGD lr {sgd.learningRate.defaultValue:g} (manifest {lr_want:g}), momentum "
                          f"{sgd.momentum.defaultValue:g}, mini-batch {sgd.miniBatchSize.defaultValue} (manifest "
                          f"{batch_want}), epochs {nn.updateParams.epochs.defaultValue}"))

    problems = check_updatable_model(spec)
    rows.append(Check("coreml_updatable_rules", not problems, None,
                      "; ".join(problems) or "Core ML's updatable-model validation (re-implemented) passes, "
                                             "including backpropagation from every updatable layer to the loss"))
    try:
        session = ReferenceSession(spec, [i["name"] for i in entry["inputs"]], weights, trainable)
        shapes = session.interp.shapes()
        rows.append(Check("coreml_reference_execution", True, None,
                          f"every layer has reference semantics; {len(shapes)} blobs shape-check"))
    except DcxError as e:
        rows.append(Check("coreml_reference_execution", False, None, str(e)))

    measured = (entry.get("notes") or {}).get("deviation_measured")
    if measured and "skipped" in json.loads(measured):
        rows.append(Check("coreml_deviation_measured", True, None, json.loads(measured)["skipped"]))
    elif measured:
        m = json.loads(measured)
        rows.append(Check("coreml_deviation_measured", True, m.get("weight_max_abs_diff"),
                          f"{m.get('formulation')}: {m.get('steps')} steps, "
                          f"loss max diff {m.get('loss_max_abs_diff')}, "
                          f"weights max diff {m.get('weight_max_abs_diff')}, accuracy "
                          f"{m.get('accuracy_coreml_formulation')} vs exact {m.get('accuracy_exact')}"))
    return rows


class CoreMLRuntime:
    format = "coreml"

    def available(self) -> str | None:
        if sys.platform != "darwin":
            return (f"{NEEDS_MACOS}; this host is {sys.platform}. "
                    "Static checks (spec, shapes, updatable rules) still run")
        try:
            import coremltools.libcoremlpython  # noqa: F401
        except ImportError:
            return "coremltools' native library (libcoremlpython) is missing: pip install coremltools==9.0 on macOS"
        return None

    def version(self) -> str:
        return importlib.metadata.version("coremltools")

    def load(self, path: Path, entry: dict) -> CoreMLSession:
        reason = self.available()
        if reason:
            raise DcxError(f"{Path(path).name}: {reason}")
        return CoreMLSession(path, entry)

    def load_reference(self, path: Path, entry: dict) -> ReferenceSession:
        """The updatable spec in the reference interpreter (Linux stand-in; not Core ML)."""
        return ReferenceSession.from_entry(path, entry)

    def measure_deviation(self, program, path: Path, entry: dict, steps: int = 50, seed: int = 0) -> dict:
        return measure_deviation(program, path=path, entry=entry, steps=steps, seed=seed)

    def static_checks(self, path: Path, entry: dict) -> list[Check]:
        path = Path(path)
        try:
            spec = load_spec(path)
        except DcxError as e:
            return [Check("coreml_spec_loads", False, None, str(e))]
        kind = spec.WhichOneof("Type")
        rows = []
        want = "mlProgram" if entry.get("kind") == "infer" else "neuralNetwork"
        suffix_ok = path.suffix == (".mlpackage" if want == "mlProgram" else ".mlmodel")
        rows.append(Check("coreml_spec_loads", kind == want and suffix_ok, None,
                          f"{kind} (spec version {spec.specificationVersion}) in {path.suffix}"
                          + ("" if kind == want and suffix_ok else f"; expected {want}")))
        if kind == "mlProgram":
            rows.append(self._check_mil(path, spec))
            rows.extend(_check_io_infer(spec, entry))
        elif kind == "neuralNetwork":
            rows.extend(_check_io_train(spec, entry))
            rows.extend(_check_updatable(spec, entry))
        if sys.platform == "darwin":
            rows.append(self._check_compiles(path))
        return rows

    @staticmethod
    def _check_mil(path: Path, spec) -> Check:
        """coremltools re-reads the ML program into MIL, type-checking every operation and its weights."""
        from dcx.export.coreml import _quiet

        weights = path / "Data" / "com.apple.CoreML" / "weights"
        try:
            with _quiet():
                from coremltools.converters.mil.frontend.milproto import load as milproto_load

                program = milproto_load.load(spec, spec.specificationVersion, str(weights))
            ops = sum(len(list(f.operations)) for f in program.functions.values())
            return Check("coreml_mil_validates", True, None, f"ML program re-loads into MIL: {ops} ops type-check")
        except Exception as e:
            return Check("coreml_mil_validates", False, None, f"{type(e).__name__}: {e}".splitlines()[0])

    @staticmethod
    def _check_compiles(path: Path) -> Check:
        try:
            import coremltools as ct

            ct.models.MLModel(str(path))
            return Check("coreml_compiles", True, None, "Core ML compiled and loaded the model")
        except Exception as e:
            return Check("coreml_compiles", False, None, f"{type(e).__name__}: {e}".splitlines()[0])


RUNTIME = CoreMLRuntime()

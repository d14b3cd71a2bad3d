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
  rate and batch, Core ML's updatable-model rules
  (``dcx.backends.coreml.updatable_rules``), and a reference execution of the
  spec (``dcx.backends.coreml.reference_session``).
"""

from __future__ import annotations

import importlib.metadata
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dcx.errors import DcxError
from dcx.backends.coreml.spec import feature_spec, load_spec, metadata, quiet, signatures_of
from dcx.backends.coreml.interpreter import NNInterpreter
from dcx.backends.coreml.reference_session import ReferenceSession
from dcx.manifest import ManifestEntry, OptimizerSpec
from dcx.programs import TensorSpec
from dcx.backends.runtime import Check, train_on_reference

NEEDS_MACOS = "Core ML prediction needs macOS (coremltools compiles and runs models only there)"



# ---------------------------------------------------------------- macOS session

class CoreMLSession:
    """Prediction through Core ML itself (macOS). Training runs in the app (MLUpdateTask)."""

    def __init__(self, path: Path, entry: ManifestEntry):
        import coremltools as ct

        self.path, self.entry = Path(path), entry
        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        self.spec = self.model.get_spec()
        self.prediction_inputs = [i.name for i in self.spec.description.input]
        self.outputs = [o.name for o in self.spec.description.output]
        self.input_names = [i.name for i in entry.inputs]
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
                                  "app, which coremltools does not expose; see coreml_training_gap")

    def get_weights(self) -> dict[str, np.ndarray]:
        return ReferenceSession(self.spec, self.input_names, self.entry.weights, self.entry.trainable).get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        raise NotImplementedError(f"{self.path.name}: Core ML updates weights only through MLUpdateTask in an app")


# ---------------------------------------------------------------- static checks

def _feature_rows(features) -> list[TensorSpec]:
    return [feature_spec(f) for f in features]


# Core ML's multi-arrays have no 64-bit integers: the converter narrows int64 inputs (ids, indices) to int32.
COREML_DTYPE = {"int64": "int32"}


def _same_specs(got: list[TensorSpec], want: list[TensorSpec]) -> str | None:
    g = [(f.name, list(f.shape), f.dtype) for f in got]
    w = [(f.name, list(f.shape), COREML_DTYPE.get(f.dtype, f.dtype)) for f in want]
    return None if g == w else f"artifact {g} vs manifest {w}"


def _check_io_infer(spec, entry) -> list[Check]:
    rows = []
    ins = _feature_rows(spec.description.input)
    outs = _feature_rows(spec.description.output)
    problem = _same_specs(ins, entry.inputs)
    rows.append(Check("coreml_inputs", problem is None, None,
                      problem or "names, shapes, dtypes match the manifest (int64 as int32)"))
    want_out = entry.outputs
    problem = _same_specs(outs, want_out)
    rows.append(Check("coreml_outputs", problem is None, None, problem or "names, shapes, dtypes match the manifest"))
    return rows


def _check_io_train(spec, entry) -> list[Check]:
    """Per-sample model inputs against the manifest's batched program inputs."""
    rows = []
    by_name = {i.name: i for i in entry.inputs}
    batch = None
    problems = []
    for f in _feature_rows(spec.description.input):
        want = by_name.get(f.name)
        if want is None:
            problems.append(f"model input {f.name} is not a program input")
            continue
        batch = want.shape[0] if want.shape else 1
        if int(np.prod(f.shape)) * batch != int(np.prod(want.shape)) or f.dtype != "float32":
            problems.append(f"{f.name}: per-sample {list(f.shape)} {f.dtype} vs manifest {list(want.shape)} "
                            f"{want.dtype}")
    meta = metadata(spec)
    label = meta.get("dcx.label_input")
    if label and label not in by_name:
        problems.append(f"metadata dcx.label_input {label!r} is not a manifest input")
    used = {f.name for f in _feature_rows(spec.description.input)} | {label}
    unused = [n for n in by_name if n not in used]
    if unused:
        problems.append(f"manifest inputs {unused} are not consumed by the model")
    rows.append(Check("coreml_inputs", not problems, None,
                      "; ".join(problems) or f"per-sample model inputs cover the manifest inputs (batch {batch}); "
                                              f"target from {label}"))
    sigs = entry.signatures
    mine = signatures_of(spec)
    problem = None if sigs == mine else f"artifact signatures {mine} vs manifest {sigs}"
    rows.append(Check("coreml_signatures", problem is None, None, problem or "predict and train signatures match"))
    return rows


def _check_updatable(spec, entry) -> list[Check]:
    from dcx.backends.coreml.updatable_rules import check_updatable_model

    rows = []
    nn = spec.neuralNetwork
    weights, trainable = entry.weights, entry.trainable
    layers = {layer.name: layer for layer in nn.layers}
    updatable = [layer.name for layer in nn.layers if layer.isUpdatable]
    problems = []
    documented = {p for d in entry.deviations for p in d.parameters}  # frozen in Core ML, said so
    for name, shape in trainable.items():
        ref = weights.get(name)
        if ref is None:
            if name not in documented:
                problems.append(f"{name}: no weight mapping and no deviation saying it cannot train")
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
    if not set(frozen_in_coreml) <= documented:
        problems.append(f"trainable parameters frozen in Core ML without a deviation entry: {frozen_in_coreml}")
    rows.append(Check("coreml_updatable_layers", not problems and spec.isUpdatable and bool(updatable), None,
                      "; ".join(problems) or f"updatable: {', '.join(updatable)}"
                      + (f"; frozen (documented): {', '.join(frozen_in_coreml)}" if frozen_in_coreml else "")))

    losses = list(nn.updateParams.lossLayers)
    loss_ok, detail = len(losses) == 1, f"{len(losses)} loss layers"
    if loss_ok:
        kind = losses[0].WhichOneof("LossLayerType")
        params = getattr(losses[0], kind)
        meta = metadata(spec)
        formulation = meta.get("dcx.formulation", "")
        expected = "meanSquaredErrorLossLayer" if formulation == "mse_gradient_matching" else \
            "categoricalCrossEntropyLossLayer"
        training = {t.name for t in spec.description.trainingInput}
        loss_ok = kind == expected and params.target in training and params.target == meta.get("dcx.loss_target")
        detail = f"{kind}({params.input}, target {params.target}) for formulation {formulation}"
    rows.append(Check("coreml_loss_layer", loss_ok, None, detail))

    rows.append(_optimizer_check(nn, entry))

    problems = check_updatable_model(spec)
    rows.append(Check("coreml_updatable_rules", not problems, None,
                      "; ".join(problems) or "Core ML's updatable-model validation (re-implemented) passes, "
                                             "including backpropagation from every updatable layer to the loss"))
    try:
        session = ReferenceSession(spec, [i.name for i in entry.inputs], weights, trainable)
        shapes = session.interp.shapes()
        rows.append(Check("coreml_reference_execution", True, None,
                          f"every layer has reference semantics; {len(shapes)} blobs shape-check"))
    except DcxError as e:
        rows.append(Check("coreml_reference_execution", False, None, str(e)))

    return rows


def _optimizer_check(nn, entry: ManifestEntry) -> Check:
    """The spec's optimizer, mini-batch and epochs are the manifest's: the optimizer the interpreter steps and
    the one PyTorch's reference stepped are the same."""
    batch_want = entry.inputs[0].shape[0] if entry.inputs and entry.inputs[0].shape else None
    epochs = nn.updateParams.epochs.defaultValue
    if entry.optimizer is None:
        return Check("coreml_optimizer", False, None, "the manifest gives no optimizer: re-export")
    try:
        got = OptimizerSpec.of(NNInterpreter.optimizer_of(nn))
    except DcxError as e:
        return Check("coreml_optimizer", False, None, str(e))
    batch = getattr(nn.updateParams.optimizer, nn.updateParams.optimizer.WhichOneof("OptimizerType")).miniBatchSize
    err = abs(got.lr - entry.optimizer.lr)
    ok = got == entry.optimizer and batch.defaultValue == batch_want and epochs == 1
    return Check("coreml_optimizer", ok, err, f"{got.type} {asdict(got)} (manifest {asdict(entry.optimizer)}), "
                                               f"mini-batch {batch.defaultValue} (manifest {batch_want}), epochs {epochs}")


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

    def load(self, path: Path, entry: ManifestEntry) -> CoreMLSession:
        reason = self.available()
        if reason:
            raise DcxError(f"{Path(path).name}: {reason}")
        return CoreMLSession(path, entry)

    def load_reference(self, path: Path, entry: ManifestEntry) -> ReferenceSession:
        """The updatable spec in the reference interpreter (Linux stand-in; not Core ML)."""
        return ReferenceSession.from_entry(path, entry)

    def reference_checks(self, path: Path, entry: ManifestEntry, reference, tolerance) -> list[Check]:
        """An updatable model's own spec trained in the reference interpreter as the app drives Core ML, on the
        reference batches, on every host (macOS too):
        - each parameter that should train moves: those PyTorch's steps move by more than the tolerance, or,
          where a deviation freezes some, those that moved when export measured the gap;
        - each parameter a documented deviation freezes stays exactly as it was;
        - per parameter, the gap from eager torch.optim is within ``tolerance`` where the artifact trains every
          parameter, and nowhere larger than the gap export measured (``Deviation.measured``) by more than
          ``tolerance`` (threads sum in another order)."""
        if entry.kind != "train":
            return []
        frozen = {p for d in entry.deviations for p in d.parameters}
        recorded = next((d.measured for d in entry.deviations if d.measured), None)
        if recorded is None:
            return [Check("coreml_training_gap", False, None, "the manifest records no measured training gap for "
                                                               "this artifact: re-export it")]
        run = train_on_reference(ReferenceSession.from_entry(path, entry), reference, frozen)
        # Every parameter trains: those PyTorch moves by more than the tolerance. Some frozen: the others follow
        # another trajectory, so those the artifact's steps moved when export measured them.
        should_move = set(recorded.moved) if frozen else {
            n for n in run.weights if np.max(np.abs(reference.final[n] - reference.initial[n])) > tolerance.weights}
        stuck = sorted(n for n in should_move if np.array_equal(run.weights[n], reference.initial[n]))
        moved = sorted(n for n in frozen if n in run.weights and not np.array_equal(run.weights[n],
                                                                                    reference.initial[n]))
        problems = [f"{', '.join(stuck)} did not move ({'they moved at export' if frozen else 'PyTorch moves them'})"
                    ] if stuck else []
        problems += [f"{', '.join(moved)} moved, though the manifest documents them frozen in Core ML"] if moved else []
        rows = [Check("coreml_parameters_train", not problems, None, "; ".join(problems) or
                      f"{len(should_move)} parameters move as in PyTorch"
                      + (f"; {len(frozen)} documented frozen stay ({', '.join(sorted(frozen))})" if frozen else ""))]
        gaps = dict(run.weight_errors)
        # With a parameter frozen, every other one trains on another trajectory: only the export bound holds.
        problems = [] if frozen else [f"{n} {gaps[n]:.2e} > tol {tolerance.weights:.0e}" for n in sorted(gaps)
                                      if gaps[n] > tolerance.weights]
        at_export = recorded.weight_max_abs_diff_by_param
        problems += [f"{n} {gaps[n]:.2e} > {at_export.get(n, 0.0):.2e} measured at export + tol {tolerance.weights:.0e}"
                     for n in sorted(gaps) if gaps[n] > at_export.get(n, 0.0) + tolerance.weights]
        loss_bound = tolerance.loss + (recorded.loss_max_rel_diff if frozen else 0.0)
        if run.loss_error > loss_bound:
            problems.append(f"loss error {run.loss_error:.2e} > {loss_bound:.2e}")
        worst = max(gaps, key=gaps.get)
        rows.append(Check("coreml_training_gap", not problems, max(gaps.values()), "; ".join(problems[:3]) or
                          f"{reference.steps} steps of the spec in the reference interpreter vs torch.optim: loss "
                          f"{run.losses[0]:.4f} -> {run.losses[-1]:.4f}, loss error {run.loss_error:.2e}, worst "
                          f"weight gap {gaps[worst]:.2e} ({worst}"
                          + (", frozen in Core ML: documented" if worst in frozen else "") + ")"))
        return rows

    def static_checks(self, path: Path, entry: ManifestEntry) -> list[Check]:
        path = Path(path)
        try:
            spec = load_spec(path)
        except DcxError as e:
            return [Check("coreml_spec_loads", False, None, str(e))]
        kind = spec.WhichOneof("Type")
        rows = []
        want = "mlProgram" if entry.kind == "infer" else "neuralNetwork"
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
        weights = path / "Data" / "com.apple.CoreML" / "weights"
        try:
            with quiet():
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

"""Core ML exporter: ``.mlpackage`` (ML program) for inference, updatable ``.mlmodel`` for training.

Inference programs: ``ct.convert`` of the program's ``torch.export`` graph
(``graph_capture.capture``, static shapes) to an ML program, float32 compute
precision (parity with PyTorch within 1e-4).

Training programs: an updatable NeuralNetwork, derived from the program and
never rewritten by hand:

1. ``coreml_static_shapes``: FX trace with named inputs, shapes folded to one
   sample (Core ML feeds updatable models sample by sample).
2. ``coreml_split_loss``: the loss comes off the graph; the predictor returns its logits.
3. ``coreml_frozen_offset``: ``frozen(x) + trainable(x)`` logits (DC-CCL) become
   two outputs and their sum.
4. ``ct.convert(..., convert_to="neuralnetwork")``.
5. ``coreml_name_layers``: layers named after their PyTorch modules; the weight map.
6. ``coreml_backprop_layers``: the chain from the loss up into backpropagable layers.
7. ``coreml_loss_head``: Core ML loss layer (exact CE, BCE as 2-class CE, or
   the gradient-matching MSE for a frozen offset).
8. updatable layers = trainable layers Core ML can reach from the loss
   (``coreml_updatable_rule.backprop_reachable``), ``make_updatable``, SGD at
   the program's learning rate, mini-batch = the program's batch, 1 epoch.
9. ``coreml_updatable_rule.check_updatable_model``: Core ML's own validation,
   re-implemented; an invalid model is never written.

Every trainable parameter that cannot train in Core ML, and every other way the
artifact differs from the PyTorch objective, is listed in ``deviations``;
``notes["deviation_measured"]`` holds the measured effect (see
``dcx.runtimes.coreml.measure_deviation``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dcx.errors import DcxError
from dcx.export import ArtifactInfo, ExportOptions
from dcx.programs import DeviceProgram, TensorSpec

DEPLOYMENT_TARGET = "iOS15"  # ML programs need iOS 15; updatable NeuralNetworks need iOS 13 (spec 4)
MEASURE_STEPS = 50


@contextlib.contextmanager
def _quiet():
    """coremltools prints progress bars, version warnings and per-layer lines."""
    loggers = [logging.getLogger(n) for n in ("coremltools",)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _ct():
    with _quiet():
        import coremltools as ct
    return ct


@dataclass
class UpdatableModel:
    """An updatable NeuralNetwork spec and what the exporter learned building it."""

    spec: object
    weights: dict[str, str]  # PyTorch parameter -> "<layer>/<field>"
    updatable_layers: list[str]
    frozen_trainables: dict[str, str]  # PyTorch parameter -> why it cannot train in Core ML
    formulation: str
    loss_target: str  # the training input carrying the target
    label_input: str  # the program input the target comes from
    prediction_inputs: list[str]
    prediction_outputs: list[str]
    trainable_output: str | None = None
    frozen_output: str | None = None
    target_scale: float | None = None
    deviations: list[str] = field(default_factory=list)


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    return t[:1]


def build_updatable(program: DeviceProgram, formulation: str = "closest") -> UpdatableModel:
    """The updatable Core ML spec of a training program.

    ``formulation``: "closest" (the exported one), "direct" (the loss on the
    logits as PyTorch computes them, e.g. softmax of the summed DC-CCL logits:
    Core ML rejects it; kept to show the rule) or "drop_frozen_offset" (CE on
    the trainable term alone: valid, but a different objective; for measuring).
    """
    from dcx.export.passes.coreml_backprop_layers import to_backprop_layers
    from dcx.export.passes.coreml_frozen_offset import split_frozen_offset
    from dcx.export.passes.coreml_interpreter import NNInterpreter, layer_weight_fields
    from dcx.export.passes.coreml_loss_head import (add_binary_cross_entropy, add_cross_entropy,
                                                    add_gradient_matching_mse)
    from dcx.export.passes.coreml_name_layers import name_layers
    from dcx.export.passes.coreml_split_loss import placeholder_names, split_loss
    from dcx.export.passes.coreml_static_shapes import specialize_shapes, trace_named
    from dcx.export.passes.coreml_updatable_rule import backprop_reachable

    if program.kind != "train":
        raise ValueError(f"{program.name} is not a training program")
    ct = _ct()
    from coremltools.models.neural_network import NeuralNetworkBuilder, SgdParams

    one = tuple(_per_sample(t) for t in program.example_inputs)
    gm = specialize_shapes(trace_named(program.module, program.input_names), one)
    gm, head = split_loss(gm, program.name)
    trainable = set(program.trainable)
    offset = split_frozen_offset(gm, trainable) if formulation in ("closest", "drop_frozen_offset") else None
    names = placeholder_names(gm)
    inputs = [one[program.input_names.index(n)] for n in names]
    outputs = [offset.trainable_output, offset.frozen_output, offset.sum_output] if offset else ["logits"]
    with _quiet():
        traced = torch.jit.trace(gm.eval(), tuple(inputs))
        mlmodel = ct.convert(traced, convert_to="neuralnetwork",
                             inputs=[ct.TensorType(n, shape=tuple(t.shape), dtype=t.numpy().dtype)
                                     for n, t in zip(names, inputs)],
                             outputs=[ct.TensorType(o) for o in outputs])
    spec = mlmodel.get_spec()
    weights = name_layers(spec, dict(program.module.named_parameters()))
    deviations: list[str] = []

    loss_logits = offset.trainable_output if offset else outputs[0]
    loss_input = to_backprop_layers(spec, loss_logits)
    shapes = NNInterpreter(spec).shapes()
    target_scale = None
    if offset and formulation == "closest":
        num_classes = int(np.prod(shapes[loss_input]))
        target = f"{offset.trainable_output}_target"
        loss = add_gradient_matching_mse(spec, loss_input, shapes[loss_input], target, num_classes)
        target_scale = loss.target_scale
        deviations.append(
            f"Core ML rejects the elementwise add of the frozen {offset.frozen_output} and the updatable "
            f"{offset.trainable_output} before the loss, so CE({offset.frozen_output} + {offset.trainable_output}, "
            f"{head.target}) is trained as MSE({offset.trainable_output}, {target}) with the gradient-matching target "
            f"{target} = s - {target_scale:g}*(softmax(m + s) - onehot({head.target})), computed by the app from one "
            f"prediction of this model (outputs {offset.trainable_output}=s, {offset.frozen_output}=m) before every "
            f"update of one epoch; its gradient equals the exact CE gradient at the current weights, so each SGD step "
            f"is the exact DC-CCL step. Exactness assumes Core ML's MSE averages over the {num_classes} elements "
            f"(scale k={target_scale:g} in metadata dcx.target_scale); the loss Core ML reports is that MSE, the app "
            f"computes the CE from the outputs.")
    elif head.kind == "cross_entropy":
        loss = add_cross_entropy(spec, loss_input, head.target)
        if offset:
            deviations.append(f"the frozen {offset.frozen_output} is dropped from the objective: CE on "
                              f"{offset.trainable_output} alone (uncontrolled training)")
    else:
        loss = add_binary_cross_entropy(spec, loss_input, head.target)
        deviations.append(
            f"BCE-with-logits is expressed as categorical CE over the two logits [0, z] (a frozen inner product "
            f"[0; 1] then softmax): identical loss and gradient; the target {head.target} is given as the class "
            f"index 0/1 (int32), as Core ML's CE loss takes it.")

    layer_of = {p: ref.split("/")[0] for p, ref in weights.items()}
    candidates = {layer_of[p] for p in trainable if p in layer_of}
    reachable = backprop_reachable(spec)
    layer_kinds = {layer.name: layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers}
    # "direct" marks every trainable layer updatable, as a naive exporter would: Core ML rejects that model.
    updatable = [layer.name for layer in spec.neuralNetwork.layers
                 if layer.name in candidates and (layer.name in reachable or formulation == "direct")]
    frozen_trainables: dict[str, str] = {}
    for p in sorted(trainable):
        if p not in layer_of:
            frozen_trainables[p] = "not found as a layer weight in the converted model"
        elif layer_of[p] not in updatable:
            kind = layer_kinds[layer_of[p]]
            frozen_trainables[p] = (f"held by a {kind} layer" if kind not in ("convolution", "innerProduct") else
                                    "its layer feeds the loss through a layer Core ML does not backpropagate through")
    if frozen_trainables:
        deviations.append(
            "frozen in Core ML although trainable in PyTorch: "
            + "; ".join(f"{p} ({why})" for p, why in frozen_trainables.items())
            + ". Core ML backpropagates only through convolution, inner product, flatten, pooling, batchnorm, "
              "reshape, ReLU/sigmoid/tanh and softmax between an updatable layer and the loss; a concat (or add) "
              "there is rejected, so only the layers after the last merge train.")
    mapped = set(weights.values())
    for layer in spec.neuralNetwork.layers:
        if layer.name in updatable:
            for fld in layer_weight_fields(layer):
                if f"{layer.name}/{fld}" not in mapped:
                    deviations.append(f"layer {layer.name}'s {fld} (added by the converter, no PyTorch parameter) "
                                      "trains too")

    if not updatable:
        raise DcxError(f"{program.name}: no trainable layer can be updatable in Core ML "
                       f"({'; '.join(f'{p}: {w}' for p, w in frozen_trainables.items())})")
    builder = NeuralNetworkBuilder(spec=spec)
    with _quiet():
        builder.make_updatable(updatable)
        batch = int(program.example_inputs[0].shape[0])
        sgd = SgdParams(lr=program.optimizer.lr, batch=batch, momentum=0.0)
        sgd.set_lr(program.optimizer.lr, 0.0, max(1.0, program.optimizer.lr))
        builder.set_sgd_optimizer(sgd)
        builder.set_epochs(1, allowed_set=[1])

    try:
        shapes = NNInterpreter(spec).shapes()
    except DcxError:
        if formulation != "direct":
            raise
        shapes = {}  # the direct formulation feeds rank-2 logits to a softmax layer; it exists to be rejected
    for out in spec.description.output:
        if out.name in shapes:
            del out.type.multiArrayType.shape[:]
            out.type.multiArrayType.shape.extend(shapes[out.name])

    model = UpdatableModel(
        spec=spec, weights=weights, updatable_layers=updatable, frozen_trainables=frozen_trainables,
        formulation=loss.formulation if formulation == "closest" else formulation, loss_target=loss.target,
        label_input=head.target, prediction_inputs=names, prediction_outputs=outputs,
        trainable_output=offset.trainable_output if offset else None,
        frozen_output=offset.frozen_output if offset else None, target_scale=target_scale, deviations=deviations)
    meta = spec.description.metadata
    meta.shortDescription = f"dcx {program.name}: {program.summary} (updatable; per-sample inputs, " \
                            f"SGD mini-batch {batch})"
    meta.userDefined.update({
        "dcx.program": program.name,
        "dcx.formulation": model.formulation,
        "dcx.label_input": model.label_input,
        "dcx.loss_target": model.loss_target,
        "dcx.batch_size": str(batch),
        "dcx.weights": json.dumps(weights, sort_keys=True),
    })
    if offset:
        meta.userDefined.update({"dcx.trainable_output": offset.trainable_output,
                                 "dcx.frozen_output": offset.frozen_output})
    if target_scale is not None:
        meta.userDefined["dcx.target_scale"] = repr(target_scale)
    return model


class CoreMLExporter:
    format = "coreml"
    suffix = ".mlpackage"

    def suffix_for(self, program: DeviceProgram) -> str:
        return ".mlmodel" if program.kind == "train" else ".mlpackage"

    def supports(self, program: DeviceProgram) -> str | None:
        return None

    def versions(self) -> dict[str, str]:
        return {"coremltools": importlib.metadata.version("coremltools"), "torch": importlib.metadata.version("torch")}

    def export(self, program: DeviceProgram, path: Path, options: ExportOptions) -> ArtifactInfo:
        path = Path(path)
        if program.kind == "infer":
            return self._export_inference(program, path)
        return self._export_training(program, path)

    # ------------------------------------------------------------ inference

    def _export_inference(self, program: DeviceProgram, path: Path) -> ArtifactInfo:
        from dcx.export.passes.graph_capture import capture

        ct = _ct()
        with _quiet():
            exported = capture(program).run_decompositions({})
            mlmodel = ct.convert(
                exported, convert_to="mlprogram",
                inputs=[ct.TensorType(n, shape=tuple(t.shape), dtype=t.numpy().dtype)
                        for n, t in zip(program.input_names, program.example_inputs)],
                outputs=[ct.TensorType(o) for o in program.output_names],
                compute_precision=ct.precision.FLOAT32,
                minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET))
        mlmodel.short_description = f"dcx {program.name}: {program.summary}"
        mlmodel.user_defined_metadata["dcx.program"] = program.name
        with tempfile.TemporaryDirectory() as tmp:
            package = Path(tmp) / "model.mlpackage"
            with _quiet():
                mlmodel.save(str(package))
            shutil.move(str(package), str(path))
        results = program.run(*program.example_inputs)
        outputs = [TensorSpec.of(n, t).as_dict() for n, t in zip(program.output_names, results)]
        deviations = []
        return ArtifactInfo(
            signatures={"predict": {"inputs": [s.as_dict() for s in program.input_specs()], "outputs": outputs}},
            deviations=deviations,
            notes={"coreml_model_type": "mlProgram", "compute_precision": "float32",
                   "deployment_target": DEPLOYMENT_TARGET})

    # ------------------------------------------------------------ training

    def _export_training(self, program: DeviceProgram, path: Path) -> ArtifactInfo:
        from dcx.export.passes.coreml_updatable_rule import check_updatable_model

        model = build_updatable(program)
        problems = check_updatable_model(model.spec)
        if problems:
            raise DcxError(f"{program.name}: the Core ML model would be rejected as updatable: {problems[0]}")
        signatures = signatures_of(model.spec)
        notes = {
            "coreml_model_type": "neuralNetwork (updatable)",
            "formulation": model.formulation,
            "updatable_layers": ", ".join(model.updatable_layers),
            "loss": f"{model.spec.neuralNetwork.updateParams.lossLayers[0].WhichOneof('LossLayerType')} "
                    f"(target input {model.loss_target})",
            "batching": (f"inputs are one sample each; the mini-batch of {program.example_inputs[0].shape[0]} is "
                         "the SGD miniBatchSize, epochs 1"),
        }
        if model.formulation == "mse_gradient_matching":
            notes["app_target"] = (f"{model.loss_target} = {model.trainable_output} - {model.target_scale:g} * "
                                   f"(softmax({model.frozen_output} + {model.trainable_output}) - "
                                   f"onehot({model.label_input})), recomputed before every update")
        deviations = list(model.deviations)
        if any(program.example_inputs[program.input_names.index(n)].dtype != torch.float32
               for n in model.prediction_inputs):
            deviations.append("integer inputs (" + ", ".join(
                n for n in model.prediction_inputs
                if program.example_inputs[program.input_names.index(n)].dtype != torch.float32)
                + ") are float32 in a NeuralNetwork model (exact for values below 2^24)")
        from dcx.runtimes.coreml import measure_deviation

        try:
            measured = measure_deviation(program, model, steps=MEASURE_STEPS)
        except DcxError as e:  # e.g. the dataset behind example_batches is not installed: the artifact is still valid
            measured = {"skipped": str(e), "formulation": model.formulation}
        notes["deviation_measured"] = json.dumps(measured, sort_keys=True)
        notes["assumptions"] = ("Core ML's mini-batch loss is the mean of per-sample losses; its MSE averages over a "
                                "sample's elements (neither is checkable without macOS)")
        path.write_bytes(model.spec.SerializeToString())
        return ArtifactInfo(signatures=signatures, weights=model.weights, deviations=deviations, notes=notes)


def _feature_spec(feature) -> dict:
    t = feature.type
    which = t.WhichOneof("Type")
    if which == "multiArrayType":
        from coremltools.proto import FeatureTypes_pb2

        name = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(t.multiArrayType.dataType)
        dtype = {"FLOAT32": "float32", "DOUBLE": "float64", "INT32": "int32", "FLOAT16": "float16"}.get(name, name)
        return {"name": feature.name, "shape": list(t.multiArrayType.shape), "dtype": dtype}
    if which == "int64Type":
        return {"name": feature.name, "shape": [1], "dtype": "int64"}
    return {"name": feature.name, "shape": [], "dtype": which or "unknown"}


def signatures_of(spec) -> dict[str, dict]:
    """The model's prediction signature and, for an updatable model, its training signature (per sample)."""
    desc = spec.description
    sigs = {"predict": {"inputs": [_feature_spec(f) for f in desc.input],
                        "outputs": [_feature_spec(f) for f in desc.output]}}
    if spec.isUpdatable:
        sigs["train"] = {"inputs": [_feature_spec(f) for f in desc.trainingInput], "outputs": []}
    return sigs


EXPORTER = CoreMLExporter()

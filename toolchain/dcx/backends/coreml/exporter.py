"""Core ML exporter: ``.mlpackage`` (ML program) for inference, updatable ``.mlmodel`` for training.

Inference programs: ``capture_program`` then ``ct.convert`` to an ML program at
float32 compute precision (parity with PyTorch within 1e-5).

Training programs: an updatable NeuralNetwork derived from the program, never
rewritten by hand. The passes, over an ``UpdatableBuild`` (the FX graph, then
the spec):

1. ``specialize_shapes``      FX trace with named inputs, shapes folded to one sample
                              (Core ML feeds updatable models sample by sample)
2. ``split_loss``             the loss comes off the graph; the predictor returns its logits
3. ``split_frozen_offset``    ``frozen(x) + trainable(x)`` logits (DC-CCL) become two outputs and their sum
4. ``convert_neuralnetwork``  ``ct.convert(..., convert_to="neuralnetwork")``
5. ``name_layers``            layers named after their PyTorch modules; the weight map
6. ``loss_head``              the chain from the loss up into backpropagable layers, and Core ML's loss layer
                              (exact CE, BCE as 2-class CE, or the gradient-matching MSE for a frozen offset)
7. ``choose_updatable``       updatable layers = trainable layers Core ML can reach from the loss
8. ``make_updatable``         SGD at the program's learning rate, mini-batch = the program's batch, 1 epoch

Serialization checks Core ML's own updatable-model validation
(``dcx.backends.coreml.updatable_rules``, re-implemented): an invalid model is
never written. Every trainable parameter that cannot train in Core ML, and
every other way the artifact differs from the PyTorch objective, is a
``Deviation``; the formulation's effect is measured on the reference batches
(``dcx.backends.coreml.reference_session.measure_deviation``).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.fx as fx

from dcx.errors import DcxError, UnsupportedOp
from dcx.backends import ArtifactInfo
from dcx.backends.coreml.messages import unsupported_op
from dcx.passes import FunctionPass, PassContext, run_passes
from dcx.backends.coreml.spec import coremltools, quiet, signatures_of
from dcx.manifest import Deviation, Signature
from dcx.optim import SGD
from dcx.programs import DeviceProgram, TensorSpec
from dcx.reference import ProgramReference

DEPLOYMENT_TARGET = "iOS15"  # ML programs need iOS 15; updatable NeuralNetworks need iOS 13 (spec 4)
FORMULATIONS = ("closest", "direct", "drop_frozen_offset")
UNFUSED_PASSES = ["common::fuse_conv_batchnorm", "common::fuse_conv_scale", "common::fuse_conv_bias",
                  "common::fuse_elementwise_to_batchnorm"]


@dataclass
class UpdatableBuild:
    """What the Core ML training passes pass along: the FX graph, then the NeuralNetwork spec.

    ``formulation``: "closest" (the exported one), "direct" (the loss on the logits as PyTorch computes them,
    e.g. softmax of the summed DC-CCL logits: Core ML rejects it; kept to show the rule) or
    "drop_frozen_offset" (CE on the trainable term alone: valid, but a different objective; for measuring).
    """

    formulation: str
    gm: fx.GraphModule | None = None
    head: object = None  # coreml_split_loss.LossHead
    offset: object = None  # coreml_frozen_offset.FrozenOffset | None
    prediction_inputs: list[str] = field(default_factory=list)
    prediction_outputs: list[str] = field(default_factory=list)
    spec: object = None
    weights: dict[str, str] = field(default_factory=dict)  # PyTorch parameter -> "<layer>/<field>"
    loss: object = None  # coreml_loss_head.CoreMLLoss
    updatable_layers: list[str] = field(default_factory=list)
    frozen_trainables: dict[str, str] = field(default_factory=dict)  # PyTorch parameter -> why it cannot train
    deviations: list[Deviation] = field(default_factory=list)

    @property
    def target_scale(self) -> float | None:
        return getattr(self.loss, "target_scale", None)


def _one_sample(program: DeviceProgram) -> tuple[torch.Tensor, ...]:
    return tuple(t[:1] for t in program.example_inputs)


def _specialize_shapes(b: UpdatableBuild, ctx: PassContext) -> UpdatableBuild:
    from dcx.backends.coreml.passes.static_shapes import specialize_shapes, trace_named

    b.gm = specialize_shapes(trace_named(ctx.program.module, ctx.program.input_names), _one_sample(ctx.program))
    return b


def _split_loss(b: UpdatableBuild, ctx: PassContext) -> UpdatableBuild:
    from dcx.backends.coreml.passes.split_loss import split_loss

    b.gm, b.head = split_loss(b.gm, ctx.program.name)
    ctx.report("split_loss", loss=b.head.kind, target=b.head.target)
    return b


def _split_frozen_offset(b: UpdatableBuild, ctx: PassContext) -> UpdatableBuild:
    from dcx.backends.coreml.passes.frozen_offset import split_frozen_offset

    if b.formulation in ("closest", "drop_frozen_offset"):
        b.offset = split_frozen_offset(b.gm, set(ctx.program.trainable))
    if b.offset:
        ctx.report("split_frozen_offset", trainable_output=b.offset.trainable_output,
                   frozen_output=b.offset.frozen_output)
    return b


def _convert_neuralnetwork(b: UpdatableBuild, ctx: PassContext) -> UpdatableBuild:
    from dcx.backends.coreml.interpreter import SUPPORTED_LAYERS
    from dcx.backends.coreml.passes.split_loss import placeholder_names
    from dcx.backends.coreml.passes.static_shapes import trace_static

    ct = coremltools()
    program = ctx.program
    b.prediction_inputs = placeholder_names(b.gm)
    one = _one_sample(program)
    inputs = [one[program.input_names.index(n)] for n in b.prediction_inputs]
    b.prediction_outputs = ([b.offset.trainable_output, b.offset.frozen_output, b.offset.sum_output] if b.offset
                            else ["logits"])
    with quiet():
        traced = trace_static(b.gm.eval(), tuple(inputs))
        # Batch norm stays a layer of its own: fused into the convolution, the conv weights would no longer be
        # the PyTorch ones (name_layers could not map them, nor could verify locate them).
        pipeline = ct.PassPipeline.DEFAULT
        pipeline.remove_passes(UNFUSED_PASSES)
        b.spec = _convert(ct, program, traced, inputs=[
            ct.TensorType(n, shape=tuple(t.shape), dtype=t.numpy().dtype) for n, t in zip(b.prediction_inputs, inputs)],
            outputs=[ct.TensorType(o) for o in b.prediction_outputs], convert_to="neuralnetwork",
            pass_pipeline=pipeline).get_spec()
    missing = sorted({layer.WhichOneof("layer") for layer in b.spec.neuralNetwork.layers} - SUPPORTED_LAYERS)
    if missing:  # export measures the training gap, and verify trains the model, in the reference interpreter
        raise UnsupportedOp(missing[0], "coreml", program.name,
                            "a NeuralNetwork layer with no semantics in dcx's reference interpreter "
                            "(toolchain/dcx/backends/coreml/interpreter.py)"
                            + (f" (nor {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    ctx.report("convert_neuralnetwork", layers=len(b.spec.neuralNetwork.layers))
    return b


def _name_layers(b: UpdatableBuild, ctx: PassContext) -> UpdatableBuild:
    from dcx.backends.coreml.passes.name_layers import name_layers

    b.weights = name_layers(b.spec, dict(ctx.program.module.named_parameters()))
    return b


def _loss_head(b: UpdatableBuild, ctx: PassContext) -> UpdatableBuild:
    from dcx.backends.coreml.passes.backprop_layers import to_backprop_layers
    from dcx.backends.coreml.passes.loss_head import (add_binary_cross_entropy, add_cross_entropy,
                                                    add_gradient_matching_mse)
    from dcx.backends.coreml.interpreter import NNInterpreter

    spec, head, offset = b.spec, b.head, b.offset
    loss_input = to_backprop_layers(spec, offset.trainable_output if offset else b.prediction_outputs[0])
    shapes = NNInterpreter(spec).shapes()
    if offset and b.formulation == "closest":
        num_classes = int(np.prod(shapes[loss_input]))
        target = f"{offset.trainable_output}_target"
        b.loss = add_gradient_matching_mse(spec, loss_input, shapes[loss_input], target, num_classes)
        k = b.loss.target_scale
        b.deviations.append(Deviation(
            f"Core ML rejects the elementwise add of the frozen {offset.frozen_output} and the updatable "
            f"{offset.trainable_output} before the loss, so CE({offset.frozen_output} + {offset.trainable_output}, "
            f"{head.target}) is trained as MSE({offset.trainable_output}, {target}) with the gradient-matching target "
            f"{target} = s - {k:g}*(softmax(m + s) - onehot({head.target})), computed by the app from one "
            f"prediction of this model (outputs {offset.trainable_output}=s, {offset.frozen_output}=m) before every "
            f"update of one epoch; its gradient equals the exact CE gradient at the current weights, so each SGD step "
            f"is the exact DC-CCL step. Exactness assumes Core ML's MSE averages over the {num_classes} elements "
            f"(scale k={k:g} in metadata dcx.target_scale); the loss Core ML reports is that MSE, the app "
            f"computes the CE from the outputs."))
    elif head.kind == "cross_entropy":
        b.loss = add_cross_entropy(spec, loss_input, head.target)
        if offset:
            b.deviations.append(Deviation(f"the frozen {offset.frozen_output} is dropped from the objective: CE on "
                                          f"{offset.trainable_output} alone (uncontrolled training)"))
    else:
        b.loss = add_binary_cross_entropy(spec, loss_input, head.target)
        b.deviations.append(Deviation(
            f"BCE-with-logits is expressed as categorical CE over the two logits [0, z] (a frozen inner product "
            f"[0; 1] then softmax): identical loss and gradient; the target {head.target} is given as the class "
            f"index 0/1 (int32), as Core ML's CE loss takes it."))
    ctx.report("loss_head", formulation=b.loss.formulation, loss_input=loss_input)
    return b


def _choose_updatable(b: UpdatableBuild, ctx: PassContext) -> UpdatableBuild:
    from dcx.backends.coreml.interpreter import layer_weight_fields
    from dcx.backends.coreml.updatable_rules import backprop_reachable

    spec, trainable = b.spec, set(ctx.program.trainable)
    layer_of = {p: ref.split("/")[0] for p, ref in b.weights.items()}
    candidates = {layer_of[p] for p in trainable if p in layer_of}
    reachable = backprop_reachable(spec)
    kinds = {layer.name: layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers}
    # "direct" marks every trainable layer updatable, as a naive exporter would: Core ML rejects that model.
    b.updatable_layers = [layer.name for layer in spec.neuralNetwork.layers
                          if layer.name in candidates and (layer.name in reachable or b.formulation == "direct")]
    for p in sorted(trainable):
        if p not in layer_of:
            b.frozen_trainables[p] = "not found as a layer weight in the converted model"
        elif layer_of[p] not in b.updatable_layers:
            kind = kinds[layer_of[p]]
            b.frozen_trainables[p] = (f"held by a {kind} layer" if kind not in ("convolution", "innerProduct") else
                                      "its layer feeds the loss through a layer Core ML does not backpropagate "
                                      "through")
    if b.frozen_trainables:
        b.deviations.append(Deviation(
            "frozen in Core ML although trainable in PyTorch: "
            + "; ".join(f"{p} ({why})" for p, why in b.frozen_trainables.items())
            + ". Core ML backpropagates only through convolution, inner product, flatten, pooling, batchnorm, "
              "reshape, ReLU/sigmoid/tanh and softmax between an updatable layer and the loss; a concat (or add) "
              "there is rejected, so only the layers after the last merge train.",
            parameters=sorted(b.frozen_trainables)))
    mapped = set(b.weights.values())
    for layer in spec.neuralNetwork.layers:
        if layer.name in b.updatable_layers:
            for fld in layer_weight_fields(layer):
                if f"{layer.name}/{fld}" not in mapped:
                    b.deviations.append(Deviation(f"layer {layer.name}'s {fld} (added by the converter, no PyTorch "
                                                  "parameter) trains too"))
    if not b.updatable_layers:
        raise DcxError(f"{ctx.program.name}: no trainable layer can be updatable in Core ML "
                       f"({'; '.join(f'{p}: {w}' for p, w in b.frozen_trainables.items())})")
    ctx.report("choose_updatable", updatable=list(b.updatable_layers), frozen_in_coreml=sorted(b.frozen_trainables))
    return b


def _make_updatable(b: UpdatableBuild, ctx: PassContext) -> UpdatableBuild:
    from coremltools.models.neural_network import AdamParams, NeuralNetworkBuilder, SgdParams

    from dcx.backends.coreml.interpreter import NNInterpreter

    program, spec = ctx.program, b.spec
    builder = NeuralNetworkBuilder(spec=spec)
    batch = int(program.example_inputs[0].shape[0])
    with quiet():
        builder.make_updatable(b.updatable_layers)
        opt = program.optimizer
        if isinstance(opt, SGD):
            sgd = SgdParams(lr=opt.lr, batch=batch, momentum=opt.momentum)
            sgd.set_lr(opt.lr, 0.0, max(1.0, opt.lr))
            builder.set_sgd_optimizer(sgd)
        else:
            builder.set_adam_optimizer(AdamParams(lr=opt.lr, batch=batch, beta1=opt.betas[0], beta2=opt.betas[1],
                                                  eps=opt.eps))
        builder.set_epochs(1, allowed_set=[1])
    try:
        shapes = NNInterpreter(spec).shapes()
    except DcxError:
        if b.formulation != "direct":
            raise
        shapes = {}  # the direct formulation feeds rank-2 logits to a softmax layer; it exists to be rejected
    for out in spec.description.output:
        if out.name in shapes:
            del out.type.multiArrayType.shape[:]
            out.type.multiArrayType.shape.extend(shapes[out.name])
    meta = spec.description.metadata
    meta.shortDescription = f"dcx {program.name}: {program.summary} (updatable; per-sample inputs, " \
                            f"{program.optimizer.type} mini-batch {batch})"
    meta.userDefined.update({
        "dcx.program": program.name, "dcx.formulation": b.loss.formulation if b.formulation == "closest" else
        b.formulation, "dcx.label_input": b.head.target, "dcx.loss_target": b.loss.target,
        "dcx.batch_size": str(batch), "dcx.weights": json.dumps(b.weights, sort_keys=True)})
    if b.offset:
        meta.userDefined.update({"dcx.trainable_output": b.offset.trainable_output,
                                 "dcx.frozen_output": b.offset.frozen_output})
    if b.target_scale is not None:
        meta.userDefined["dcx.target_scale"] = repr(b.target_scale)
    return b


TRAINING_PASSES = [FunctionPass(n, f) for n, f in (
    ("specialize_shapes", _specialize_shapes), ("split_loss", _split_loss),
    ("split_frozen_offset", _split_frozen_offset), ("convert_neuralnetwork", _convert_neuralnetwork),
    ("name_layers", _name_layers), ("loss_head", _loss_head), ("choose_updatable", _choose_updatable),
    ("make_updatable", _make_updatable))]


def build_updatable(program: DeviceProgram, formulation: str = "closest",
                    ctx: PassContext | None = None) -> UpdatableBuild:
    """The updatable Core ML spec of a training program (see ``UpdatableBuild`` for ``formulation``)."""
    if program.kind != "train":
        raise ValueError(f"{program.name} is not a training program")
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}")
    ctx = ctx or PassContext(program, None, "coreml")
    return run_passes(TRAINING_PASSES, UpdatableBuild(formulation), ctx)


def _convert(ct, program: DeviceProgram, model, **kwargs):
    """``ct.convert``; an op coremltools cannot convert becomes ``UnsupportedOp`` naming it."""
    try:
        return ct.convert(model, **kwargs)
    except Exception as e:
        op = unsupported_op(e)
        if op:
            raise UnsupportedOp(op, "coreml", program.name, "no coremltools conversion") from e
        raise


class CoreMLExporter:
    format = "coreml"

    def suffix_for(self, program: DeviceProgram) -> str:
        return ".mlmodel" if program.kind == "train" else ".mlpackage"

    def supports(self, program: DeviceProgram) -> str | None:
        """Core ML's updatable models update weights only, with SGD (momentum) or Adam and no weight decay."""
        if program.kind != "train":
            return None
        opt = program.optimizer
        if opt.type == "adamw" or opt.weight_decay or getattr(opt, "nesterov", False):
            return (f"Core ML's updatable models have SGD (with momentum) and Adam, without weight decay or Nesterov; "
                    f"{program.name} asks for {opt}: use dcx.optim.SGD(lr, momentum=...) or dcx.optim.Adam(lr)")
        if program.state:
            layer = next(iter(program.state)).rsplit(".", 1)[0]
            return (f"batch norm {layer!r} is in training mode, and Core ML's updatable models cannot update "
                    "running statistics: call .eval() on it to train with frozen statistics in Core ML")
        return None

    def versions(self) -> dict[str, str]:
        return {"coremltools": importlib.metadata.version("coremltools"), "torch": importlib.metadata.version("torch")}

    def export(self, program: DeviceProgram, path: Path, options: None = None,
               reference: ProgramReference | None = None) -> ArtifactInfo:
        path = Path(path)
        if program.kind == "infer":
            return self._export_inference(program, path, options)
        return self._export_training(program, path, options, reference)

    # ------------------------------------------------------------ inference

    def _export_inference(self, program: DeviceProgram, path: Path, options: None) -> ArtifactInfo:
        from dcx.passes.graph_capture import CaptureProgram

        from dcx.backends.coreml.passes.static_shapes import trace_static

        ct = coremltools()
        ctx = PassContext(program, options, self.format)

        def convert(model) -> "ct.models.MLModel":
            pipeline = ct.PassPipeline.DEFAULT  # batch norm unfused, as in training: its weights stay PyTorch's
            pipeline.remove_passes(UNFUSED_PASSES)
            return _convert(
                ct, program, model, convert_to="mlprogram", pass_pipeline=pipeline,
                inputs=[ct.TensorType(n, shape=tuple(t.shape), dtype=t.numpy().dtype)
                        for n, t in zip(program.input_names, program.example_inputs)],
                outputs=[ct.TensorType(o) for o in program.output_names],
                compute_precision=ct.precision.FLOAT32,
                minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET))

        frontend = "torch.export"
        with quiet():
            try:
                mlmodel = convert(run_passes([CaptureProgram()], program.module, ctx).run_decompositions({}))
            except UnsupportedOp as e:  # coremltools' export frontend lacks ops its TorchScript one has (aten.gru)
                frontend = f"torchscript (the torch.export frontend has no {e.op})"
                try:
                    mlmodel = convert(trace_static(program.module, tuple(program.example_inputs)))
                except Exception:
                    raise e from None  # neither frontend takes it: the op the export frontend named
        ctx.report("convert_mlprogram", compute_precision="float32", deployment_target=DEPLOYMENT_TARGET,
                   frontend=frontend)
        mlmodel.short_description = f"dcx {program.name}: {program.summary}"
        mlmodel.user_defined_metadata["dcx.program"] = program.name
        with tempfile.TemporaryDirectory() as tmp:
            package = Path(tmp) / "model.mlpackage"
            with quiet():
                mlmodel.save(str(package))
            shutil.move(str(package), str(path))
        outputs = [TensorSpec.of(n, t) for n, t in zip(program.output_names, program.run(*program.example_inputs))]
        return ArtifactInfo(signatures={"predict": Signature(program.input_specs(), outputs)}, passes=ctx.records,
                            notes={"coreml_model_type": "mlProgram", "compute_precision": "float32",
                                   "deployment_target": DEPLOYMENT_TARGET})

    # ------------------------------------------------------------ training

    def _export_training(self, program: DeviceProgram, path: Path, options: None,
                         reference: ProgramReference | None) -> ArtifactInfo:
        from dcx.backends.coreml.reference_session import measure_deviation
        from dcx.backends.coreml.updatable_rules import check_updatable_model

        ctx = PassContext(program, options, self.format)
        build = build_updatable(program, "closest", ctx)
        problems = check_updatable_model(build.spec)
        if problems:
            raise DcxError(f"{program.name}: the Core ML model would be rejected as updatable: {problems[0]}")
        deviations = list(build.deviations)
        integer_inputs = [n for n in build.prediction_inputs
                          if program.example_inputs[program.input_names.index(n)].dtype != torch.float32]
        if integer_inputs:
            deviations.append(Deviation(f"integer inputs ({', '.join(integer_inputs)}) are float32 in a NeuralNetwork "
                                        "model (exact for values below 2^24)"))
        if reference is not None:
            alternative = None
            if build.loss.formulation == "mse_gradient_matching":
                alt = build_updatable(program, "drop_frozen_offset")
                alternative = (alt.spec, alt.weights)
            measured = measure_deviation(list(program.input_names), {n: list(p.shape) for n, p in
                                                                     program.trainable.items()},
                                         build.spec, build.weights, reference, alternative)
            deviations.append(Deviation(
                f"measured: the exported formulation ({build.loss.formulation}) trained on the reference batches in "
                "the reference interpreter, against eager torch.optim", measured=measured))
        path.write_bytes(build.spec.SerializeToString())
        notes = {
            "coreml_model_type": "neuralNetwork (updatable)",
            "formulation": build.loss.formulation,
            "updatable_layers": ", ".join(build.updatable_layers),
            "batching": (f"inputs are one sample each; the mini-batch of {program.example_inputs[0].shape[0]} is "
                         "the SGD miniBatchSize, epochs 1"),
            "assumptions": ("Core ML's mini-batch loss is the mean of per-sample losses; its MSE averages over a "
                            "sample's elements (neither is checkable without macOS)"),
        }
        return ArtifactInfo(signatures=signatures_of(build.spec), weights=build.weights, deviations=deviations,
                            passes=ctx.records, notes=notes)


EXPORTER = CoreMLExporter()

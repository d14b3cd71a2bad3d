"""Wrap a lowered graph in a ``tf.Module`` with the TFLite on-device training signatures.

Why: a TFLite model trains on the phone only through signatures that the app
calls by name, sharing the model's resource variables:

- ``train(inputs..., targets...) -> {loss}``: forward under ``tf.GradientTape``,
  then one plain-SGD step (``v.assign_sub(lr * grad)``) at the program's
  learning rate; returns the loss before the update.
- ``infer(inputs...) -> {outputs}``: the forward (for a training program, the
  loss without an update).
- ``save() -> {weight name: tensor}`` and ``restore(weight tensors) -> {weights}``:
  weights go in and out as plain tensors, because TF's checkpoint ops
  (``Save``/``Restore``) are Flex ops. Names are the PyTorch parameter names.

Trainable parameters become ``tf.Variable``s; frozen parameters and buffers
become graph constants. Inference programs get the ``infer`` signature only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from dcx.errors import DcxError
from dcx.backends.tflite.passes.aten_to_tf import TFGraph, tf_dtype
from dcx.programs import DeviceProgram


@dataclass
class SignatureSpecs:
    """The tf.Module to save and the name -> concrete function map for ``tf.saved_model.save``."""

    module: tf.Module
    functions: dict[str, object]


def build_tf_signatures(program: DeviceProgram, graph: TFGraph) -> SignatureSpecs:
    trainable = {n: p.detach().cpu().numpy() for n, p in program.trainable.items()}
    frozen = {n: t.detach().cpu().numpy() for n, t in program.frozen.items()}
    module = tf.Module()
    module.weights = [tf.Variable(v, name=_var_name(n)) for n, v in trainable.items()]
    variables = dict(zip(trainable, module.weights))
    input_specs = [tf.TensorSpec(list(t.shape), tf_dtype(t.dtype), name=n)
                   for n, t in zip(program.input_names, program.example_inputs)]

    def forward(*inputs: tf.Tensor) -> list[tf.Tensor]:
        state = {n: tf.constant(v) for n, v in frozen.items()}
        state.update({n: v.read_value() for n, v in variables.items()})
        return graph(state, *inputs)

    def infer(*inputs):
        return dict(zip(program.output_names, forward(*inputs)))

    functions = {"infer": tf.function(infer, input_signature=input_specs)}
    if program.kind == "train":
        lr = np.float32(program.optimizer.lr)

        def train(*inputs):
            with tf.GradientTape() as tape:
                (loss,) = forward(*inputs)
            grads = tape.gradient(loss, list(variables.values()))
            for name, v, g in zip(variables, variables.values(), grads):
                if g is None:
                    raise DcxError(f"{program.name}: no gradient reaches trainable parameter {name}; freeze it "
                                   "(requires_grad=False) or use it in the loss")
                v.assign_sub(lr * g)
            return {program.output_names[0]: loss}

        def save():
            return {n: v.read_value() for n, v in variables.items()}

        def restore(*tensors):
            for v, t in zip(variables.values(), tensors):
                v.assign(t)
            return {n: v.read_value() for n, v in variables.items()}

        weight_specs = [tf.TensorSpec(list(v.shape), tf.as_dtype(v.dtype), name=n) for n, v in trainable.items()]
        functions["train"] = tf.function(train, input_signature=input_specs)
        functions["save"] = tf.function(save, input_signature=[])
        functions["restore"] = tf.function(restore, input_signature=weight_specs)
    concrete = {k: f.get_concrete_function() for k, f in functions.items()}
    module.functions = list(functions.values())  # keep the tf.functions tracked with the module
    return SignatureSpecs(module, concrete)


def _var_name(torch_name: str) -> str:
    return torch_name.replace(".", "/")

"""Wrap a lowered graph in a ``tf.Module`` with the TFLite on-device training signatures.

Why: a TFLite model trains on the phone only through signatures that the app
calls by name, sharing the model's resource variables:

- ``train(inputs..., targets...) -> {loss}``: forward under ``tf.GradientTape``,
  then one step of the program's optimizer (``InGraphOptimizer``: SGD with or
  without momentum, Adam, AdamW, its state in resource variables) and the
  update of the program's state (batch-norm running statistics); returns the
  loss before the update.
- ``infer(inputs...) -> {outputs}``: the forward (for a training program, the
  loss without an update).
- ``save() -> {weight name: tensor}`` and ``restore(weight tensors) -> {weights}``:
  weights go in and out as plain tensors, because TF's checkpoint ops
  (``Save``/``Restore``) are Flex ops. Names are the PyTorch parameter names.
- ``state() -> {name: tensor}``: the program's state and the optimizer's slots
  (``"<param>/<slot>"``), for checking a device against PyTorch; only where
  there is any.

Trainable parameters, the program's state and the optimizer's slots become
``tf.Variable``s; frozen parameters and buffers become graph constants. Inference programs get the ``infer`` signature only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from dcx.errors import DcxError
from dcx.backends.tflite.passes.aten_to_tf import TFGraph, tf_dtype
from dcx.optim import SGD, Optimizer
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
    module.state = [tf.Variable(t.detach().cpu().numpy(), name=_var_name(n)) for n, t in program.state.items()]
    state_variables = dict(zip(program.state, module.state))
    input_specs = [tf.TensorSpec(list(t.shape), tf_dtype(t.dtype), name=n)
                   for n, t in zip(program.input_names, program.example_inputs)]

    def forward(*inputs: tf.Tensor) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        """The program's outputs, and the new value of each state variable (not assigned)."""
        values = {n: tf.constant(v) for n, v in frozen.items()}
        values.update({n: v.read_value() for n, v in {**variables, **state_variables}.items()})
        outputs = graph(values, *inputs)
        k = len(graph.mutated)
        return outputs[k:], dict(zip(graph.mutated, outputs[:k]))

    def infer(*inputs):
        return dict(zip(program.output_names, forward(*inputs)[0]))

    functions = {"infer": tf.function(infer, input_signature=input_specs)}
    if program.kind == "train":
        optimizer = InGraphOptimizer(program.optimizer, trainable)
        module.optimizer_state = optimizer.variables

        def train(*inputs):
            with tf.GradientTape() as tape:
                (loss,), new_state = forward(*inputs)
            grads = tape.gradient(loss, list(variables.values()))
            for name, g in zip(variables, grads):
                if g is None:
                    raise DcxError(f"{program.name}: no gradient reaches trainable parameter {name}; freeze it "
                                   "(requires_grad=False) or use it in the loss")
            optimizer.apply(variables, grads)
            for name, value in new_state.items():
                state_variables[name].assign(value)
            return {program.output_names[0]: loss}

        def save():
            return {n: v.read_value() for n, v in variables.items()}

        def restore(*tensors):
            for v, t in zip(variables.values(), tensors):
                v.assign(t)
            return {n: v.read_value() for n, v in variables.items()}

        def state():
            return {**{n: v.read_value() for n, v in state_variables.items()},
                    **{n: v.read_value() for n, v in optimizer.slots.items()}}

        weight_specs = [tf.TensorSpec(list(v.shape), tf.as_dtype(v.dtype), name=n) for n, v in trainable.items()]
        functions["train"] = tf.function(train, input_signature=input_specs)
        functions["save"] = tf.function(save, input_signature=[])
        functions["restore"] = tf.function(restore, input_signature=weight_specs)
        if state_variables or optimizer.slots:
            functions["state"] = tf.function(state, input_signature=[])
    concrete = {k: f.get_concrete_function() for k, f in functions.items()}
    module.functions = list(functions.values())  # keep the tf.functions tracked with the module
    return SignatureSpecs(module, concrete)


class InGraphOptimizer:
    """A ``dcx.optim`` optimizer as TF ops inside ``train``: its slots (``"<param>/<slot>"``) and step count are
    resource variables of the model, updated as ``Optimizer.update`` updates them, in builtin ops only."""

    def __init__(self, optimizer: Optimizer, trainable: dict[str, np.ndarray]):
        self.optimizer = optimizer
        self.slots = {f"{n}/{s}": tf.Variable(np.zeros_like(v), name=_var_name(f"{n}/{s}"))
                      for n, v in trainable.items() for s in optimizer.slots}
        self.step = tf.Variable(np.float32(0), name="optimizer_step")
        self.variables = [*self.slots.values(), self.step]

    def apply(self, params: dict[str, tf.Variable], grads: list[tf.Tensor]) -> None:
        o = self.optimizer
        t = self.step.assign_add(1.0)
        for (name, p), g in zip(params.items(), grads):
            if isinstance(o, SGD):
                if o.weight_decay:
                    g = g + o.weight_decay * p
                if o.momentum:  # the buffer starts at zero, so the first step leaves it equal to g, as torch does
                    buf = self.slots[f"{name}/momentum_buffer"].assign(o.momentum * self.slots[f"{name}/momentum_buffer"] + g)
                    g = g + o.momentum * buf if o.nesterov else buf
                p.assign_sub(o.lr * g)
                continue
            beta1, beta2 = o.betas
            if o.type == "adamw":
                p.assign(p * (1 - o.lr * o.weight_decay))
            elif o.weight_decay:
                g = g + o.weight_decay * p
            m, v = self.slots[f"{name}/exp_avg"], self.slots[f"{name}/exp_avg_sq"]
            m = m.assign(m + (1 - beta1) * (g - m))
            v = v.assign(beta2 * v + (1 - beta2) * g * g)
            step_size = o.lr / (1 - tf.pow(np.float32(beta1), t))
            denom = tf.sqrt(v) / tf.sqrt(1 - tf.pow(np.float32(beta2), t)) + o.eps
            p.assign_sub(step_size * m / denom)


def _var_name(torch_name: str) -> str:
    return torch_name.replace(".", "/")

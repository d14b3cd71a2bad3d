"""Core ML pass: rebuild the program's loss as a valid Core ML loss layer.

Core ML has two loss layers: categorical cross-entropy on a softmax output
(target: a class index) and mean squared error. The formulations:

- ``cross_entropy`` on logits ``z``: ``softmax(z)`` -> categorical CE. Exact.
- ``bce_with_logits`` on a logit ``z``: a frozen inner product ``[0; 1]`` maps
  ``z`` to two logits ``[0, z]``; ``softmax([0, z])[1] = sigmoid(z)``, so
  categorical CE with class = target equals ``BCE(z, target)`` in value and in
  gradient (``softmax([0,z]) - onehot(y)`` routed through ``[0; 1]`` gives
  ``sigmoid(z) - y``). Exact; the target is passed as the class index 0/1.
- ``cross_entropy`` on ``frozen(x) + trainable(x)`` (DC-CCL; Core ML rejects
  the ``add``): mean squared error on the trainable logits ``s`` with a
  *gradient-matching target* the app computes per batch from one prediction
  of the same model (which outputs ``s`` and the frozen ``m``):

      target = s - k * (softmax(m + s) - onehot(y)),   k = D / 2  (D = number of classes)

  With Core ML's MSE taken as the mean over the D elements, its gradient in
  ``s`` is ``(2 / D) (s - target) = softmax(m + s) - onehot(y)``: exactly the
  gradient of ``CE(m + s, y)``. Each SGD step therefore equals the exact
  DC-CCL step as long as the target is recomputed before every step
  (one epoch per mini-batch). ``k`` is written into the model's metadata so an
  app can re-calibrate it if Core ML's MSE normalization differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder


@dataclass(frozen=True)
class CoreMLLoss:
    kind: str  # "categorical_cross_entropy" | "mean_squared_error"
    loss_input: str  # blob the loss layer reads
    target: str  # training input name
    target_shape: tuple[int, ...]  # per sample
    formulation: str  # "exact_ce" | "bce_as_2class_ce" | "mse_gradient_matching"
    target_scale: float | None = None  # k of the gradient-matching target


def _builder(spec) -> NeuralNetworkBuilder:
    return NeuralNetworkBuilder(spec=spec)


def _rename_target(spec, old: str, new: str) -> None:
    for loss in spec.neuralNetwork.updateParams.lossLayers:
        params = getattr(loss, loss.WhichOneof("LossLayerType"))
        if params.target == old:
            params.target = new
    for t in spec.description.trainingInput:
        if t.name == old:
            t.name = new


def _quiet(fn, *args, **kwargs):
    """coremltools prints a line per loss layer it adds."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def add_cross_entropy(spec, logits: str, target: str) -> CoreMLLoss:
    """softmax(logits) -> categorical cross-entropy against the class index ``target``."""
    b = _builder(spec)
    probs = f"{logits}_probs"
    b.add_softmax(name=f"{logits}_softmax", input_name=logits, output_name=probs)
    _quiet(b.set_categorical_cross_entropy_loss, name="loss", input=probs)
    _rename_target(spec, f"{probs}_true", target)
    return CoreMLLoss("categorical_cross_entropy", probs, target, (1,), "exact_ce")


def add_binary_cross_entropy(spec, logit: str, target: str) -> CoreMLLoss:
    """A frozen [0; 1] inner product makes the two-class logits [0, z]; then softmax and categorical CE."""
    b = _builder(spec)
    two = f"{logit}_two_class"
    b.add_inner_product(name=two, W=np.array([[0.0], [1.0]], dtype=np.float32), b=None, input_channels=1,
                        output_channels=2, has_bias=False, input_name=logit, output_name=two)
    loss = add_cross_entropy(spec, two, target)
    return CoreMLLoss(loss.kind, loss.loss_input, target, (1,), "bce_as_2class_ce")


def add_gradient_matching_mse(spec, logits: str, logits_shape: tuple[int, ...], target: str,
                              num_classes: int) -> CoreMLLoss:
    """Mean squared error on the trainable logits; the app supplies the gradient-matching target."""
    b = _builder(spec)
    _quiet(b.set_mean_squared_error_loss, name="loss", input_feature=(logits, datatypes.Array(*logits_shape)))
    _rename_target(spec, f"{logits}_true", target)
    return CoreMLLoss("mean_squared_error", logits, target, tuple(logits_shape), "mse_gradient_matching",
                      target_scale=num_classes / 2.0)

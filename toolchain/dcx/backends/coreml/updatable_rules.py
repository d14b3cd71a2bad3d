"""Core ML's rules for updatable neural networks, checked on Linux.

Core ML validates an updatable model when it compiles it, which only macOS
can do. This module re-implements that validation, rule for rule, so an
export that Core ML would reject fails here first:

- only convolution and inner-product layers may be updatable, with every
  weight and bias of such a layer marked updatable; at least one is;
- layer and loss-layer names are unique;
- exactly one loss layer: categorical cross-entropy whose input is a softmax
  output, or mean squared error whose input is produced in the graph; the
  target is a training input never produced in the graph;
- SGD (learning rate, mini-batch size) or Adam, and epochs, are set;
- the training inputs hold the target and at least one prediction input;
- **the backpropagation rule**: walking the graph backwards from the loss
  (breadth first, as Core ML does), once a layer that does not support
  backpropagation has been passed, no updatable layer may follow. Layers that
  support it: convolution, inner product, flatten, pooling, batchnorm,
  reshape, ReLU/sigmoid/tanh activations, and a softmax directly feeding a
  cross-entropy loss. An elementwise ``add`` — a frozen branch summed with an
  updatable one before the softmax — is rejected.

``check_updatable_model`` returns the problems as sentences (empty: valid).
``backprop_reachable`` gives the layers that may be made updatable at all.
"""

from __future__ import annotations

from collections import deque

BACKPROP_LAYERS = frozenset({"convolution", "innerProduct", "flatten", "pooling", "batchnorm", "reshape"})
BACKPROP_ACTIVATIONS = frozenset({"ReLU", "sigmoid", "tanh"})
UPDATABLE_LAYERS = frozenset({"convolution", "innerProduct"})


def supports_backprop(layer) -> bool:
    kind = layer.WhichOneof("layer")
    if kind == "activation":
        return layer.activation.WhichOneof("NonlinearityType") in BACKPROP_ACTIVATIONS
    return kind in BACKPROP_LAYERS


class _Node:
    def __init__(self, name, kind, inputs, outputs, updatable=False, backprop=False, loss_kind=None):
        self.name, self.kind, self.inputs, self.outputs = name, kind, list(inputs), list(outputs)
        self.updatable, self.backprop, self.loss_kind = updatable, backprop, loss_kind
        self.parents: list[_Node] = []


def _loss_io(loss) -> tuple[str | None, str, str]:
    kind = loss.WhichOneof("LossLayerType")
    if kind is None:
        return None, "", ""
    params = getattr(loss, kind)
    return kind, params.input, params.target


def _graph(nn) -> tuple[dict[str, _Node], dict[str, _Node]]:
    """Nodes by name and producing node by blob name, built in layer order as Core ML does."""
    by_name: dict[str, _Node] = {}
    producer: dict[str, _Node] = {}

    def insert(node: _Node) -> None:
        for blob in node.inputs:
            if blob in producer:
                node.parents.append(producer[blob])
        for blob in node.outputs:
            producer[blob] = node
        by_name[node.name] = node

    for layer in nn.layers:
        insert(_Node(layer.name, layer.WhichOneof("layer"), layer.input, layer.output,
                     layer.isUpdatable, supports_backprop(layer)))
    for loss in nn.updateParams.lossLayers:
        kind, inp, _ = _loss_io(loss)
        insert(_Node(loss.name, None, [inp] if kind else [], [], loss_kind=kind))
    return by_name, producer


def _bfs_from_loss(nodes: dict[str, _Node], loss_name: str):
    """Yield (parent, current, non_backprop_seen_before_parent) in Core ML's traversal order."""
    visited: set[str] = set()
    queue = deque([loss_name])
    seen_non_backprop: str | None = None
    while queue:
        current = nodes[queue.popleft()]
        for parent in current.parents:
            if parent.name in visited:
                continue
            visited.add(parent.name)
            queue.append(parent.name)
            yield parent, seen_non_backprop
            if not parent.backprop:
                if parent.kind == "softmax" and current.loss_kind == "categoricalCrossEntropyLossLayer":
                    continue
                if seen_non_backprop is None:
                    seen_non_backprop = f"{parent.name}, {parent.kind}"


def backprop_reachable(spec) -> set[str]:
    """Convolution / inner-product layers the loss reaches before any non-backpropagable layer."""
    nn = spec.neuralNetwork
    nodes, _ = _graph(nn)
    reachable: set[str] = set()
    for loss in nn.updateParams.lossLayers:
        for parent, blocked in _bfs_from_loss(nodes, loss.name):
            if blocked is None and parent.kind in UPDATABLE_LAYERS:
                reachable.add(parent.name)
    return reachable


def _weights_updatable(layer) -> str | None:
    kind = layer.WhichOneof("layer")
    params = getattr(layer, kind)
    if not params.weights.isUpdatable or (params.hasBias and not params.bias.isUpdatable):
        return f"An updatable layer, named '{layer.name}', has a weight/bias param which is not marked as updatable."
    return None


def _check_parameter(name: str, param, positive: bool) -> str | None:
    value = param.defaultValue
    allowed = param.WhichOneof("AllowedValues")
    if allowed == "range" and not (param.range.minValue <= value <= param.range.maxValue):
        return f"{name} default {value} is outside its range [{param.range.minValue}, {param.range.maxValue}]."
    if allowed == "set" and len(param.set.values) and value not in param.set.values:
        return f"{name} default {value} is not in its allowed set {list(param.set.values)}."
    if positive and value <= 0:
        return f"{name} must be positive, got {value}."
    return None


def check_updatable_model(spec) -> list[str]:
    """Core ML's validation of an updatable neural network; [] when valid."""
    kind = spec.WhichOneof("Type")
    if kind not in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        return [f"Model type {kind} is not an updatable neural network."]
    if not spec.isUpdatable:
        return ["The model is not marked updatable (Model.isUpdatable is false)."]
    if spec.specificationVersion < 4:
        return [f"Updatable models need specification version >= 4, got {spec.specificationVersion}."]
    nn = getattr(spec, kind)
    problems: list[str] = []

    # Layer support and weight flags.
    updatable = [layer for layer in nn.layers if layer.isUpdatable]
    if not updatable:
        problems.append("The model is marked as updatable, but none of the layers are updatable.")
    for layer in updatable:
        if layer.WhichOneof("layer") not in UPDATABLE_LAYERS:
            problems.append(f"The layer named '{layer.name}' is marked as updatable, however, it is not supported as "
                            "the type of this layer is neither convolution nor inner-product.")
        else:
            problem = _weights_updatable(layer)
            if problem:
                problems.append(problem)

    # Name collisions.
    names = [layer.name for layer in nn.layers] + [loss.name for loss in nn.updateParams.lossLayers]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"The updatable model has a name collision for: '{name}'.")
    if problems:
        return problems

    # Loss layer.
    losses = list(nn.updateParams.lossLayers)
    if len(losses) != 1:
        return [f"Exactly one loss layer is supported, found {len(losses)}."]
    nodes, producer = _graph(nn)
    loss_kind, loss_input, target = _loss_io(losses[0])
    if loss_kind == "categoricalCrossEntropyLossLayer":
        src = producer.get(loss_input)
        if src is None or src.kind != "softmax":
            problems.append(f"For the categorical cross entropy loss layer named '{losses[0].name}', input is not "
                            "generated from a softmax output.")
    elif loss_kind == "meanSquaredErrorLossLayer":
        if loss_input not in producer:
            problems.append(f"For the MSE loss layer named '{losses[0].name}', input is not generated within "
                            "the graph.")
    else:
        problems.append(f"Loss function is not recognized in the loss layer named '{losses[0].name}', only cross "
                        "entropy loss and MSE are supported.")
    if loss_kind and target in producer:
        problems.append(f"For the loss layer named '{losses[0].name}', target is generated within the graph.")

    # Optimizer and epochs.
    opt = nn.updateParams.optimizer
    which = opt.WhichOneof("OptimizerType")
    if which == "sgdOptimizer":
        sgd = opt.sgdOptimizer
        if not sgd.HasField("learningRate"):
            problems.append("SGD optimizer should include learningRate parameter.")
        if not sgd.HasField("miniBatchSize"):
            problems.append("SGD optimizer should include miniBatchSize parameter.")
        for name, param, positive in (("learningRate", sgd.learningRate, False),
                                      ("miniBatchSize", sgd.miniBatchSize, True)):
            p = _check_parameter(name, param, positive)
            if p:
                problems.append(p)
    elif which == "adamOptimizer":
        adam = opt.adamOptimizer
        for field in ("learningRate", "miniBatchSize", "beta1", "beta2", "eps"):
            if not adam.HasField(field):
                problems.append(f"ADAM optimizer should include {field} parameter.")
    else:
        problems.append("Optimizer is not recognized.")
    if not nn.updateParams.HasField("epochs"):
        problems.append("Epochs should be included in neural network update parameters.")
    else:
        p = _check_parameter("epochs", nn.updateParams.epochs, True)
        if p:
            problems.append(p)

    # Training inputs.
    desc = spec.description
    prediction_inputs = {i.SerializeToString() for i in desc.input}
    training = list(desc.trainingInput)
    exclusive = [t for t in training if t.SerializeToString() not in prediction_inputs]
    if len(training) <= 1:
        problems.append("Must provide training inputs for updatable neural network (expecting both input and target "
                        "for loss function).")
    elif not exclusive:
        problems.append("Training inputs don't describe required inputs for the loss (needs both the input and "
                        "the target).")
    elif len(training) == len(exclusive):
        problems.append("The training inputs must include at least one input from the model itself.")
    elif target not in {t.name for t in exclusive}:
        problems.append(f"The training inputs don't include the loss layer's target: {target}")

    # The backpropagation rule.
    for parent, blocked in _bfs_from_loss(nodes, losses[0].name):
        if parent.updatable and blocked is not None:
            problems.append(f"There is a layer ({blocked}), which does not support backpropagation, between an "
                            f"updatable marked layer ({parent.name}) and the loss function.")
    return problems

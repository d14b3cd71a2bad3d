"""Core ML pass: put the layers between the updatable ones and the loss into backpropagable forms.

Core ML backpropagates only through convolution, inner product, flatten,
pooling, batchnorm, (legacy) reshape and ReLU/sigmoid/tanh, plus a softmax
feeding a cross-entropy loss. coremltools' converter emits ND-era layers that
the update engine does not differentiate: ``torch.flatten`` becomes
``reshapeStatic``, and an inner product on a rank-2 tensor yields rank-2
logits that a (rank >= 3) softmax layer cannot take.

Walking up from the loss input through the dense chain, this pass
- rewrites a ``reshapeStatic`` that flattens ``[B, C, H, W]`` into a ``flatten``
  layer (CHANNEL_FIRST, the order PyTorch flattens in), whose output is
  ``[B, C*H*W, 1, 1]``;
- gives the chain's first inner product a rank-4 input ``[B, C, 1, 1]`` (an
  ``expandDims`` *above* the first updatable layer, where Core ML does not
  backpropagate) so every inner product returns ``[B, C_out, 1, 1]``;
- lets the loss read the tensor before a trailing ``squeeze``/reshape (unit
  axes only);
- keeps the rest of the graph and the model's outputs unchanged: where a chain
  blob changed rank and is read outside the chain or is an output, the
  chain's copy is renamed ``<name>_4d`` and a ``reshapeStatic`` restores the
  original blob for the other readers (those readers are children of the loss
  input, never ancestors, so the rule does not see them).

Numerics are unchanged: inner product on a rank-4 input flattens C, H, W
exactly as PyTorch's flatten does.
"""

from __future__ import annotations

import numpy as np

from dcx.backends.coreml.interpreter import NNInterpreter

_SHAPE_ONLY = {"squeeze", "expandDims", "reshapeStatic"}
_CHAIN = {"innerProduct", "convolution", "flatten", "pooling", "batchnorm", "activation"}
_BACKPROP_ACTIVATIONS = {"ReLU", "sigmoid", "tanh"}


def _is_flatten(in_shape: tuple[int, ...], target: list[int]) -> bool:
    return len(in_shape) == 4 and len(target) == 2 and target[0] == in_shape[0] and \
        target[1] == in_shape[1] * in_shape[2] * in_shape[3]


def _set_layers(nn, layers: list) -> None:
    copies = [type(layer)() for layer in layers]
    for c, layer in zip(copies, layers):
        c.CopyFrom(layer)
    del nn.layers[:]
    for c in copies:
        nn.layers.add().CopyFrom(c)


def to_backprop_layers(spec, loss_input: str) -> str:
    """Rewrite the dense chain that produces ``loss_input``; returns the (possibly renamed) loss-input blob."""
    nn = spec.neuralNetwork
    before = NNInterpreter(spec).shapes()
    producer = {o: layer for layer in nn.layers for o in layer.output}
    # A trailing squeeze / reshape only drops unit axes (PyTorch's ``.squeeze(1)`` of a logit): the loss
    # reads the tensor before it.
    while loss_input in producer and producer[loss_input].WhichOneof("layer") in _SHAPE_ONLY \
            and len(producer[loss_input].input) == 1 \
            and int(np.prod(before[producer[loss_input].input[0]])) == int(np.prod(before[loss_input])):
        loss_input = producer[loss_input].input[0]
    chain: list = []
    blob = loss_input
    while blob in producer:
        layer = producer[blob]
        kind = layer.WhichOneof("layer")
        if kind == "reshapeStatic" and _is_flatten(before[layer.input[0]], list(layer.reshapeStatic.targetShape)):
            layer.flatten.mode = 0  # CHANNEL_FIRST; setting the oneof drops reshapeStatic
            kind = "flatten"
        if kind not in _CHAIN or len(layer.input) != 1:
            break
        if kind == "activation" and layer.activation.WhichOneof("NonlinearityType") not in _BACKPROP_ACTIVATIONS:
            break
        chain.append(layer)
        blob = layer.input[0]
    if not chain:
        return loss_input

    layers = list(nn.layers)
    top = chain[-1]
    if top.WhichOneof("layer") == "innerProduct" and len(before[top.input[0]]) == 2:
        expand = type(top)()
        expand.name = f"{top.name}_rank4"
        expand.input.append(top.input[0])
        expand.output.append(f"{top.input[0]}_4d")
        expand.expandDims.axes.extend([-2, -1])
        top.input[0] = expand.output[0]
        layers.insert(next(i for i, layer in enumerate(layers) if layer.name == top.name), expand)
        _set_layers(nn, layers)

    after = NNInterpreter(spec).shapes()
    chain_names = {layer.name for layer in chain}
    outputs = {o.name for o in spec.description.output}
    renamed = loss_input
    layers = list(nn.layers)
    for layer in [l for l in layers if l.name in chain_names]:
        for out in list(layer.output):
            if after[out] == before.get(out, after[out]):
                continue
            outside = [c for c in layers if out in c.input and c.name not in chain_names]
            if not outside and out not in outputs:
                continue
            wide = f"{out}_4d"
            for c in layers:
                if c.name in chain_names:
                    c.input[:] = [wide if i == out else i for i in c.input]
            layer.output[:] = [wide if o == out else o for o in layer.output]
            restore = type(layer)()
            restore.name = f"{out}_restore_shape"
            restore.input.append(wide)
            restore.output.append(out)
            restore.reshapeStatic.targetShape.extend(before[out])
            layers.insert(layers.index(layer) + 1, restore)
            if out == loss_input:
                renamed = wide
    _set_layers(nn, layers)
    return renamed

"""A reference interpreter for the Core ML NeuralNetwork layers dcx emits (Linux stand-in for Core ML).

Not a rewrite: the documented semantics (``NeuralNetwork.proto``) of the
layers the Core ML passes produce, written in PyTorch so they differentiate.
The passes use it for shape propagation; the deviation measurement uses it to
run an exported updatable model's own spec — its weights, layer wiring, loss
layer and optimizer (SGD with momentum, or Adam) — step for step, the way Core ML's update task would,
sample by sample (every input carries its own batch dimension of 1, as in
Core ML's per-example feature providers; ``torch.func.vmap`` runs a
mini-batch of such samples at once).

Assumptions that cannot be checked without macOS are named where they are
made: the mini-batch loss is the mean of per-sample losses, the
mean-squared-error loss averages over a sample's elements, and the optimizers
update as ``torch.optim``'s SGD (momentum, no dampening) and Adam do.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dcx.errors import DcxError
from dcx.optim import SGD, Adam, Optimizer, Stepper

Tensor = torch.Tensor


def weight_values(w) -> np.ndarray:
    """The float values of a ``WeightParams`` (float32 only: updatable models may not hold fp16)."""
    if len(w.floatValue):
        return np.asarray(w.floatValue, dtype=np.float32)
    if len(w.float16Value) or len(w.rawValue) or len(w.int8RawValue):
        raise DcxError("coreml: quantized or fp16 WeightParams are not supported by the reference interpreter")
    return np.zeros(0, dtype=np.float32)


def layer_weight_fields(layer) -> dict[str, object]:
    """WeightParams fields of a layer that hold values, by field name ("weights", "bias", "data", ...)."""
    kind = layer.WhichOneof("layer")
    params = getattr(layer, kind)
    out = {}
    for fd in params.DESCRIPTOR.fields:
        if fd.message_type is not None and fd.message_type.name == "WeightParams":
            w = getattr(params, fd.name)
            if len(w.floatValue) or len(w.float16Value) or len(w.rawValue):
                out[fd.name] = w
    return out


def _softmax_axis(x: Tensor, axis: int) -> Tensor:
    return torch.softmax(x, dim=axis)


class NNInterpreter:
    """Runs a ``neuralNetwork`` spec (one sample at a time) with PyTorch tensors."""

    def __init__(self, spec):
        if spec.WhichOneof("Type") != "neuralNetwork":
            raise DcxError(f"coreml: the reference interpreter runs neuralNetwork specs, got {spec.WhichOneof('Type')}")
        self.spec = spec
        self.nn = spec.neuralNetwork
        self.params: dict[str, Tensor] = {}  # "<layer>/<field>" -> tensor
        for layer in self.nn.layers:
            for field, w in layer_weight_fields(layer).items():
                self.params[f"{layer.name}/{field}"] = torch.from_numpy(weight_values(w).copy())
        self.input_shapes = {i.name: tuple(i.type.multiArrayType.shape) for i in spec.description.input}
        self.stepper: Stepper | None = None  # the optimizer's state, from the first step on

    # ------------------------------------------------------------ forward

    def forward(self, feeds: dict[str, Tensor], params: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Every blob of one sample; ``feeds`` hold the spec's input shapes."""
        params = self.params if params is None else params
        by_layer: dict[str, dict[str, Tensor]] = {}
        for key, value in params.items():
            layer_name, field = key.rsplit("/", 1)
            by_layer.setdefault(layer_name, {})[field] = value
        blobs: dict[str, Tensor] = {}
        for name, shape in self.input_shapes.items():
            if name in feeds:
                blobs[name] = feeds[name].reshape(shape).to(torch.float32)
        for layer in self.nn.layers:
            kind = layer.WhichOneof("layer")
            fn = _LAYERS.get(kind)
            if fn is None:
                raise DcxError(f"coreml: layer {layer.name!r} of type {kind} has no reference semantics here")
            xs = [blobs[i] for i in layer.input]
            out = fn(layer, xs, by_layer.get(layer.name, {}))
            outs = out if isinstance(out, (list, tuple)) else [out]
            for name, value in zip(layer.output, outs):
                blobs[name] = value
        return blobs

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every blob for one sample (zeros as inputs)."""
        with torch.no_grad():
            blobs = self.forward({n: torch.zeros(s) for n, s in self.input_shapes.items()})
        return {k: tuple(v.shape) for k, v in blobs.items()}

    # ------------------------------------------------------------ training

    def updatable_params(self) -> dict[str, Tensor]:
        names = {}
        for layer in self.nn.layers:
            if layer.isUpdatable:
                for field, w in layer_weight_fields(layer).items():
                    if w.isUpdatable:
                        names[f"{layer.name}/{field}"] = self.params[f"{layer.name}/{field}"]
        return names

    def forward_batch(self, feeds: dict[str, Tensor], params: dict[str, Tensor] | None = None,
                      blobs: list[str] | None = None) -> dict[str, Tensor]:
        """``forward`` for a batch of samples, each computed on its own (``torch.func.vmap`` over dim 0):
        ``feeds`` hold ``[B, *input shape]``; returns ``[B, *blob shape]`` for ``blobs`` (default: all)."""
        names = [n for n in self.input_shapes if n in feeds]

        def one(*xs: Tensor) -> dict[str, Tensor]:
            out = self.forward(dict(zip(names, xs)), params)
            return {k: v for k, v in out.items() if blobs is None or k in blobs}

        return torch.func.vmap(one)(*(feeds[n].to(torch.float32) for n in names))

    def loss(self, feeds: dict[str, Tensor], params: dict[str, Tensor] | None = None) -> Tensor:
        """Mini-batch loss of the spec's loss layer: the mean of per-sample losses (assumed: Core ML's docs give
        the per-example formulas). ``feeds`` hold the prediction inputs and the loss target, batched on dim 0."""
        (loss_layer,) = self.nn.updateParams.lossLayers
        kind = loss_layer.WhichOneof("LossLayerType")
        spec = getattr(loss_layer, kind)
        x = self.forward_batch(feeds, params, [spec.input])[spec.input]
        x = x.reshape(x.shape[0], -1)
        t = feeds[spec.target]
        if kind == "categoricalCrossEntropyLossLayer":
            index = t.reshape(-1).round().long()
            return -torch.log(x.gather(1, index[:, None])).mean()
        if kind == "meanSquaredErrorLossLayer":
            return torch.mean((x - t.reshape(x.shape).to(x.dtype)) ** 2, dim=1).mean()
        raise DcxError(f"coreml: loss layer {kind} is not supported")

    @staticmethod
    def optimizer_of(nn) -> Optimizer:
        """A neural network spec's optimizer as the ``dcx.optim`` update it documents: SGD with momentum (the
        buffer accumulates gradients, ``w -= lr * v``) or Adam (bias-corrected moments); no weight decay in
        either."""
        opt = nn.updateParams.optimizer
        which = opt.WhichOneof("OptimizerType")
        if which == "adamOptimizer":
            a = opt.adamOptimizer
            return Adam(a.learningRate.defaultValue, (a.beta1.defaultValue, a.beta2.defaultValue), a.eps.defaultValue)
        if which == "sgdOptimizer":
            sgd = opt.sgdOptimizer
            return SGD(sgd.learningRate.defaultValue, momentum=sgd.momentum.defaultValue)
        raise DcxError(f"coreml: the spec's optimizer is {which!r}; Core ML has sgdOptimizer and adamOptimizer")

    def step(self, feeds: dict[str, Tensor]) -> float:
        """One step of the spec's optimizer over one mini-batch; returns the loss before it. The optimizer's
        state (``self.stepper``) is keyed by the spec's weight names."""
        trainable = self.updatable_params()
        if self.stepper is None:
            self.stepper = Stepper(self.optimizer_of(self.nn), trainable)
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in trainable.items()}
        loss = self.loss(feeds, {**self.params, **leaves})
        grads = torch.autograd.grad(loss, list(leaves.values()))
        self.stepper.step({k: v.detach() for k, v in leaves.items()}, grads)
        self.params.update({k: v.detach() for k, v in leaves.items()})
        return float(loss.detach())


# ---------------------------------------------------------------- layer semantics

def _conv(layer, xs, p):
    c = layer.convolution
    if c.isDeconvolution:
        raise DcxError(f"coreml: deconvolution layer {layer.name!r} is not supported")
    (x,) = xs
    groups = c.nGroups or 1
    kh, kw = (list(c.kernelSize) or [3, 3])
    w = p["weights"].reshape(c.outputChannels, c.kernelChannels, kh, kw)
    stride = list(c.stride) or [1, 1]
    dilation = list(c.dilationFactor) or [1, 1]
    lead = x.shape[:-3]
    x4 = x.reshape(-1, *x.shape[-3:])
    if c.WhichOneof("ConvolutionPaddingType") == "same":
        h, wd = x4.shape[-2:]
        pads = []
        for size, k, s, d in ((wd, kw, stride[1], dilation[1]), (h, kh, stride[0], dilation[0])):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]  # BOTTOM_RIGHT_HEAVY
        x4 = F.pad(x4, pads)
    else:
        b = c.valid.paddingAmounts.borderAmounts
        if len(b):
            x4 = F.pad(x4, [b[1].startEdgeSize, b[1].endEdgeSize, b[0].startEdgeSize, b[0].endEdgeSize])
    y = F.conv2d(x4, w, p.get("bias") if c.hasBias else None, stride=stride, dilation=dilation, groups=groups)
    return y.reshape(*lead, *y.shape[1:])


def _activation(layer, xs, p):
    (x,) = xs
    a = layer.activation
    kind = a.WhichOneof("NonlinearityType")
    if kind == "ReLU":
        return torch.relu(x)
    if kind == "sigmoid":
        return torch.sigmoid(x)
    if kind == "tanh":
        return torch.tanh(x)
    if kind == "linear":
        return a.linear.alpha * x + a.linear.beta
    if kind == "leakyReLU":
        return F.leaky_relu(x, a.leakyReLU.alpha)
    raise DcxError(f"coreml: activation {kind} of layer {layer.name!r} is not supported")


def _inner_product(layer, xs, p):
    """Ranks 1-5 as NeuralNetwork.proto defines them; rank 4/5 flatten C,H,W and return [..., C_out, 1, 1]."""
    (x,) = xs
    ip = layer.innerProduct
    w = p["weights"].reshape(ip.outputChannels, ip.inputChannels)
    b = p.get("bias") if ip.hasBias else None
    r = x.dim()
    if r <= 3:
        y = F.linear(x, w, b)
    elif r == 4:
        y = F.linear(x.reshape(x.shape[0], -1), w, b).reshape(x.shape[0], -1, 1, 1)
    else:
        y = F.linear(x.reshape(x.shape[0] * x.shape[1], -1), w, b).reshape(x.shape[0], x.shape[1], -1, 1, 1)
    return y


def _flatten(layer, xs, p):
    (x,) = xs
    if x.dim() < 3:
        raise DcxError(f"coreml: flatten layer {layer.name!r} needs rank >= 3, got {tuple(x.shape)}")
    if layer.flatten.mode == 1:  # CHANNEL_LAST
        x = x.movedim(-3, -1)
    return x.reshape(*x.shape[:-3], -1, 1, 1)


def _reshape_static(layer, xs, p):
    return xs[0].reshape(tuple(layer.reshapeStatic.targetShape))


def _add(layer, xs, p):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y + layer.add.alpha if len(xs) == 1 else y


def _multiply(layer, xs, p):
    y = xs[0]
    for x in xs[1:]:
        y = y * x
    return y * layer.multiply.alpha if len(xs) == 1 else y


def _expand_dims(layer, xs, p):
    (x,) = xs
    rank = x.dim() + len(layer.expandDims.axes)
    for axis in sorted(a % rank for a in layer.expandDims.axes):
        x = x.unsqueeze(axis)
    return x


def _squeeze(layer, xs, p):
    (x,) = xs
    if layer.squeeze.squeezeAll:
        return x.squeeze()
    axes = sorted((a % x.dim() for a in layer.squeeze.axes), reverse=True)
    for axis in axes:
        x = x.squeeze(axis)
    return x


def _concat_nd(layer, xs, p):
    return torch.cat(xs, dim=layer.concatND.axis)


def _embedding_nd(layer, xs, p):
    """Input [..., 1] of indices -> [..., embeddingSize]; weights stored [embeddingSize, vocabSize]."""
    (x,) = xs
    e = layer.embeddingND
    table = p["weights"].reshape(e.embeddingSize, e.vocabSize)
    idx = x.squeeze(-1).round().long()
    y = table.t()[idx]
    return y + p["bias"] if e.hasBias else y


def _load_constant_nd(layer, xs, p):
    return p["data"].reshape(tuple(layer.loadConstantND.shape))


def _softmax(layer, xs, p):
    (x,) = xs
    if x.dim() < 3:
        raise DcxError(f"coreml: softmax layer {layer.name!r} needs rank >= 3 (it normalizes axis -3), "
                       f"got {tuple(x.shape)}")
    return _softmax_axis(x, -3)


def _softmax_nd(layer, xs, p):
    return _softmax_axis(xs[0], layer.softmaxND.axis)


def _clip(layer, xs, p):
    return torch.clamp(xs[0], layer.clip.minVal, layer.clip.maxVal)


def _batchnorm(layer, xs, p):
    """Inference batch norm over axis -3: (x - mean) / sqrt(var + eps) * gamma + beta."""
    (x,) = xs
    shape = (-1, 1, 1)
    scale = p["gamma"].reshape(shape) / torch.sqrt(p["variance"].reshape(shape) + layer.batchnorm.epsilon)
    return (x - p["mean"].reshape(shape)) * scale + p["beta"].reshape(shape)


def _pooling(layer, xs, p):
    """Global or unpadded ('valid') MAX/AVERAGE pooling over the last two axes."""
    (x,) = xs
    pool = layer.pooling
    kind = ("max", "average", "l2")[pool.type]
    if pool.globalPooling:
        y = x.amax((-2, -1), keepdim=True) if kind == "max" else x.mean((-2, -1), keepdim=True)
        if kind != "l2":
            return y
    padded = pool.WhichOneof("PoolingPaddingType") != "valid" or any(
        b.startEdgeSize or b.endEdgeSize for b in pool.valid.paddingAmounts.borderAmounts)
    if kind == "l2" or padded:
        raise DcxError(f"coreml: pooling layer {layer.name!r} ({kind}, padded={padded}) is not supported")
    lead, x4 = x.shape[:-3], x.reshape(-1, *x.shape[-3:])
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    y = fn(x4, list(pool.kernelSize), list(pool.stride) or None)
    return y.reshape(*lead, *y.shape[1:])


def _mvn(layer, xs, p):
    """Mean-variance normalization over (H, W), or (C, H, W) ``acrossChannels``: how coremltools writes a
    layer norm over the last axis (reshaped to [..., C, 1, W])."""
    (x,) = xs
    m = layer.mvn
    axes = (-3, -2, -1) if m.acrossChannels else (-2, -1)
    y = x - x.mean(axes, keepdim=True)
    if m.normalizeVariance:
        y = y / torch.sqrt((y * y).mean(axes, keepdim=True) + (m.epsilon or 1e-6))
    return y


def _scale(layer, xs, p):
    """``x * scale + bias``, each of shape [1], [C] (along axis -3), [1, H, W] or [C, H, W]."""
    (x,) = xs
    s = layer.scale

    def trailing(value, shape):
        return value.reshape(-1, 1, 1) if len(shape) == 1 else value.reshape(tuple(shape))

    y = x * trailing(p["scale"], s.shapeScale)
    return y + trailing(p["bias"], s.shapeBias) if s.hasBias else y


def _transpose(layer, xs, p):
    return xs[0].permute(tuple(layer.transpose.axes))


def _slice_static(layer, xs, p):
    (x,) = xs
    s = layer.sliceStatic
    squeeze = list(s.squeezeMasks) or [False] * x.dim()
    index = tuple(b if sq else slice(None if bm else b, None if em else e, st)
                  for b, e, st, bm, em, sq in zip(s.beginIds, s.endIds, s.strides, s.beginMasks, s.endMasks, squeeze))
    return x[index]


def _batched_matmul(layer, xs, p):
    """``A @ B`` over the last two axes (each optionally transposed, batch axes broadcast); with one input,
    ``x @ W + b`` for the layer's own [Cin, Cout] weights, stored transposed (as PyTorch's Linear holds them)."""
    m = layer.batchedMatmul
    if len(xs) == 1:
        y = F.linear(xs[0], p["weights"].reshape(m.weightMatrixSecondDimension, m.weightMatrixFirstDimension))
        return y + p["bias"] if m.hasBias else y
    a, b = (t.transpose(-1, -2) if flag else t for t, flag in zip(xs, (m.transposeA, m.transposeB)))
    return a @ b


def _gelu(layer, xs, p):
    (x,) = xs
    mode = layer.gelu.mode
    if mode == 2:  # SIGMOID_APPROXIMATION
        return x * torch.sigmoid(1.702 * x)
    return F.gelu(x, approximate="tanh" if mode == 1 else "none")


def _reduce_mean(layer, xs, p):
    (x,) = xs
    r = layer.reduceMean
    return x.mean(tuple(range(x.dim())) if r.reduceAll else tuple(r.axes), keepdim=r.keepDims)


_LAYERS: dict[str, Callable] = {
    "convolution": _conv,
    "clip": _clip,
    "batchnorm": _batchnorm,
    "pooling": _pooling,
    "activation": _activation,
    "innerProduct": _inner_product,
    "flatten": _flatten,
    "reshapeStatic": _reshape_static,
    "add": _add,
    "multiply": _multiply,
    "expandDims": _expand_dims,
    "squeeze": _squeeze,
    "concatND": _concat_nd,
    "embeddingND": _embedding_nd,
    "loadConstantND": _load_constant_nd,
    "softmax": _softmax,
    "softmaxND": _softmax_nd,
    "mvn": _mvn,
    "scale": _scale,
    "transpose": _transpose,
    "sliceStatic": _slice_static,
    "batchedMatmul": _batched_matmul,
    "gelu": _gelu,
    "reduceMean": _reduce_mean,
}
SUPPORTED_LAYERS = frozenset(_LAYERS)

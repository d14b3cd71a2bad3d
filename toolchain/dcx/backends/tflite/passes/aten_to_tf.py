"""Lower a core-ATen graph (``torch.export`` + ``run_decompositions``) to TensorFlow ops.

Why: the TFLite artifact must be derived from the PyTorch definition, never
written again by hand in TF. ``torch.export`` gives the program as a flat graph
of core ATen ops; this pass interprets that graph node by node, emitting one
small TF builder per ATen op (the table ``ATEN_TO_TF``). Traced inside a
``tf.function``, the result is a TF graph with the same computation, which the
TFLite converter turns into builtin ops. Ops whose TF gradients are not
TFLite builtins use the custom-gradient versions of ``tf_builtin_gradients``.

Layout: PyTorch is NCHW, TFLite's CONV_2D, DEPTHWISE_CONV_2D and pooling are
NHWC; each transposes in and out around the NHWC kernel (the converter folds
what it can). Batch norm in inference mode is a per-channel MUL and ADD on
the NCHW tensor.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import torch
from torch.fx.node import map_arg

from dcx.errors import DcxError
from dcx.backends.tflite.passes import tf_builtin_gradients as bg
from dcx.passes.split_reductions import SPLIT_ABOVE

aten = torch.ops.aten

TORCH_TO_TF_DTYPE = {
    torch.float32: tf.float32, torch.float64: tf.float64, torch.float16: tf.float16,
    torch.int64: tf.int64, torch.int32: tf.int32, torch.int16: tf.int16, torch.int8: tf.int8,
    torch.uint8: tf.uint8, torch.bool: tf.bool,
}

ATEN_TO_TF: dict[Any, Callable[..., Any]] = {}


def lowers(*targets: Any) -> Callable[[Callable], Callable]:
    """Register a TF builder for one or more ATen overloads."""

    def register(fn: Callable) -> Callable:
        for t in targets:
            ATEN_TO_TF[t] = fn
        return fn

    return register


def tf_dtype(dtype: torch.dtype) -> tf.DType:
    if dtype not in TORCH_TO_TF_DTYPE:
        raise DcxError(f"aten_to_tf: dtype {dtype} has no TFLite equivalent; use float32/int32/int64/bool")
    return TORCH_TO_TF_DTYPE[dtype]


def _is_tensor(x: Any) -> bool:
    return isinstance(x, (tf.Tensor, tf.Variable))


def _operands(a: Any, b: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """PyTorch-like type promotion for a binary op where either side may be a Python scalar."""
    if _is_tensor(a) and _is_tensor(b):
        if a.dtype != b.dtype:  # int/bool tensor with a float tensor: promote to the float
            target = a.dtype if a.dtype.is_floating else b.dtype
            a, b = tf.cast(a, target), tf.cast(b, target)
        return a, b
    t, s, swap = (a, b, False) if _is_tensor(a) else (b, a, True)
    if isinstance(s, float) and not t.dtype.is_floating:
        t = tf.cast(t, tf.float32)
    if t.dtype == tf.bool:
        t = tf.cast(t, tf.int64)
    s = tf.constant(s, dtype=t.dtype)
    return (s, t) if swap else (t, s)


def _axis(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


# ---------------------------------------------------------------- convolution and matmul

@lowers(aten.convolution.default)
def convolution(x, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    """NCHW convolution as NHWC CONV_2D (groups=1), DEPTHWISE_CONV_2D (groups = input channels) or one CONV_2D
    per group between SPLIT and CONCATENATION, with explicit PAD; builtin-only gradients (``tf_builtin_gradients``).
    """
    cin = x.shape[1]
    depthwise = groups == cin and groups > 1
    if len(stride) != 2 or transposed or any(d != 1 for d in dilation) or (depthwise and stride[0] != stride[1]):
        raise DcxError(f"aten_to_tf: convolution with stride={list(stride)}, dilation={list(dilation)}, "
                       f"transposed={transposed}, groups={groups} has no TFLite lowering; 2-D, non-transposed, "
                       "dilation-1 convolutions lower (depthwise ones need equal strides)")
    xh = tf.transpose(x, [0, 2, 3, 1])  # NCHW -> NHWC
    if any(padding):
        ph, pw = padding
        xh = tf.pad(xh, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
    if depthwise:  # OIHW with O = C * multiplier, I = 1 -> [kh, kw, C, multiplier]
        wh = tf.transpose(tf.reshape(w, [cin, w.shape[0] // cin, *w.shape[2:]]), [2, 3, 0, 1])
        y = bg.depthwise_conv2d(xh, wh, tuple(stride))
    else:
        wh = tf.transpose(w, [2, 3, 1, 0])  # OIHW -> HWIO
        if groups == 1:
            y = bg.conv2d(xh, wh, tuple(stride))
        else:
            y = tf.concat([bg.conv2d(xg, wg, tuple(stride)) for xg, wg in
                           zip(tf.split(xh, groups, axis=3), tf.split(wh, groups, axis=3))], 3)
    if bias is not None:
        y = y + bias
    return tf.transpose(y, [0, 3, 1, 2])  # NHWC -> NCHW


@lowers(aten.addmm.default)
def addmm(bias, a, b, beta=1, alpha=1):
    y = tf.matmul(a, b)
    if alpha != 1:
        y = y * alpha
    return y + (bias if beta == 1 else bias * beta)


@lowers(aten.mm.default, aten.bmm.default)
def matmul(a, b):
    """MM -> FULLY_CONNECTED / BATCH_MATMUL (PartitionedLinear's per-partition blocks are a BMM)."""
    return tf.matmul(a, b)


# ---------------------------------------------------------------- shape ops

@lowers(aten.view.default, aten._unsafe_view.default, aten.reshape.default)
def view(x, shape):
    return tf.reshape(x, list(shape))


@lowers(aten.permute.default)
def permute(x, dims):
    return tf.transpose(x, [_axis(d, len(x.shape)) for d in dims])


@lowers(aten.t.default)
def t(x):
    return tf.transpose(x) if len(x.shape) == 2 else x


@lowers(aten.unsqueeze.default)
def unsqueeze(x, dim):
    return tf.expand_dims(x, _axis(dim, len(x.shape) + 1))


@lowers(aten.squeeze.dims, aten.squeeze.dim, aten.squeeze.default)
def squeeze(x, dims=None):
    """PyTorch squeezes only the listed dims of size 1 (all size-1 dims when none are listed)."""
    rank = len(x.shape)
    if dims is None:
        dims = range(rank)
    elif isinstance(dims, int):
        dims = [dims]
    axes = [_axis(d, rank) for d in dims if x.shape[_axis(d, rank)] == 1]
    return tf.squeeze(x, axes) if axes else x


@lowers(aten.expand.default)
def expand(x, size, implicit=False):
    lead = len(size) - len(x.shape)
    shape = [x.shape[i - lead] if s == -1 else s for i, s in enumerate(size)]
    if shape == list(x.shape):
        return x
    return bg.broadcast_to(x, shape)


@lowers(aten.cat.default)
def cat(tensors, dim=0):
    return tf.concat(list(tensors), _axis(dim, len(tensors[0].shape)))


@lowers(aten.slice.Tensor)
def slice_(x, dim=0, start=None, end=None, step=1):
    """STRIDED_SLICE with a builtin-only gradient (``unbind`` of a fused QKV projection is three slices)."""
    dim = _axis(dim, len(x.shape))
    size = x.shape[dim]
    start = 0 if start is None else start
    end = size if end is None else end
    start, end = (min(max(i + size if i < 0 else i, 0), size) for i in (start, end))
    return bg.slice_axis(x, dim, start, max(start, end), step)


@lowers(aten.split_with_sizes.default, aten.split_with_sizes_copy.default)
def split_with_sizes(x, sizes, dim=0):
    """SPLIT_V (a GRU's gates are three chunks of one projection); the gradient is a CONCATENATION."""
    return tf.split(x, list(sizes), axis=_axis(dim, len(x.shape)))


@lowers(aten.constant_pad_nd.default)
def constant_pad_nd(x, pad, value=0):
    """PAD (PADV2 for a non-zero value); ``pad`` lists (before, after) from the last dim backwards, as F.pad.
    TensorFlow's "same" padding of a strided convolution (EfficientNet-Lite) is one of these."""
    if any(p < 0 for p in pad):
        raise DcxError(f"aten_to_tf: constant_pad_nd with negative padding {list(pad)} (a crop) has no TFLite "
                       "lowering; crop with a slice instead")
    pairs = [[0, 0] for _ in x.shape]
    for i in range(len(pad) // 2):
        pairs[len(x.shape) - 1 - i] = [pad[2 * i], pad[2 * i + 1]]
    return tf.pad(x, pairs, constant_values=value)


@lowers(aten.select.int)
def select(x, dim, index):
    dim = _axis(dim, len(x.shape))
    return tf.gather(x, index % x.shape[dim], axis=dim)


@lowers(aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default)
def clone(x, memory_format=None):
    return tf.identity(x)


@lowers(aten._to_copy.default)
def to_copy(x, dtype=None, **_):
    return x if dtype is None else tf.cast(x, tf_dtype(dtype))


# ---------------------------------------------------------------- constants

@lowers(aten.scalar_tensor.default)
def scalar_tensor(value, dtype=None, **_):
    return tf.constant(value, dtype=tf_dtype(dtype or torch.float32))


@lowers(aten.full.default)
def full(size, fill_value, dtype=None, **_):
    if dtype is None:
        dtype = torch.float32 if isinstance(fill_value, float) else torch.int64
    return tf.constant(np.full(list(size), fill_value), dtype=tf_dtype(dtype))


@lowers(aten.full_like.default)
def full_like(x, fill_value, dtype=None, **_):
    """A constant of ``x``'s static shape (the safe softmax of masked attention fills masked rows with 0)."""
    return tf.constant(np.full(list(x.shape), fill_value), dtype=x.dtype if dtype is None else tf_dtype(dtype))


@lowers(aten.arange.start_step)
def arange(start, end, step=1, dtype=None, **_):
    """A constant (a causal mask compares two of them)."""
    if dtype is None:
        dtype = torch.float32 if any(isinstance(v, float) for v in (start, end, step)) else torch.int64
    return tf.constant(np.arange(start, end, step), dtype=tf_dtype(dtype))


# ---------------------------------------------------------------- elementwise

def _binary(op: str, a: Any, b: Any) -> tf.Tensor:
    """``op`` of two operands; where a float operand is broadcast over more than ``SPLIT_ABOVE`` elements per
    value, with a gradient that sums those one axis at a time (``bg.broadcast_binary``)."""
    a, b = _operands(a, b)
    if a.dtype.is_floating and a.shape != b.shape and a.shape.is_fully_defined() and b.shape.is_fully_defined():
        out = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
        if max(math.prod(out) // max(1, math.prod(t.shape)) for t in (a, b)) > SPLIT_ABOVE:
            return bg.broadcast_binary(op, a, b)
    return {"add": tf.add, "sub": tf.subtract, "mul": tf.multiply}[op](a, b)


@lowers(aten.add.Tensor, aten.add.Scalar)
def add(a, b, alpha=1):
    if alpha != 1:
        b = b * alpha
    return _binary("add", a, b)


@lowers(aten.sub.Tensor, aten.sub.Scalar)
def sub(a, b, alpha=1):
    if alpha != 1:
        b = b * alpha
    return _binary("sub", a, b)


@lowers(aten.rsub.Scalar)
def rsub(a, b, alpha=1):
    """``b - alpha * a``."""
    return sub(b, a, alpha)


@lowers(aten.mul.Tensor, aten.mul.Scalar)
def mul(a, b):
    return _binary("mul", a, b)


@lowers(aten.div.Tensor, aten.div.Scalar)
def div(a, b):
    """True division (integer operands promote to float32, as in PyTorch)."""
    a, b = _operands(a, b)
    if not a.dtype.is_floating:
        a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
    return tf.divide(a, b)


@lowers(aten.neg.default)
def neg(x):
    return tf.negative(x)


@lowers(aten.abs.default)
def abs_(x):
    return tf.abs(x)


@lowers(aten.exp.default)
def exp(x):
    return tf.exp(x)


@lowers(aten.log.default)
def log(x):
    return tf.math.log(x)


@lowers(aten.log1p.default)
def log1p(x):
    return bg.log1p(x)


@lowers(aten.sqrt.default)
def sqrt(x):
    return bg.sqrt(x)


@lowers(aten.rsqrt.default)
def rsqrt(x):
    return bg.rsqrt(x)


@lowers(aten.relu.default)
def relu(x):
    return bg.relu(x)


@lowers(aten.sigmoid.default)
def sigmoid(x):
    return bg.sigmoid(x)


@lowers(aten.tanh.default)
def tanh(x):
    return bg.tanh(x)


@lowers(aten.hardtanh.default)
def hardtanh(x, min_val=-1.0, max_val=1.0):
    """ReLU6 is hardtanh(0, 6): RELU6; the gradient passes strictly inside the bounds, as in PyTorch."""
    return bg.clamp(x, min_val, max_val, closed=False)


@lowers(aten.clamp.default)
def clamp(x, min=None, max=None):
    """MAXIMUM/MINIMUM (hardswish decomposes to x * clamp(x + 3, 0, 6) / 6); the gradient passes inside the
    closed bounds, as in PyTorch."""
    return bg.clamp(x, min, max, closed=True)


@lowers(aten.minimum.default)
def minimum(a, b):
    return tf.minimum(*_operands(a, b))


@lowers(aten.maximum.default)
def maximum(a, b):
    return tf.maximum(*_operands(a, b))


@lowers(aten.pow.Tensor_Scalar)
def pow_(x, exponent):
    if exponent == 2:
        return x * x
    return tf.pow(x, tf.constant(exponent, x.dtype))


@lowers(aten.gelu.default)
def gelu(x, approximate="none"):
    return bg.gelu(x, approximate)


@lowers(aten.logical_not.default)
def logical_not(x):
    return tf.logical_not(tf.cast(x, tf.bool))


@lowers(aten.logical_and.default)
def logical_and(a, b):
    return tf.logical_and(tf.cast(a, tf.bool), tf.cast(b, tf.bool))


@lowers(aten.where.self)
def where(cond, a, b):
    a, b = _operands(a, b)
    return tf.where(cond, a, b)


def _compare(fn: Callable) -> Callable:
    return lambda a, b: fn(*_operands(a, b))


for _targets, _fn in (((aten.ne.Scalar, aten.ne.Tensor), tf.not_equal), ((aten.eq.Scalar, aten.eq.Tensor), tf.equal),
                      ((aten.gt.Scalar, aten.gt.Tensor), tf.greater), ((aten.ge.Scalar, aten.ge.Tensor), tf.greater_equal),
                      ((aten.lt.Scalar, aten.lt.Tensor), tf.less), ((aten.le.Scalar, aten.le.Tensor), tf.less_equal)):
    lowers(*_targets)(_compare(_fn))


# ---------------------------------------------------------------- reductions and normalization

def _reduce_axes(x, dims) -> list[int] | None:
    if dims is None or len(dims) == 0:
        return None  # all axes
    return [_axis(d, len(x.shape)) for d in dims]


@lowers(aten.sum.dim_IntList, aten.sum.default)
def sum_(x, dims=None, keepdim=False, dtype=None):
    """Sum; booleans and integers sum as int64, as in PyTorch."""
    if x.dtype == tf.bool or (x.dtype.is_integer and dtype is None):
        x = tf.cast(x, tf.int64)
    if dtype is not None:
        x = tf.cast(x, tf_dtype(dtype))
    return tf.reduce_sum(x, axis=_reduce_axes(x, dims), keepdims=keepdim)


@lowers(aten.mean.dim, aten.mean.default)
def mean(x, dims=None, keepdim=False, dtype=None):
    if dtype is not None:
        x = tf.cast(x, tf_dtype(dtype))
    return tf.reduce_mean(x, axis=_reduce_axes(x, dims), keepdims=keepdim)


@lowers(aten.any.dim, aten.any.dims, aten.any.default)
def any_(x, dims=None, keepdim=False):
    """REDUCE_ANY over ``dims`` (one dim, a list, or all); non-boolean inputs count where they are non-zero."""
    if isinstance(dims, int):
        dims = [dims]
    return tf.reduce_any(tf.cast(x, tf.bool), axis=_reduce_axes(x, dims), keepdims=keepdim)


@lowers(aten.amax.default)
def amax(x, dims=(), keepdim=False):
    return tf.reduce_max(x, axis=_reduce_axes(x, dims), keepdims=keepdim)


def _pair(v) -> tuple[int, int]:
    """An ATen ``int[2]`` argument given as an int, [v] or [h, w]."""
    v = tuple(v) if isinstance(v, (list, tuple)) else (v,)
    return (v * 2)[:2]


def _pool_window(x, kernel, stride, padding, ceil_mode):
    """(kernel, stride, NHWC padding) of a 2-D pooling; ``ceil_mode`` only where it changes nothing."""
    kernel, padding = _pair(kernel), _pair(padding)
    stride = _pair(stride) if stride else kernel
    if ceil_mode and any((size + 2 * p - k) % s for size, p, k, s in zip(x.shape[2:], padding, kernel, stride)):
        raise DcxError("aten_to_tf: pooling with ceil_mode=True and a partial last window has no TFLite lowering; "
                       "use ceil_mode=False or an input size that the windows tile")
    (ph, pw) = padding
    return kernel, stride, [[0, 0], [ph, ph], [pw, pw], [0, 0]]


@lowers(aten.avg_pool2d.default)
def avg_pool2d(x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """AVERAGE_POOL_2D on NHWC; zero padding counts in the mean (PyTorch's default ``count_include_pad``)."""
    if divisor_override is not None or (any(_pair(padding)) and not count_include_pad):
        raise DcxError("aten_to_tf: avg_pool2d with divisor_override or count_include_pad=False over padding has "
                       "no TFLite lowering; use the defaults")
    kernel, stride, pads = _pool_window(x, kernel, stride, padding, ceil_mode)
    xh = tf.pad(tf.transpose(x, [0, 2, 3, 1]), pads)
    return tf.transpose(bg.avg_pool2d(xh, kernel, stride), [0, 3, 1, 2])


@lowers(aten.max_pool2d_with_indices.default)
def max_pool2d_with_indices(x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    """MAX_POOL_2D on NHWC, padded with -inf as in PyTorch. Returns (y, None): the indices have no lowering."""
    if _pair(dilation) != (1, 1):
        raise DcxError(f"aten_to_tf: max_pool2d with dilation={dilation} has no TFLite lowering; use dilation 1")
    kernel, stride, pads = _pool_window(x, kernel, stride, padding, ceil_mode)
    xh = tf.pad(tf.transpose(x, [0, 2, 3, 1]), pads, constant_values=float("-inf"))
    return tf.transpose(bg.max_pool2d(xh, kernel, stride), [0, 3, 1, 2]), None


@lowers(aten._softmax.default)
def softmax(x, dim, half_to_float=False):
    return tf.nn.softmax(x, axis=_axis(dim, len(x.shape)))


@lowers(aten._log_softmax.default)
def log_softmax(x, dim, half_to_float=False):
    return tf.nn.log_softmax(x, axis=_axis(dim, len(x.shape)))


@lowers(aten._native_batch_norm_legit_no_training.default)
def batch_norm_inference(x, weight, bias, running_mean, running_var, momentum, eps):
    """Batch norm with frozen statistics: a per-channel scale and shift (MUL, ADD) on axis 1.

    Returns (y, mean, rstd) like ATen, the last two empty as in inference mode.
    """
    per_channel = [-1] + [1] * (len(x.shape) - 2)
    scale = bg.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    y = (x - tf.reshape(running_mean, per_channel)) * tf.reshape(scale, per_channel)
    if bias is not None:
        y = y + tf.reshape(bias, per_channel)
    empty = tf.zeros([0], x.dtype)
    return y, empty, empty


@lowers(aten.native_layer_norm.default)
def native_layer_norm(x, normalized_shape, weight, bias, eps):
    """Returns (y, mean, rstd) like ATen; rsqrt has a builtin-only gradient."""
    axes = list(range(len(x.shape) - len(normalized_shape), len(x.shape)))
    mu = tf.reduce_mean(x, axis=axes, keepdims=True)
    centered = x - mu
    var = tf.reduce_mean(centered * centered, axis=axes, keepdims=True)
    rstd = bg.rsqrt(var + eps)
    y = centered * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mu, rstd


# ---------------------------------------------------------------- indexing

@lowers(aten.embedding.default)
def embedding(table, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """GATHER rows; the table's gradient is UNSORTED_SEGMENT_SUM (``tf_builtin_gradients.gather_rows``)."""
    return bg.gather_rows(table, indices)


@lowers(aten.gather.default)
def gather(x, dim, index, sparse_grad=False):
    """``torch.gather`` as a one-hot product summed over ``dim``: exact, and its gradient is a plain MUL.

    (TF's GatherV2 with batch dims has a gradient that needs non-builtin ops.)
    """
    rank = len(x.shape)
    dim = _axis(dim, rank)
    if list(index.shape[:dim]) + list(index.shape[dim + 1:]) != list(x.shape[:dim]) + list(x.shape[dim + 1:]):
        begin = [0] * rank
        size = [index.shape[i] if i != dim else x.shape[i] for i in range(rank)]
        x = tf.slice(x, begin, size)
    hot = tf.one_hot(index, depth=x.shape[dim], axis=dim + 1, dtype=x.dtype)  # index.shape with depth at dim+1
    return tf.reduce_sum(tf.expand_dims(x, dim) * hot, axis=dim + 1)


# ---------------------------------------------------------------- the graph

@lowers(operator.getitem)
def getitem(seq, i):
    if seq[i] is None:
        raise DcxError(f"aten_to_tf: output {i} of a multi-output op (e.g. max-pool indices) has no TFLite lowering")
    return seq[i]


@dataclass
class TFGraph:
    """An exported program's graph as a Python function that emits TF ops (trace it inside a ``tf.function``).

    ``state`` maps each placeholder that is a parameter, buffer or constant to
    its PyTorch name; ``user_inputs`` lists the placeholders fed by the caller.
    """

    graph: torch.fx.Graph
    state: dict[str, str]  # placeholder name -> PyTorch parameter/buffer/constant name
    user_inputs: list[str]  # placeholder names, in call order
    constants: dict[str, np.ndarray]  # lifted tensor constants by name
    mutated: list[str]  # the buffers the graph updates (batch-norm running statistics): its first outputs

    @tf.autograph.experimental.do_not_convert  # plain Python over static shapes: AutoGraph would only slow tracing
    def __call__(self, state: dict[str, tf.Tensor], *inputs: tf.Tensor) -> list[tf.Tensor]:
        """``state``: every parameter/buffer by PyTorch name (Variables or constants); returns the graph outputs:
        the new values of ``mutated``, then the program's outputs."""
        if len(inputs) != len(self.user_inputs):
            raise DcxError(f"aten_to_tf: graph takes {len(self.user_inputs)} inputs, got {len(inputs)}")
        env: dict[str, Any] = dict(zip(self.user_inputs, inputs))
        for placeholder, name in self.state.items():
            env[placeholder] = state[name] if name in state else tf.constant(self.constants[name])
        outputs: list[tf.Tensor] = []
        for node in self.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                outputs = list(map_arg(node.args[0], lambda n: env[n.name]))
                break
            if node.op != "call_function":
                raise DcxError(f"aten_to_tf: unexpected graph node {node.op} {node.target}")
            builder = ATEN_TO_TF.get(node.target)
            if builder is None:
                raise DcxError(f"aten_to_tf: no TFLite lowering for {node.target} (node {node.name}); add a "
                               "builder in toolchain/dcx/backends/tflite/passes/aten_to_tf.py or export this program to "
                               "another format")
            args = map_arg(node.args, lambda n: env[n.name])
            kwargs = map_arg(node.kwargs, lambda n: env[n.name])
            kwargs = {k: v for k, v in kwargs.items() if k not in ("device", "layout", "pin_memory")}
            env[node.name] = builder(*args, **kwargs)
        return outputs


def lower_aten_to_tf(ep: torch.export.ExportedProgram) -> TFGraph:
    """Check every node has a TF builder and wrap the graph for tracing."""
    sig = ep.graph_signature
    state = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    missing = sorted({str(n.target) for n in ep.graph.nodes
                      if n.op == "call_function" and n.target not in ATEN_TO_TF})
    if missing:
        raise DcxError(f"aten_to_tf: no TFLite lowering for {', '.join(missing)}; add builders in "
                       "toolchain/dcx/backends/tflite/passes/aten_to_tf.py or export this program to another format")
    constants = {k: v.detach().cpu().numpy() for k, v in ep.constants.items() if isinstance(v, torch.Tensor)}
    mutated = [s.target for s in sig.output_specs if s.kind.name == "BUFFER_MUTATION"]
    return TFGraph(ep.graph, state, list(sig.user_inputs), constants, mutated)


def lower_op(target: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one builder eagerly (for tests: compare each op with PyTorch)."""
    return ATEN_TO_TF[target](*args, **kwargs)


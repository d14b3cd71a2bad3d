"""TF ops whose gradients are made of TFLite builtin ops only.

Why: TensorFlow's own gradients of several ops are TF kernels with no TFLite
builtin (``ReluGrad``, ``Conv2DBackpropFilter``, ``SigmoidGrad``,
``TanhGrad``, ``RsqrtGrad``, ...). The converter can only keep them as Flex
ops, and neither ai-edge-litert nor a lean app ships the Flex delegate, so a
training graph that contains them does not run on the phone. Each function
here computes the same forward op and gives it a ``tf.custom_gradient`` built
from builtin ops (MUL, GREATER, CAST, CONV_2D, TRANSPOSE_CONV, TRANSPOSE,
SLICE, UNSORTED_SEGMENT_SUM, ...). The lowering table (``aten_to_tf``) uses
these instead of the plain TF ops.
"""

from __future__ import annotations

import math

import tensorflow as tf


@tf.custom_gradient
def relu(x: tf.Tensor):
    """ReLU; gradient ``g * cast(x > 0)`` (PyTorch's convention: zero at x == 0) instead of ReluGrad."""
    y = tf.nn.relu(x)

    def grad(g):
        return g * tf.cast(x > 0, g.dtype)

    return y, grad


@tf.custom_gradient
def sigmoid(x: tf.Tensor):
    """Sigmoid; gradient ``g * y * (1 - y)`` instead of SigmoidGrad."""
    y = tf.sigmoid(x)

    def grad(g):
        return g * y * (1.0 - y)

    return y, grad


@tf.custom_gradient
def tanh(x: tf.Tensor):
    """Tanh; gradient ``g * (1 - y^2)`` instead of TanhGrad."""
    y = tf.tanh(x)

    def grad(g):
        return g * (1.0 - y * y)

    return y, grad


@tf.custom_gradient
def rsqrt(x: tf.Tensor):
    """1/sqrt(x); gradient ``-0.5 * g * y^3`` instead of RsqrtGrad."""
    y = tf.math.rsqrt(x)

    def grad(g):
        return -0.5 * g * y * y * y

    return y, grad


@tf.custom_gradient
def sqrt(x: tf.Tensor):
    """sqrt(x); gradient ``0.5 * g / y`` instead of SqrtGrad."""
    y = tf.sqrt(x)

    def grad(g):
        return 0.5 * g / y

    return y, grad


def gelu(x: tf.Tensor, approximate: str) -> tf.Tensor:
    """GELU (builtin GELU, exact or tanh-approximated as PyTorch's ``approximate``) with a builtin-only gradient.

    TF differentiates the exact GELU through ERF, which is no TFLite builtin. Its gradient is
    ``Phi(x) + x * phi(x)``; the normal CDF ``Phi(x)`` is read off the forward as ``gelu(x) / x``, and near 0
    (where that ratio loses its digits) from ``Phi(x) = 1/2 + x * phi(0) + O(x^3)``. The tanh form's
    gradient is its closed form through TANH.
    """
    tanh_form = approximate == "tanh"

    @tf.custom_gradient
    def _gelu(x):
        y = tf.nn.gelu(x, approximate=tanh_form)

        def grad(g):
            if tanh_form:
                c = math.sqrt(2.0 / math.pi)
                t = tf.tanh(c * (x + 0.044715 * x * x * x))
                return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x))
            pdf = tf.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
            near_zero = tf.abs(x) < 1e-3
            cdf = tf.where(near_zero, 0.5 + x * (1.0 / math.sqrt(2.0 * math.pi)),
                           y / tf.where(near_zero, tf.ones_like(x), x))
            return g * (cdf + x * pdf)

        return y, grad

    return _gelu(x)


def clamp(x: tf.Tensor, low: float | None, high: float | None, closed: bool) -> tf.Tensor:
    """Clip to [low, high] (either may be None); RELU6 for [0, 6].

    The gradient passes where x is inside the bounds, as PyTorch defines it:
    ``closed`` bounds count as inside (``clamp``), open ones do not
    (``hardtanh``, i.e. ReLU6). TF's own gradients (Relu6Grad, or a Select
    chain with other boundary values) are not used.
    """

    @tf.custom_gradient
    def _clamp(x):
        if (low, high) == (0, 6):
            y = tf.nn.relu6(x)
        else:
            y = x if low is None else tf.maximum(x, tf.constant(low, x.dtype))
            y = y if high is None else tf.minimum(y, tf.constant(high, x.dtype))

        def grad(g):
            inside = tf.ones_like(g)
            if low is not None:
                inside *= tf.cast(x >= low if closed else x > low, g.dtype)
            if high is not None:
                inside *= tf.cast(x <= high if closed else x < high, g.dtype)
            return g * inside

        return y, grad

    return _clamp(x)


def log1p(x: tf.Tensor) -> tf.Tensor:
    """log(1 + x): TFLite has no LOG1P builtin; LOG of ADD is builtin, and so is its gradient ``g / (1 + x)``."""
    return tf.math.log(1.0 + x)


def conv2d(x: tf.Tensor, w: tf.Tensor, strides: tuple[int, int]) -> tf.Tensor:
    """VALID 2-D convolution, NHWC input, HWIO filter, unit dilation, with builtin-only gradients.

    - input gradient: ``conv2d_transpose`` (TFLite TRANSPOSE_CONV) instead of Conv2DBackpropInput;
    - filter gradient: a second convolution over transposed tensors, with the
      forward stride as its dilation (CONV_2D) instead of Conv2DBackpropFilter:
      ``dW[a, b, ci, co] = sum_{n,i,j} x[n, i*s + a, j*s + b, ci] * g[n, i, j, co]``.
    """
    sh, sw = strides

    @tf.custom_gradient
    def _conv(x, w):
        y = tf.nn.conv2d(x, w, strides=[1, sh, sw, 1], padding="VALID")

        def grad(g):
            kh, kw = w.shape[0], w.shape[1]
            dx = tf.nn.conv2d_transpose(g, w, output_shape=tf.shape(x), strides=[1, sh, sw, 1], padding="VALID")
            xt = tf.transpose(x, [3, 1, 2, 0])  # [Cin, H, W, N]: input channels as the batch
            gt = tf.transpose(g, [1, 2, 0, 3])  # [Ho, Wo, N, Cout]: the output gradient as the filter
            dw = tf.nn.conv2d(xt, gt, strides=1, padding="VALID", dilations=[1, sh, sw, 1])  # [Cin, >=kh, >=kw, Cout]
            dw = tf.transpose(dw[:, :kh, :kw, :], [1, 2, 0, 3])
            return dx, dw

        return y, grad

    return _conv(x, w)


def depthwise_conv2d(x: tf.Tensor, w: tf.Tensor, strides: tuple[int, int]) -> tf.Tensor:
    """VALID depthwise convolution (DEPTHWISE_CONV_2D), NHWC input, filter [kh, kw, C, multiplier], with builtin-only
    gradients instead of the Flex DepthwiseConv2dNativeBackpropInput/Filter:

    - input gradient: a stride-1 depthwise convolution of the zero-dilated, padded output gradient with the
      spatially flipped filter (``_depthwise_input_gradient``);
    - filter gradient: per-channel correlations of x and the output gradient, as one depthwise convolution
      with the batch folded into the channels (``_depthwise_filter_gradient``).

    TF's depthwise kernel needs equal strides in H and W.
    """

    @tf.custom_gradient
    def _dw(x, w):
        y = tf.nn.depthwise_conv2d(x, w, [1, *strides, 1], "VALID")

        def grad(g):
            return _depthwise_input_gradient(g, w, x.shape, strides), _depthwise_filter_gradient(x, g, w.shape, strides)

        return y, grad

    return _dw(x, w)


def _dilate(g: tf.Tensor, strides: tuple[int, int]) -> tf.Tensor:
    """Insert ``stride - 1`` zeros between rows and columns of an NHWC tensor (RESHAPE + PAD, 4-D only)."""
    sh, sw = strides
    if (sh, sw) == (1, 1):
        return g
    n, h, w, c = g.shape
    g = tf.pad(tf.reshape(g, [n, h, 1, w * c]), [[0, 0], [0, 0], [0, sh - 1], [0, 0]])
    g = tf.pad(tf.reshape(g, [n * h * sh, w, 1, c]), [[0, 0], [0, 0], [0, sw - 1], [0, 0]])
    return tf.reshape(g, [n, h * sh, w * sw, c])[:, : (h - 1) * sh + 1, : (w - 1) * sw + 1, :]


def _depthwise_input_gradient(g: tf.Tensor, w: tf.Tensor, in_shape: tf.TensorShape,
                              strides: tuple[int, int]) -> tf.Tensor:
    """dx of a VALID depthwise convolution: the full correlation of the dilated g with the flipped filter.

    Rows and columns of x that no window reached (when ``(H - kh) % stride != 0``) get zeros.
    """
    kh, kw, c, m = w.shape
    h, wd = in_shape[1], in_shape[2]
    ho, wo = g.shape[1], g.shape[2]
    rest_h, rest_w = h - ((ho - 1) * strides[0] + kh), wd - ((wo - 1) * strides[1] + kw)
    gd = tf.pad(_dilate(g, strides), [[0, 0], [kh - 1, kh - 1 + rest_h], [kw - 1, kw - 1 + rest_w], [0, 0]])
    flipped = tf.reshape(tf.reverse(w, [0, 1]), [kh, kw, c * m, 1])
    dx = tf.nn.depthwise_conv2d(gd, flipped, [1, 1, 1, 1], "VALID")  # [N, H, W, C * m]
    return dx if m == 1 else tf.reduce_sum(tf.reshape(dx, [-1, h, wd, c, m]), -1)


# LiteRT's own float depthwise kernel (no XNNPACK) loops forever on more output channels than its 4832-float row
# buffer holds (measured: 4832 runs in 1 ms, 4833 never returns), and the filter gradient folds the batch into the
# channels: more than that many are computed in slices.
LITERT_DEPTHWISE_MAX_OUTPUT_CHANNELS = 4832


def _depthwise_filter_gradient(x: tf.Tensor, g: tf.Tensor, w_shape: tf.TensorShape,
                               strides: tuple[int, int]) -> tf.Tensor:
    """``dW[a, b, c, k] = sum_{n,i,j} x[n, i*s + a, j*s + b, c] * g[n, i, j, c*M + k]`` (M: the multiplier).

    One depthwise convolution (in slices of channels, ``LITERT_DEPTHWISE_MAX_OUTPUT_CHANNELS``): x as a single
    image with N*C channels, g as its [Ho, Wo, N*C, m] filter, the forward stride as its dilation; then a sum over
    the batch.
    """
    kh, kw, c, m = w_shape
    n, h, wd = x.shape[0], x.shape[1], x.shape[2]
    ho, wo = g.shape[1], g.shape[2]
    xt = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, wd, n * c])
    gt = tf.reshape(tf.transpose(tf.reshape(g, [n, ho, wo, c, m]), [1, 2, 0, 3, 4]), [ho, wo, n * c, m])
    chunk = max(1, LITERT_DEPTHWISE_MAX_OUTPUT_CHANNELS // m)
    sizes = [min(chunk, n * c - i) for i in range(0, n * c, chunk)]
    dw = tf.concat([tf.nn.depthwise_conv2d(xs, gs, [1, 1, 1, 1], "VALID", dilations=list(strides))
                    for xs, gs in zip(tf.split(xt, sizes, axis=3), tf.split(gt, sizes, axis=2))], 3) \
        if len(sizes) > 1 else tf.nn.depthwise_conv2d(xt, gt, [1, 1, 1, 1], "VALID", dilations=list(strides))
    # dw: [1, >=kh, >=kw, N*C*m]
    return tf.reduce_sum(tf.reshape(dw[:, :kh, :kw, :], [kh, kw, n, c, m]), 2)


def avg_pool2d(x: tf.Tensor, kernel: tuple[int, int], strides: tuple[int, int]) -> tf.Tensor:
    """VALID average pooling (AVERAGE_POOL_2D); its gradient is that of a depthwise convolution with a constant
    1/(kh*kw) filter, instead of the Flex AvgPoolGrad."""

    @tf.custom_gradient
    def _pool(x):
        y = tf.nn.avg_pool2d(x, kernel, strides, "VALID")

        def grad(g):
            mean_filter = tf.fill([*kernel, x.shape[-1], 1], tf.constant(1.0 / (kernel[0] * kernel[1]), x.dtype))
            return _depthwise_input_gradient(g, mean_filter, x.shape, strides)

        return y, grad

    return _pool(x)


def max_pool2d(x: tf.Tensor, kernel: tuple[int, int], strides: tuple[int, int]) -> tf.Tensor:
    """VALID max pooling (MAX_POOL_2D) with a builtin-only gradient instead of the Flex MaxPoolGrad.

    Each window's gradient goes to its first maximum in row-major order, as in PyTorch: the window
    positions are taken as kh*kw strided slices, ARG_MAX over them picks the first maximum, and
    ONE_HOT masks each slice's share of g, which is scattered back by dilation and padding.
    """
    kh, kw = kernel
    sh, sw = strides

    @tf.custom_gradient
    def _pool(x):
        y = tf.nn.max_pool2d(x, kernel, strides, "VALID")

        def grad(g):
            n, h, wd, c = x.shape
            ho, wo = g.shape[1], g.shape[2]
            span_h, span_w = (ho - 1) * sh + 1, (wo - 1) * sw + 1
            taps = [(a, b) for a in range(kh) for b in range(kw)]
            windows = tf.stack([tf.strided_slice(x, [0, a, b, 0], [n, a + span_h, b + span_w, c], [1, sh, sw, 1])
                                for a, b in taps])  # [kh*kw, N, Ho, Wo, C]
            first_max = tf.one_hot(tf.argmax(windows, 0), len(taps), axis=0, dtype=g.dtype)
            dx = 0
            for t, (a, b) in enumerate(taps):
                share = _dilate(g * first_max[t], strides)
                dx += tf.pad(share, [[0, 0], [a, h - a - span_h], [b, wd - b - span_w], [0, 0]])
            return dx

        return y, grad

    return _pool(x)


def gather_rows(table: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Row lookup (``nn.Embedding``) whose table gradient is UNSORTED_SEGMENT_SUM, not an IndexedSlices scatter."""
    rows = table.shape[0]

    @tf.custom_gradient
    def _gather(table):
        y = tf.gather(table, indices)

        def grad(g):
            flat_idx = tf.reshape(indices, [-1])
            flat_g = tf.reshape(g, [-1, *table.shape[1:]])
            return tf.math.unsorted_segment_sum(flat_g, flat_idx, rows)

        return y, grad

    return _gather(table)


def slice_axis(x: tf.Tensor, axis: int, start: int, end: int, step: int) -> tf.Tensor:
    """``x[start:end:step]`` along ``axis`` (STRIDED_SLICE; bounds already clamped to the axis) whose gradient
    puts the upstream gradient back in place with zeros around it (RESHAPE and PAD spread a step > 1, PAD for
    the bounds), instead of the Flex StridedSliceGrad."""
    rank, size = len(x.shape), x.shape[axis]
    begin, stop, strides = [0] * rank, list(x.shape), [1] * rank
    begin[axis], stop[axis], strides[axis] = start, end, step

    def pad_axis(t: tf.Tensor, dim: int, before: int, after: int) -> tf.Tensor:
        pads = [[0, 0]] * len(t.shape)
        pads[dim] = [before, after]
        return tf.pad(t, pads)

    @tf.custom_gradient
    def _slice(x):
        y = tf.strided_slice(x, begin, stop, strides)

        def grad(g):
            shape, n = list(g.shape), g.shape[axis]
            if n == 0:
                return tf.zeros_like(x)
            if step > 1:  # each element followed by step - 1 zeros, the last one's cut off
                spread = pad_axis(tf.reshape(g, [*shape[:axis + 1], 1, *shape[axis + 1:]]), axis + 1, 0, step - 1)
                g = tf.slice(tf.reshape(spread, [*shape[:axis], n * step, *shape[axis + 1:]]), [0] * rank,
                             [*shape[:axis], (n - 1) * step + 1, *shape[axis + 1:]])
            return pad_axis(g, axis, start, size - start - g.shape[axis])

        return y, grad

    return _slice(x)


def broadcast_to(x: tf.Tensor, shape: list[int]) -> tf.Tensor:
    """BroadcastTo whose gradient sums over statically known axes (no BroadcastGradientArgs)."""
    in_shape = list(x.shape)
    lead = len(shape) - len(in_shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(in_shape) if d == 1 and shape[lead + i] != 1]

    @tf.custom_gradient
    def _broadcast(x):
        y = tf.broadcast_to(x, shape)

        def grad(g):
            return tf.reshape(tf.reduce_sum(g, axis=axes) if axes else g, in_shape)

        return y, grad

    return _broadcast(x)


def _sum_to(g: tf.Tensor, shape: list[int]) -> tf.Tensor:
    """``g`` summed down to a broadcast operand's ``shape``, one axis at a time (``dcx/passes/split_reductions.py``
    says why)."""
    full = [1] * (len(g.shape) - len(shape)) + list(shape)
    for axis in reversed(range(len(full))):
        if full[axis] == 1 and g.shape[axis] != 1:
            g = tf.reduce_sum(g, axis, keepdims=True)
    return tf.reshape(g, shape)


_BROADCAST_OPS = {"add": (tf.add, lambda g, a, b: (g, g)),
                  "sub": (tf.subtract, lambda g, a, b: (g, -g)),
                  "mul": (tf.multiply, lambda g, a, b: (g * b, g * a))}


def broadcast_binary(op: str, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """``add``, ``sub`` or ``mul`` of float tensors of different shapes, whose gradient sums each operand's
    broadcast axes one at a time: TF's own gradient sums them all in one SUM, one float32 accumulator per value
    over N x H x W elements for a batch norm's shift and scale."""
    forward, local = _BROADCAST_OPS[op]

    @tf.custom_gradient
    def _op(a, b):
        def grad(g):
            ga, gb = local(g, a, b)
            return _sum_to(ga, a.shape), _sum_to(gb, b.shape)

        return forward(a, b), grad

    return _op(a, b)


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

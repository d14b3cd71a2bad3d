"""The text of the installed tools' errors, read in one place per tool (``dcx/backends/<format>/messages.py``):
each pattern is pinned here to a real error of the version the project installs, so an upgrade that rewords a
message fails this test instead of turning a one-line "cannot take op X" into a traceback."""

import io

import pytest
import torch

from dcx.backends.coreml import messages as coreml_messages
from dcx.backends.executorch import messages as executorch_messages
from dcx.backends.onnx import messages as onnx_messages
from dcx.backends.tflite import messages as tflite_messages


@torch.library.custom_op("dcxtest::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    """An operator with no out-variant kernel: ExecuTorch cannot run it."""
    return x * 2


@twice.register_fake
def _(x):
    return torch.empty_like(x)


class Twice(torch.nn.Module):
    def forward(self, x):
        return twice(x) + 1


class Determinant(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.det(x.reshape(2, 2)).reshape(1)


def _error(fn) -> Exception:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def test_executorch_names_an_operator_without_an_out_variant():
    from executorch.exir import to_edge

    edge = to_edge(torch.export.export(Twice(), (torch.rand(1, 4),)))
    error = _error(edge.to_executorch)
    assert executorch_messages.unsupported_op(error) == "dcxtest::twice", str(error)[:300]


def test_executorch_names_an_operator_outside_core_aten():
    """``to_edge``'s SpecViolationError starts with an empty line; the operator is on the next."""
    from executorch.exir import to_edge

    error = _error(lambda: to_edge(torch.export.export(Determinant(), (torch.rand(1, 4),))))
    assert executorch_messages.unsupported_op(error) == "aten._linalg_det.default", str(error)[:300]


def test_onnx_names_an_operator_outside_the_opset():
    class Attend(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):  # in eval mode, PyTorch's fused inference path
            return self.attention(x, x, x, need_weights=False)[0]

    with torch.no_grad():
        error = _error(lambda: torch.onnx.export(Attend().eval(), (torch.rand(1, 3, 8),), io.BytesIO(), opset_version=17,
                                                 dynamo=False))
    assert onnx_messages.unsupported_op(error) == "aten::_native_multi_head_attention", str(error)[:300]


def test_coremltools_names_an_operator_it_cannot_convert():
    import coremltools as ct

    program = torch.export.export(Determinant(), (torch.rand(1, 4),)).run_decompositions({})
    error = _error(lambda: ct.convert(program, convert_to="mlprogram", inputs=[ct.TensorType("x", shape=(1, 4))]))
    assert coreml_messages.unsupported_op(error) == "linalg_det", str(error)[:300]


def test_the_tflite_converter_lists_the_non_builtin_ops():
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([4], tf.float32)])
    def relu_grad(x):  # TF's own ReluGrad: a Flex op
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.nn.relu(x))
        return tape.gradient(y, x)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([relu_grad.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    reason = tflite_messages.converter_reason(_error(converter.convert))
    assert reason.startswith("non-builtin ops needed (") and "ReluGrad" in reason, reason


def test_an_unrelated_error_names_no_operator():
    error = RuntimeError("something else went wrong")
    assert not any(m.unsupported_op(error) for m in (executorch_messages, onnx_messages, coreml_messages))

"""ONNX (``.onnx``): inference programs, run in ONNX Runtime."""

from dcx.backends import Backend, register_backend
from dcx.backends.onnx.exporter import EXPORTER
from dcx.backends.onnx.runtime import RUNTIME
from dcx.backends.onnx.stored import stored_tensors

BACKEND = register_backend(Backend(
    "onnx", EXPORTER, RUNTIME, stored_tensors,
    profile={"host": "host session", "emulator": "host session",
             "phone": "ONNX Runtime is not part of the phone bundle"},
    kinds=("infer",), rank=3))

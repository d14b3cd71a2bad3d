"""TFLite / LiteRT (``.tflite``): builtin ops only, training through ``train``/``infer``/``save``/``restore``."""

from dcx.backends import Backend, register_backend
from dcx.backends.tflite.benchmark_model import benchmark_tflite
from dcx.backends.tflite.exporter import EXPORTER
from dcx.backends.tflite.runtime import RUNTIME
from dcx.backends.tflite.spec import stored_tensors

BACKEND = register_backend(Backend(
    "tflite", EXPORTER, RUNTIME, stored_tensors,
    profile={"host": "host session", "emulator": "host session", "phone": "benchmark binary"},
    benchmark_binary=benchmark_tflite, rank=1))

"""Core ML: ``.mlpackage`` (ML program) for inference, updatable ``.mlmodel`` for training."""

from dcx.backends import Backend, register_backend
from dcx.backends.coreml.exporter import EXPORTER
from dcx.backends.coreml.runtime import RUNTIME
from dcx.backends.coreml.stored import stored_tensors

IOS_ONLY = "Core ML runs on iOS/macOS only: run ios_harness/ there"
BACKEND = register_backend(Backend(
    "coreml", EXPORTER, RUNTIME, stored_tensors, profile={"host": IOS_ONLY, "emulator": IOS_ONLY, "phone": IOS_ONLY}, rank=2))

"""ExecuTorch (``.pte``): inference lowered to XNNPACK, training as joint graphs on the dcx training kernels."""

from dcx.backends import Backend, register_backend
from dcx.backends.executorch.exporter import EXPORTER
from dcx.backends.executorch.options import ExecuTorchOptions
from dcx.backends.executorch.runtime import RUNTIME
from dcx.backends.executorch.stored import stored_tensors

BACKEND = register_backend(Backend(
    "executorch", EXPORTER, RUNTIME, stored_tensors, options=ExecuTorchOptions,
    profile={"host": "native runner", "emulator": "native runner", "phone": "native runner"}, rank=0))

"""Backend modules are imported by format name, only when used: a missing optional package is a user error."""

from __future__ import annotations

import importlib
from types import ModuleType

from dcx.errors import DcxError

FORMATS = ("executorch", "tflite", "coreml", "onnx")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise DcxError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)} or all")
    return fmt


def import_backend(package: str, fmt: str) -> ModuleType:
    """``dcx.export.<fmt>`` or ``dcx.runtimes.<fmt>``."""
    try:
        return importlib.import_module(f"{package}.{check_format(fmt)}")
    except ImportError as e:
        raise DcxError(f"format {fmt!r} needs a package that is not installed ({e.name}): "
                       f"pip install 'dcx[{fmt}]' or run `make setup`") from None

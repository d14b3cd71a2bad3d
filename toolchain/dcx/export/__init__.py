"""Exporters: one module per backend, found by format name.

An exporter turns a ``DeviceProgram`` into one artifact file (or bundle
folder) and describes it; it never writes the model again by hand. Each is a
short list of named passes plus serialization (``dcx.export.passes``).
Adding a backend means one exporter here and one runtime in ``dcx.runtimes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dcx.backends import FORMATS, check_format, import_backend
from dcx.programs import DeviceProgram



@dataclass
class ExportOptions:
    fused_kernels: bool = False  # ICIIA's PartitionedLinear as the custom dcx:: op (ExecuTorch only)


@dataclass
class ArtifactInfo:
    """What an exporter reports about the artifact it wrote (merged into the manifest entry)."""

    signatures: dict[str, dict]  # signature name -> {"inputs": [spec...], "outputs": [spec...]}
    weights: dict[str, str] = field(default_factory=dict)  # PyTorch parameter name -> name inside the artifact
    deviations: list[str] = field(default_factory=list)  # where the artifact differs from the exact objective
    notes: dict[str, str] = field(default_factory=dict)


class Exporter(Protocol):
    format: str
    suffix: str  # ".pte", ".tflite", ".onnx", ".mlpackage" / ".mlmodel"

    def supports(self, program: DeviceProgram) -> str | None:
        """None when it can export ``program``; otherwise the reason it does not."""

    def suffix_for(self, program: DeviceProgram) -> str: ...

    def export(self, program: DeviceProgram, path: Path, options: ExportOptions) -> ArtifactInfo:
        """Write the artifact to ``path`` (a temporary name; the caller renames it)."""

    def versions(self) -> dict[str, str]: ...


def get_exporter(fmt: str) -> Exporter:
    """The module ``dcx.export.<fmt>`` defines ``EXPORTER``."""
    return import_backend("dcx.export", fmt).EXPORTER


def resolve_formats(fmt: str) -> list[str]:
    return list(FORMATS) if fmt == "all" else [check_format(fmt)]

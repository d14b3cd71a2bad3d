"""Exporters: one module per backend, found by format name.

An exporter turns a ``DeviceProgram`` into one artifact file (or bundle
folder) and describes it; it never writes the model again by hand. Each is a
short list of named passes (``dcx.export.passes``) plus serialization.
Adding a backend means one exporter here and one runtime in ``dcx.runtimes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dcx.backends import FORMATS, check_format, import_backend
from dcx.manifest import Deviation, PassRecord, Requirements, Signature
from dcx.programs import DeviceProgram
from dcx.reference import ProgramReference


@dataclass
class ExportOptions:
    fused_kernels: bool = False  # ICIIA's PartitionedLinear as the custom dcx:: op (ExecuTorch inference)
    fast_training: bool = True  # ExecuTorch training graphs on the dcx training kernels (passes/fast_training.py)
    frozen_xnnpack: bool = True  # with fast_training: the frozen layers' forward in XNNPACK (passes/frozen_xnnpack.py)


@dataclass
class ArtifactInfo:
    """What an exporter reports about the artifact it wrote (merged into the manifest entry)."""

    signatures: dict[str, Signature]
    weights: dict[str, str] = field(default_factory=dict)  # trainable PyTorch parameter -> name inside the artifact
    deviations: list[Deviation] = field(default_factory=list)  # where the artifact differs from the exact objective
    requires: Requirements = field(default_factory=Requirements)
    passes: list[PassRecord] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # for people


class Exporter(Protocol):
    format: str

    def supports(self, program: DeviceProgram) -> str | None:
        """None when it can export ``program``; otherwise the reason it does not."""

    def suffix_for(self, program: DeviceProgram) -> str:
        """".pte", ".tflite", ".onnx", ".mlpackage" / ".mlmodel"."""

    def export(self, program: DeviceProgram, path: Path, options: ExportOptions,
               reference: ProgramReference | None = None) -> ArtifactInfo:
        """Write the artifact to ``path`` (a temporary name; the caller renames it).

        ``reference`` is the program's reference (for exporters that measure a deviation on its batches).
        An operator the backend cannot take raises ``dcx.errors.UnsupportedOp``."""

    def versions(self) -> dict[str, str]: ...


def get_exporter(fmt: str) -> Exporter:
    """The module ``dcx.export.<fmt>`` defines ``EXPORTER``."""
    return import_backend("dcx.export", fmt).EXPORTER


def resolve_formats(fmt: str) -> list[str]:
    return list(FORMATS) if fmt == "all" else [check_format(fmt)]

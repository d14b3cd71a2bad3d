"""Backends: one folder per artifact format, registered here by name.

``dcx/backends/<format>/`` holds everything of one format: its exporter (a short list of named passes plus
serialization, in ``exporter.py`` and ``passes/``), its export options, its host runtime (``runtime.py``: load,
run, train an artifact), where its artifacts store their tensors (``stored``), and its spec tools. Its
``__init__`` builds a ``Backend`` and calls ``register_backend``. The rest of dcx asks this registry what it needs
to know about a format — the file suffix for a program, which program kinds it takes, its exporter and runtime,
its stored tensors, how ``dcx profile`` measures it on a kind of device — and never branches on a format's name.

Adding a backend is one folder plus its ``register_backend`` call, found through the ``dcx.backends`` entry
points (``dcx.plugins``) the first time the registry is asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from dcx.errors import DcxError
from dcx.manifest import Deviation, PassRecord, Requirements, Signature
from dcx.programs import DeviceProgram
from dcx.reference import ProgramReference

ProfileMode = Literal["native runner", "host session", "benchmark binary"]
Place = Literal["host", "emulator", "phone"]  # where dcx profile runs: this machine, qemu-aarch64, a real phone


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
    def supports(self, program: DeviceProgram) -> str | None:
        """None when it can export ``program``; otherwise the reason it does not."""

    def suffix_for(self, program: DeviceProgram) -> str:
        """".pte", ".tflite", ".onnx", ".mlpackage" / ".mlmodel"."""

    def export(self, program: DeviceProgram, path: Path, options: Any,
               reference: ProgramReference | None = None) -> ArtifactInfo:
        """Write the artifact to ``path`` (a temporary name; the caller renames it); ``options``: an instance of the
        backend's ``options`` type, or None where it has none. An operator the backend cannot take raises
        ``dcx.errors.UnsupportedOp``."""

    def versions(self) -> dict[str, str]: ...


class OneSuffixExporter:
    """The defaults most exporters share: one ``suffix`` for every program, and every program taken."""

    suffix: str

    def suffix_for(self, program: DeviceProgram) -> str:
        return self.suffix

    def supports(self, program: DeviceProgram) -> str | None:
        return None


@dataclass(frozen=True)
class Backend:
    format: str
    exporter: Exporter
    runtime: Any  # dcx.backends.runtime.Runtime
    stored_tensors: Callable[[Path], list]  # artifact -> [dcx.backends.stored.StoredTensor]
    # How dcx profile measures an artifact at each place, or why it cannot (a one-line reason).
    profile: dict[Place, ProfileMode | str]
    kinds: tuple[str, ...] = ("train", "infer")  # the program kinds it exports
    options: type | None = None  # the dataclass of its export options; None: it has none
    # "benchmark binary": (target, binary, artifact, iterations, warmup, local folder) -> the runner's row fields
    benchmark_binary: Callable[..., dict] | None = None
    rank: int = 100  # where it comes in `all` (exports, tables): lower first, then by name

    def default_options(self) -> Any:
        return self.options() if self.options else None


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    _REGISTRY[backend.format] = backend
    return backend


def _missing() -> dict[str, str]:
    from dcx.plugins import load_plugins  # the backends registered through entry points, once

    return load_plugins("dcx.backends")


def formats() -> list[str]:
    """Every registered format (those whose packages are installed), by rank."""
    _missing()
    return sorted(_REGISTRY, key=lambda f: (_REGISTRY[f].rank, f))


def get_backend(fmt: str) -> Backend:
    missing = _missing()
    if fmt in _REGISTRY:
        return _REGISTRY[fmt]
    if fmt in missing:
        raise DcxError(f"format {fmt!r} {missing[fmt]}: pip install 'dcx[{fmt}]' (a checkout: `make setup`)")
    raise DcxError(f"unknown format {fmt!r}: choose one of {', '.join(_REGISTRY)} or all")


def resolve_formats(fmt: str) -> list[str]:
    """``all`` (every registered format) or one format name."""
    return formats() if fmt == "all" else [get_backend(fmt).format]


def get_exporter(fmt: str) -> Exporter:
    return get_backend(fmt).exporter


def get_runtime(fmt: str):
    return get_backend(fmt).runtime

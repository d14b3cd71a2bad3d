"""``manifest.json``: the typed description of an export folder (docs/manifest.md).

Every entry is a ``ManifestEntry`` dataclass; whatever code relies on (the
custom ops and kernel libraries an artifact needs, where its weights came
from, where each weight lies inside the file, the reference it is checked
against) is a structured field. ``notes`` is prose for people only: no code
reads it. A manifest of another schema version is refused with a one-line
error saying to re-export.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from dcx.errors import DcxError
from dcx.optim import Spec as OptimizerSpec
from dcx.programs import TensorSpec

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 4


@dataclass
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass
class Flops:
    forward: int
    backward: int | None = None  # training programs: one step's backward


@dataclass
class ParameterCount:
    trainable: int
    frozen: int  # frozen parameters and buffers


@dataclass
class ActivationBytes:
    """Activation memory of one call (``DeviceProgram.activation_bytes``)."""

    forward_peak: int
    saved_for_backward: int | None = None  # training programs


@dataclass
class Provenance:
    """Where the artifact's weights came from."""

    weights: Literal["checkpoint", "initialised", "user"]  # trained checkpoint | fresh from the seed | user's module
    seed: int | None = None
    checkpoint: str | None = None  # the folder as given to --checkpoint
    checkpoint_sha256: str | None = None  # of its modules.safetensors
    recipe_config: dict[str, Any] | None = None


@dataclass
class Requirements:
    """What a runtime must provide beyond the stock runtime to load the artifact."""

    custom_ops: list[str] = field(default_factory=list)  # e.g. "dcx::shuffled_partitioned_linear.out"
    kernel_libraries: list[str] = field(default_factory=list)  # dcx.kernels library names, e.g. "dcx_training_executorch"


@dataclass
class WeightLocation:
    """A tensor the artifact stores, found through the format's structure (``dcx.backends.stored``)."""

    name: str  # the PyTorch parameter or buffer name ("folded ..." for a fold's output)
    region: str  # the format's name for where it lies: "buffer 12", "initializer fc.weight", "named data 7b58..."
    nbytes: int
    layout: str  # "identity", or the permutation of the PyTorch tensor's axes it is stored in, e.g. "0,2,3,1"


@dataclass(frozen=True)
class ConvNorm:
    """A frozen convolution and the inference-mode batch norm after it: their weights' names in the program."""

    conv_weight: str
    conv_bias: str | None
    norm_weight: str | None
    norm_bias: str | None
    running_mean: str
    running_var: str
    eps: float


@dataclass
class FoldedBatchNorm:
    """A ``ConvNorm`` stored as one weight and bias (``torch.nn.utils.fusion.fuse_conv_bn_weights`` of the named
    reference weights)."""

    pair: ConvNorm
    weight: WeightLocation
    bias: WeightLocation


@dataclass
class UncheckedWeight:
    """A reference weight not stored verbatim nor as a known fold, and why."""

    name: str
    reason: Literal["unread", "transformed"]  # the program never reads it | the converter folded it into others


@dataclass
class WeightCoverage:
    """Every reference weight of the artifact, accounted for (``dcx.export.weight_locations``)."""

    verbatim: list[WeightLocation] = field(default_factory=list)
    folded: list[FoldedBatchNorm] = field(default_factory=list)
    unchecked: list[UncheckedWeight] = field(default_factory=list)


@dataclass
class PassRecord:
    name: str
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingGap:
    """How far an artifact's training formulation trains from eager torch.optim on the reference batches, as
    measured at export (Core ML: the exported spec in dcx's reference interpreter); verify measures it again and
    fails when it grew."""

    method: str
    formulation: str
    samples_for_accuracy: int
    steps: int
    loss_first: list[float]  # [artifact, PyTorch]
    loss_last: list[float]
    loss_max_abs_diff: float
    loss_max_rel_diff: float
    weight_max_abs_diff: float
    weight_max_abs_diff_by_param: dict[str, float]
    accuracy_coreml_formulation: float
    accuracy_exact: float
    accuracy_abs_diff: float
    prediction_agreement: float
    moved: list[str]  # the trainable parameters the artifact's steps changed
    alternative_drop_frozen_offset: "TrainingGap | None" = None  # the naive valid formulation, for comparison


@dataclass
class Deviation:
    """Where the artifact differs from the exact PyTorch objective, with its measured effect when measurable."""

    description: str
    measured: TrainingGap | None = None
    parameters: list[str] = field(default_factory=list)  # trainable parameters it concerns (e.g. frozen there)


@dataclass
class ReferenceInfo:
    file: str  # relative to the export folder, e.g. "reference/dcccl.train.safetensors"
    sha256: str
    steps: int  # training batches in it (0 for inference programs)
    tensors: dict[str, str]  # each tensor's name -> ProgramReference.digests(): its dtype, shape and bytes
    metadata_sha256: str  # of the reference's metadata, as JSON with sorted keys


@dataclass
class ManifestEntry:
    program: str
    recipe: str | None  # None for a user's own program
    kind: Literal["train", "infer"]
    format: str
    file: str  # relative to the export folder
    sha256: str
    size_bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    signatures: dict[str, Signature]
    trainable: dict[str, list[int]]
    frozen: dict[str, list[int]]
    state: dict[str, list[int]]  # buffers each training step updates (batch-norm running statistics), by shape
    norm_modes: dict[str, Literal["train", "eval"]]  # each normalisation layer's mode in the program
    optimizer: OptimizerSpec | None
    flops: Flops
    parameters: ParameterCount
    activation_bytes: ActivationBytes
    weights: dict[str, str]  # trainable PyTorch parameter -> its name inside the artifact
    weight_coverage: WeightCoverage
    provenance: Provenance
    requires: Requirements
    passes: list[PassRecord]
    deviations: list[Deviation]
    reference: ReferenceInfo
    versions: dict[str, str]
    export_seconds: float
    notes: dict[str, str] = field(default_factory=dict)  # for people; never read by code


@dataclass
class ExportFailure:
    program: str
    format: str
    error: str
    op: str | None = None  # the operator the backend could not take, when that is the reason


@dataclass
class Manifest:
    schema: int
    dcx: str
    artifacts: list[ManifestEntry] = field(default_factory=list)
    failures: list[ExportFailure] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # every reference file dcx wrote (relative paths)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "Manifest":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DcxError(f"{where} does not parse as JSON ({e}): re-run `dcx export --force`") from None
        if not isinstance(data, dict):
            raise DcxError(f"{where} is not a JSON object: re-run `dcx export --force`")
        if data.get("schema") != MANIFEST_SCHEMA:
            raise DcxError(f"{where}: manifest schema {data.get('schema')!r} was written by another dcx version "
                           f"(this one reads {MANIFEST_SCHEMA}): re-export with `dcx export --force`")
        return from_dict(cls, data, where)

    def entry(self, program: str, fmt: str) -> ManifestEntry | None:
        return next((e for e in self.artifacts if e.program == program and e.format == fmt), None)


# ---------------------------------------------------------------- JSON -> dataclasses

def from_dict(tp: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as type ``tp``; a one-line ``DcxError`` naming the field when it does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DcxError(f"{where}: expected an object: re-export")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = from_dict(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise DcxError(f"{where}: field {f.name!r} is missing: re-export")
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return from_dict(inner[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise DcxError(f"{where}: expected a list: re-export")
        return [from_dict(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list):
            raise DcxError(f"{where}: expected a list: re-export")
        return tuple(from_dict(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise DcxError(f"{where}: expected an object: re-export")
        return {k: from_dict(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is Literal:
        if value not in args:
            raise DcxError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}: re-export")
        return value
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise DcxError(f"{where}: expected {tp.__name__}, got {type(value).__name__}: re-export")
    return value


# ---------------------------------------------------------------- files

def sha256_of(path: Path) -> str:
    """Of a file, or of a bundle folder (relative names and contents, in sorted order)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(sha256_of(f).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def write_manifest(out: Path, manifest: Manifest) -> None:
    from dcx.fileio import write_atomic

    write_atomic(out / MANIFEST, manifest.to_json())


def inside(out: Path, relative: str, field_name: str) -> Path:
    """``out / relative``, refused when it would lie outside ``out`` (absolute paths, ``..``, links out)."""
    path = (out / relative)
    if Path(relative).is_absolute() or not path.resolve().is_relative_to(out.resolve()):
        raise DcxError(f"{out / MANIFEST}: {field_name} {relative!r} lies outside the export folder: "
                       "refused; re-export")
    return path


def read_manifest(out: Path) -> Manifest:
    out = Path(out)
    path = out / MANIFEST
    if not out.is_dir():
        raise DcxError(f"{out} is not a directory: pass the folder that `dcx export --out` wrote")
    if not path.exists():
        raise DcxError(f"{path} is missing: run `dcx export --out {out}` first")
    manifest = Manifest.from_json(path.read_text(), str(path))
    for i, e in enumerate(manifest.artifacts):
        inside(out, e.file, f"artifacts[{i}].file")
        inside(out, e.reference.file, f"artifacts[{i}].reference.file")
    return manifest

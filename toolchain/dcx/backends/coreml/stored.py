"""Where a Core ML model's weights lie: the weight fields of a NeuralNetwork's layers (``.mlmodel``), and the
constants of an ML program (``.mlpackage``: immediate values in the spec, larger ones in ``weights/weight.bin``)."""

from __future__ import annotations

import struct
from pathlib import Path

from dcx.errors import DcxError
from dcx.backends.protobuf_spans import length_delimited_spans
from dcx.backends.stored import StoredTensor

SPEC = "Data/com.apple.CoreML/model.mlmodel"  # inside an .mlpackage
BLOB_SENTINEL = 0xDEADBEEF  # first field of each weight.bin blob's 64-byte metadata record


def stored_tensors(path: Path) -> list[StoredTensor]:
    from coremltools.proto import Model_pb2

    path = Path(path)
    spec_file = path / SPEC if path.is_dir() else path
    relative = SPEC if path.is_dir() else ""
    data = spec_file.read_bytes()
    spec = Model_pb2.Model()
    spec.ParseFromString(data)
    if spec.WhichOneof("Type") == "mlProgram":
        return _program_constants(path, spec, data, relative)
    layers = _neural_network(spec).layers
    found = []
    for span in length_delimited_spans(data, Model_pb2.Model.DESCRIPTOR):
        names = [name for name, _ in span.path]
        if names[-1] == "floatValue" and "layers" in names:
            layer = layers[span.path[names.index("layers")][1]].name
            field = names[-2]
            found.append(StoredTensor(f"layer {layer} {field}", relative, span.start, span.end - span.start,
                                      f"{layer}/{field}"))
    return found


def _neural_network(spec):
    kind = spec.WhichOneof("Type")
    if kind not in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        raise DcxError(f"Core ML model type {kind!r} holds no NeuralNetwork or ML program: re-export it")
    return getattr(spec, kind)


def _program_constants(package: Path, spec, data: bytes, relative: str) -> list[StoredTensor]:
    """Each ``const`` operation's value: a blob of the weight file, or packed immediate floats in the spec."""
    from coremltools.proto import Model_pb2

    consts: dict[tuple[int, int, int], str] = {}  # (function, block, operation) index -> the constant's name
    found: list[StoredTensor] = []
    files: dict[str, bytes] = {}
    for f, function in enumerate(spec.mlProgram.functions.values()):
        for b, block in enumerate(function.block_specializations.values()):
            for o, op in enumerate(block.operations):
                if op.type == "const":
                    consts[(f, b, o)] = name = op.outputs[0].name
                    value = op.attributes["val"]
                    if value.WhichOneof("value") == "blobFileValue":
                        found.append(_blob(package, value.blobFileValue, name, files))
    for span in length_delimited_spans(data, Model_pb2.Model.DESCRIPTOR):
        names = [name for name, _ in span.path]
        if names[-2:] != ["floats", "values"] or "immediateValue" not in names or "operations" not in names:
            continue
        index = dict(span.path)
        key = (index["functions"], index["block_specializations"], index["operations"])
        if key in consts:
            found.append(StoredTensor(f"const {consts[key]}", relative, span.start, span.end - span.start,
                                      consts[key]))
    return found


def _blob(package: Path, value, const: str, cache: dict[str, bytes]) -> StoredTensor:
    relative = "Data/com.apple.CoreML/" + value.fileName.removeprefix("@model_path/")
    data = cache.setdefault(relative, (package / relative).read_bytes())
    sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", data, value.offset)
    if sentinel != BLOB_SENTINEL or offset + size > len(data):
        raise DcxError(f"{package / relative}: blob of {const} at {value.offset} is damaged: re-export it")
    return StoredTensor(f"const {const}", relative, offset, size, const)

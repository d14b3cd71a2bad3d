"""ONNX spec tools: where a model's initializers lie in the file."""

from __future__ import annotations

from pathlib import Path

from dcx.backends.protobuf_spans import length_delimited_spans
from dcx.backends.stored import StoredTensor


def stored_tensors(path: Path) -> list[StoredTensor]:
    """Every initializer of the main graph (its raw bytes, or its packed float/int values), by name."""
    import onnx

    data = Path(path).read_bytes()
    model = onnx.ModelProto()
    model.ParseFromString(data)
    names = [init.name for init in model.graph.initializer]
    found = []
    for span in length_delimited_spans(data, onnx.ModelProto.DESCRIPTOR):
        path_names = [name for name, _ in span.path]
        if path_names[:2] == ["graph", "initializer"] and len(span.path) == 3 and \
                path_names[2] in ("raw_data", "float_data", "int64_data", "int32_data", "double_data"):
            index = span.path[1][1]
            found.append(StoredTensor(f"initializer {names[index]}", "", span.start, span.end - span.start,
                                      names[index]))
    return found

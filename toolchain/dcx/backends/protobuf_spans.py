"""Where each field of a serialized protobuf message lies in its bytes.

Python's protobuf runtime parses a message but does not say where a field's
bytes sit in the file. Weight checks need exactly that for the formats that
are protobufs (ONNX models, Core ML specs): the span of a tensor's raw bytes
or packed floats, so that verify reads the stored weight itself and a
mutation test can flip one of its bits. This walks the wire format alongside
the message's descriptor (field numbers to names and types), nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Span:
    """A length-delimited field found while walking: its path of (field name, index) and its value's bytes."""

    path: tuple[tuple[str, int], ...]
    start: int  # offset of the value's first byte (after the tag and length)
    end: int


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def length_delimited_spans(data: bytes, descriptor: Descriptor, start: int = 0, end: int | None = None,
                           path: tuple[tuple[str, int], ...] = ()) -> Iterator[Span]:
    """Every length-delimited field (sub-messages, bytes, strings, packed repeated numbers) of the message
    serialized in ``data[start:end]``, depth first; sub-messages are walked with their own descriptors."""
    end = len(data) if end is None else end
    counts: dict[int, int] = {}
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, pos = _varint(data, pos)
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            field = descriptor.fields_by_number.get(number)
            if field is not None:
                index = counts.get(number, 0)
                counts[number] = index + 1
                here = (*path, (field.name, index))
                yield Span(here, pos, pos + length)
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    yield from length_delimited_spans(data, field.message_type, pos, pos + length, here)
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {pos}")

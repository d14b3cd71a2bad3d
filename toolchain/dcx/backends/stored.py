"""The tensors an artifact stores, read through the format's own structure.

Each format names where a stored tensor lies (a ``.pte`` constant, mutable
or named-data entry; a TFLite buffer; an ONNX initializer; a Core ML layer's
weight field or an ML program's constant) and this module gives, per stored
tensor, that name, the file it lies in, its byte offset and length. The
weight check (``dcx.export.weight_locations``) matches reference weights to
these regions at export and reads exactly these bytes back at verify: a
weight is located by structure, never by the first equal bytes in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dcx.errors import DcxError


@dataclass(frozen=True)
class StoredTensor:
    region: str  # the format's own name for it, e.g. "buffer 12", "initializer fc.weight", "named data 7b5895a8"
    file: str  # "" for the artifact file itself; a path relative to a bundle folder (.mlpackage)
    offset: int  # of its first byte in that file
    nbytes: int
    name: str | None = None  # the name the format gives the tensor (ONNX, TFLite, Core ML), a hint for matching


def stored_tensors(fmt: str, artifact: Path) -> list[StoredTensor]:
    """Every tensor ``artifact`` stores, by structure (the backend's reader); a file the format cannot parse is a
    one-line error."""
    from dcx.backends import get_backend

    reader = get_backend(fmt).stored_tensors
    try:
        return reader(Path(artifact))
    except DcxError:
        raise
    except Exception as e:  # a damaged file: its structure does not parse
        raise DcxError(f"{artifact}: its {fmt} structure does not parse ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}): re-export it") from None


def read_region(artifact: Path, tensor: StoredTensor) -> bytes:
    path = Path(artifact) / tensor.file if tensor.file else Path(artifact)
    with open(path, "rb") as f:
        f.seek(tensor.offset)
        return f.read(tensor.nbytes)

"""Find where an artifact stores each weight verbatim, and check those bytes later.

Most formats keep float32 weights as plain little-endian arrays (the ``.pte``
constant segment, TFLite buffers, ONNX initializers, Core ML weight fields),
sometimes in another axis order (TFLite convolution filters are OHWI). At
export time each reference weight is searched for in the artifact's bytes, in
the PyTorch order and in the permutations formats use; where it is found, its
offset is recorded in the manifest. ``dcx verify`` compares those bytes with
the reference exactly and names the first weight that differs: a few flipped
bits in a frozen weight are caught even when they move the loss by less than
any numeric tolerance. Weights a format transforms (folded into another
layer, packed, quantized) are simply not located, and the numeric checks
cover them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from dcx.manifest import WeightLocation

MIN_BYTES = 16  # shorter byte strings match by chance too easily to prove anything

LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray | None]] = {
    "identity": lambda a: a,
    "transpose": lambda a: a.T if a.ndim == 2 else None,
    "ohwi": lambda a: a.transpose(0, 2, 3, 1) if a.ndim == 4 else None,
    "hwio": lambda a: a.transpose(2, 3, 1, 0) if a.ndim == 4 else None,
    "ihwo": lambda a: a.transpose(1, 2, 3, 0) if a.ndim == 4 else None,
}


def _files(artifact: Path) -> dict[str, Path]:
    if artifact.is_dir():
        return {str(p.relative_to(artifact)): p for p in sorted(artifact.rglob("*")) if p.is_file()}
    return {"": artifact}


def _as_bytes(weight: np.ndarray, layout: str) -> bytes | None:
    arranged = LAYOUTS[layout](weight)
    return None if arranged is None else np.ascontiguousarray(arranged, dtype="<f4").tobytes()


def locate_weights(artifact: Path, weights: dict[str, np.ndarray]) -> list[WeightLocation]:
    """Where each float32 weight of at least ``MIN_BYTES`` lies verbatim in ``artifact`` (a file or a bundle)."""
    blobs = {rel: path.read_bytes() for rel, path in _files(Path(artifact)).items()}
    claimed: dict[str, list[tuple[int, int]]] = {rel: [] for rel in blobs}
    found: list[WeightLocation] = []
    # largest first: big tensors are unique; small ones then take what is left
    for name, w in sorted(weights.items(), key=lambda kv: -kv[1].nbytes):
        if w.dtype != np.float32 or w.nbytes < MIN_BYTES:
            continue
        location = _find(name, w, blobs, claimed)
        if location is not None:
            found.append(location)
    return sorted(found, key=lambda loc: (loc.file, loc.offset))


def _find(name: str, w: np.ndarray, blobs: dict[str, bytes],
          claimed: dict[str, list[tuple[int, int]]]) -> WeightLocation | None:
    for layout in LAYOUTS:
        needle = _as_bytes(w, layout)
        if needle is None:
            continue
        for rel, blob in blobs.items():
            start = blob.find(needle)
            while start >= 0:
                end = start + len(needle)
                if not any(s < end and start < e for s, e in claimed[rel]):
                    claimed[rel].append((start, end))
                    return WeightLocation(name, rel, start, len(needle), layout)
                start = blob.find(needle, start + 1)
    return None


def first_weight_mismatch(artifact: Path, locations: list[WeightLocation],
                          weights: dict[str, np.ndarray]) -> str | None:
    """The first located weight whose stored bytes differ from ``weights`` (None: all equal)."""
    files = _files(Path(artifact))
    blobs: dict[str, bytes] = {}
    for loc in locations:
        if loc.name not in weights:
            return f"{loc.name} (in the manifest, not in the reference)"
        if loc.file not in files:
            return f"{loc.name} (its file {loc.file!r} is missing from the bundle)"
        blob = blobs.setdefault(loc.file, files[loc.file].read_bytes())
        if blob[loc.offset : loc.offset + loc.nbytes] != _as_bytes(weights[loc.name], loc.layout):
            return loc.name
    return None

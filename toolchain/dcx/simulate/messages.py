"""Typed messages between the cloud and the devices, and their one serialization.

A ``Message`` is a kind, named numpy arrays and scalar metrics. It crosses as
safetensors bytes (a little-endian length, a JSON header, the raw arrays),
with the kind and the metrics in the header's metadata; the bytes counted on
the wire are exactly ``len(message.encode())``. A device that has nothing to
send sends nothing (no message, zero bytes).

What a device measures on its held-out data for the simulator (a ``Reply``'s
``report``) is not part of the protocol: a phone has no held-out labels, so
those numbers never cross the wire and are never counted.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import numpy as np

KIND, METRICS = "dcx.kind", "dcx.metrics"


@dataclass
class Message:
    kind: str  # what the receiver should do with it, e.g. "train", "update", "query"
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def encode(self) -> bytes:
        from safetensors.numpy import save

        arrays = {name: np.asarray(a, order="C") for name, a in self.arrays.items()}  # keeps 0-d arrays 0-d
        return save(arrays, metadata={KIND: self.kind, METRICS: json.dumps(self.metrics)})

    @classmethod
    def decode(cls, data: bytes) -> "Message":
        from safetensors.numpy import load

        (length,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + length]).get("__metadata__", {})
        return cls(meta[KIND], dict(load(data)), {k: float(v) for k, v in json.loads(meta[METRICS]).items()})

    def with_prefix(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays whose names start with ``prefix``, keyed by the rest of the name."""
        return {name[len(prefix):]: a for name, a in self.arrays.items() if name.startswith(prefix)}


@dataclass
class Reply:
    """What came back from one device in one exchange."""

    message: Message | None  # the uplink; None when the device sent nothing
    report: dict[str, float]  # the simulator's held-out measurements on the device: never on the wire
    bytes_up: int  # len(message.encode()), 0 without a message

"""Core ML pass: name each weight-holding layer after the PyTorch module it came from.

coremltools names layers after TorchScript values (``input.13``, ``linear_2``).
A layer is identified by its weights instead: a convolution's or inner
product's ``weights`` equal the module's ``weight`` element for element (same
layout), an ``embeddingND`` stores the table transposed, a ``loadConstantND``
holds a parameter used directly (CoDA's user vector). The layer is renamed to
the module path (``small.conv1``) and the mapping PyTorch parameter ->
``<layer>/<field>`` is returned: it is the manifest's ``weights`` and how
updatable layers are chosen.
"""

from __future__ import annotations

import numpy as np
import torch

from dcx.errors import DcxError
from dcx.backends.coreml.interpreter import layer_weight_fields, weight_values


def _layout(kind: str, field: str, value: np.ndarray) -> np.ndarray:
    """A PyTorch parameter in the element order the Core ML field stores."""
    if kind == "embeddingND" and field == "weights":
        return np.ascontiguousarray(value.T).reshape(-1)
    return value.reshape(-1)


def name_layers(spec, named_tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """Rename layers after the owners of their weights; returns {PyTorch name: "<layer>/<field>"}."""
    arrays = {n: t.detach().cpu().numpy().astype(np.float32) for n, t in named_tensors.items()}
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for layer in spec.neuralNetwork.layers:
        kind = layer.WhichOneof("layer")
        fields = layer_weight_fields(layer)
        main = "weights" if "weights" in fields else "data" if "data" in fields else None
        if main is None:
            continue
        stored = weight_values(fields[main])
        owners = [n for n, a in arrays.items() if n not in used and a.size == stored.size
                  and np.array_equal(_layout(kind, main, a), stored)]
        if len(owners) > 1:
            raise DcxError(f"coreml: layer {layer.name!r} matches several PyTorch tensors ({', '.join(owners)}): "
                           "give them different initial values")
        if not owners:
            continue
        (owner,) = owners
        module = owner.rsplit(".", 1)[0] if owner.endswith((".weight", ".bias")) else owner
        layer.name = module
        mapping[owner] = f"{module}/{main}"
        used.add(owner)
        bias = f"{module}.bias"
        if "bias" in fields and bias in arrays and \
                np.array_equal(arrays[bias].reshape(-1), weight_values(fields["bias"])):
            mapping[bias] = f"{module}/bias"
            used.add(bias)
    return mapping

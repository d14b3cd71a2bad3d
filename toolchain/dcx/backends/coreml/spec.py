"""Core ML spec tools: quiet coremltools, load a spec, describe its features and signatures.

The gradient-matching target (DC-CCL's frozen-offset formulation) is defined
here once: the exporter writes its scale into the model, the app (and the
reference session) computes it before every update.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from dcx.errors import DcxError
from dcx.manifest import Signature
from dcx.programs import TensorSpec


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """coremltools prints progress bars, version warnings and per-layer lines."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def coremltools():
    with quiet():
        import coremltools as ct
    return ct


def load_spec(path: Path):
    """The Model protobuf of an ``.mlmodel`` file or ``.mlpackage`` folder."""
    path = Path(path)
    if not path.exists():
        raise DcxError(f"{path} is missing: re-run `dcx export --format coreml`")
    with quiet():
        from coremltools.models.utils import load_spec as _load

        try:
            return _load(str(path))
        except Exception as e:  # corrupt protobuf, missing Manifest.json, ...
            raise DcxError(f"{path} is not a readable Core ML model ({type(e).__name__}: {e}): re-export it") from None


def metadata(spec) -> dict[str, str]:
    return dict(spec.description.metadata.userDefined)


def feature_spec(feature) -> TensorSpec:
    t = feature.type
    which = t.WhichOneof("Type")
    if which == "multiArrayType":
        from coremltools.proto import FeatureTypes_pb2

        name = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(t.multiArrayType.dataType)
        dtype = {"FLOAT32": "float32", "DOUBLE": "float64", "INT32": "int32", "FLOAT16": "float16"}.get(name, name)
        return TensorSpec(feature.name, tuple(t.multiArrayType.shape), dtype)
    if which == "int64Type":
        return TensorSpec(feature.name, (1,), "int64")
    return TensorSpec(feature.name, (), which or "unknown")


def signatures_of(spec) -> dict[str, Signature]:
    """The model's prediction signature and, for an updatable model, its training signature (per sample)."""
    desc = spec.description
    sigs = {"predict": Signature([feature_spec(f) for f in desc.input], [feature_spec(f) for f in desc.output])}
    if spec.isUpdatable:
        sigs["train"] = Signature([feature_spec(f) for f in desc.trainingInput], [])
    return sigs


def gradient_matching_target(trainable_logits: np.ndarray, frozen_logits: np.ndarray, labels: np.ndarray,
                             scale: float) -> np.ndarray:
    """The app-side MSE target for a batch: ``s - k (softmax(m + s) - onehot(y))``.

    With Core ML's MSE as the mean over the D logits and ``k = D / 2``, the MSE gradient in ``s`` equals the
    gradient of ``CE(m + s, y)``: each SGD step is the exact DC-CCL step.
    """
    s = trainable_logits.reshape(len(labels), -1).astype(np.float64)
    z = s + frozen_logits.reshape(len(labels), -1)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(labels)), labels.astype(np.int64)] -= 1.0
    return (s - scale * p).reshape(trainable_logits.shape)

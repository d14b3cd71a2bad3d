"""Which reference weights an artifact stores and where, and checking those bytes at verify.

At export, ``weight_coverage`` accounts for every weight of the program's reference:

- **verbatim**: its bytes, in PyTorch's axis order or a permutation of it (TFLite filters are OHWI, XNNPACK
  depthwise filters IHWO, ...), are exactly one tensor the artifact stores (``dcx.backends.stored``: found
  through the format's structure, so a match has the tensor's exact length and position; where several stored
  tensors hold the same values, the one the format names after the weight, else one no other weight took);
- **folded**: a frozen convolution and the inference-mode batch norm after it, stored as one weight and bias
  computed by ``torch.nn.utils.fusion.fuse_conv_bn_weights`` (what XNNPACK and the Core ML and ONNX converters
  compute, and what the TFLite exporter computes before conversion), bit for bit;
- **unread**: the program's graph never reads it (an inference-mode batch norm's ``num_batches_tracked``, a
  head the program does not call), so no artifact needs it;
- **transformed**: read by the program, not stored verbatim, not a known fold: the format's converter folded it
  into other constants (TFLite moves a layer norm's scale and shift into the next layer and sums the biases of
  two summed layers). Only the numeric checks see these; verify says how many.

At verify, ``check_weights`` reads every verbatim and folded location back through the artifact's structure
and compares it byte for byte with the reference (folds recomputed from it): one flipped bit in any stored
weight, of any size or value, is named.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcx.errors import DcxError
from dcx.backends.stored import StoredTensor, stored_tensors
from dcx.manifest import ConvNorm, FoldedBatchNorm, UncheckedWeight, WeightCoverage, WeightLocation
from dcx.passes.batch_norm_fold import conv_norms, fold
from dcx.programs import DeviceProgram

# How formats name a PyTorch tensor: Core ML layer fields and ML program constants, ONNX initializers.
_FIELD_NAMES = {"weights": "weight", "gamma": "weight", "beta": "bias", "mean": "running_mean",
                "variance": "running_var"}


# ---------------------------------------------------------------- what the program reads

@dataclass(frozen=True)
class WeightUse:
    unread: frozenset[str]  # parameters and buffers no node of the program reads
    conv_norms: tuple[ConvNorm, ...]  # every frozen convolution + batch norm pair (foldable by a converter)


def weight_use(program: DeviceProgram) -> WeightUse:
    """From the program's captured graph (``torch.export``), the same capture the exporters start from."""
    from dcx.passes.graph_capture import capture

    ep = capture(program)
    sig = ep.graph_signature
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    unread = frozenset(names[n.name] for n in ep.graph.nodes if n.op == "placeholder" and n.name in names
                       and not n.users)
    return WeightUse(unread, tuple(pair for _, _, pair in conv_norms(ep, set(program.frozen))))


# ---------------------------------------------------------------- export: locate

def layouts(array: np.ndarray) -> dict[str, bytes]:
    """The array's bytes in every axis order a format may store it in, by layout name ("identity", "1,0", ...)."""
    out = {}
    for axes in itertools.permutations(range(array.ndim)):
        name = "identity" if list(axes) == sorted(axes) else ",".join(map(str, axes))
        out[name] = np.ascontiguousarray(array.transpose(axes)).tobytes()
    return out


def arranged(array: np.ndarray, layout: str) -> bytes:
    axes = range(array.ndim) if layout == "identity" else [int(a) for a in layout.split(",")]
    if sorted(axes) != list(range(array.ndim)):
        raise DcxError(f"layout {layout!r} does not fit a tensor of shape {list(array.shape)}: re-export")
    return np.ascontiguousarray(array.transpose(tuple(axes))).tobytes()


def _normalised(name: str) -> str:
    parts = re.split(r"[./]", name.removeprefix("p_"))
    parts[-1] = _FIELD_NAMES.get(parts[-1], parts[-1])
    return "_".join(parts).lower()


class _Regions:
    """The artifact's stored tensors with their bytes; each claimed at most once unless no other is left."""

    def __init__(self, artifact: Path, tensors: list[StoredTensor]):
        self.by_size: dict[int, list[tuple[StoredTensor, bytes]]] = {}
        for t, data in zip(tensors, read_regions(artifact, tensors)):
            self.by_size.setdefault(t.nbytes, []).append((t, data))
        self.claimed: set[str] = set()

    def claim(self, name: str, array: np.ndarray) -> WeightLocation | None:
        if array.nbytes not in self.by_size:
            return None
        candidates = []
        for layout, data in layouts(array).items():
            for t, stored in self.by_size.get(len(data), []):
                if stored == data:
                    named = t.name is not None and _normalised(t.name) == _normalised(name)
                    candidates.append((not named, t.region in self.claimed, t, layout))
        if not candidates:
            return None
        _, _, tensor, layout = min(candidates, key=lambda c: (c[0], c[1]))
        self.claimed.add(tensor.region)
        return WeightLocation(name, tensor.region, tensor.nbytes, layout)


def weight_coverage(fmt: str, artifact: Path, weights: dict[str, np.ndarray], use: WeightUse) -> WeightCoverage:
    """Account for every weight of ``weights`` (the reference's) in ``artifact``; see the module docstring."""
    regions = _Regions(Path(artifact), stored_tensors(fmt, Path(artifact)))
    verbatim, folded, unchecked = [], [], []
    read = {n: w for n, w in weights.items() if n not in use.unread}  # an unread weight has nothing to match
    for name, w in sorted(read.items(), key=lambda kv: -kv[1].nbytes):  # large tensors are unambiguous
        location = regions.claim(name, w)
        if location is not None:
            verbatim.append(location)
    located = {loc.name for loc in verbatim}
    for pair in use.conv_norms:
        w, b = fold(pair, weights)
        weight = regions.claim(f"folded {pair.conv_weight}", w)
        bias = regions.claim(f"folded bias of {pair.conv_weight}", b) if weight else None
        if weight and bias:
            folded.append(FoldedBatchNorm(pair, weight, bias))
    covered = located | {n for f in folded for n in folded_inputs(f)}
    for name in sorted(set(weights) - covered):
        unchecked.append(UncheckedWeight(name, "unread" if name in use.unread else "transformed"))
    return WeightCoverage(sorted(verbatim, key=lambda loc: loc.name), folded, unchecked)


def folded_inputs(f: FoldedBatchNorm) -> list[str]:
    p = f.pair
    return [n for n in (p.conv_weight, p.conv_bias, p.norm_weight, p.norm_bias, p.running_mean, p.running_var) if n]


def read_regions(artifact: Path, tensors: list[StoredTensor]) -> list[bytes]:
    """Each stored tensor's bytes, reading each file of the artifact once."""
    files: dict[str, bytes] = {}
    out = []
    for t in tensors:
        if t.file not in files:
            path = Path(artifact) / t.file if t.file else Path(artifact)
            files[t.file] = path.read_bytes()
        out.append(files[t.file][t.offset : t.offset + t.nbytes])
    return out


# ---------------------------------------------------------------- verify: check

@dataclass
class WeightCheck:
    problems: list[str]  # one line each: which weight differs, or which location is gone
    checked: int  # reference weights whose bytes (or fold) were compared
    total: int  # reference weights
    checked_bytes: int
    total_bytes: int
    unread: list[str]
    transformed: list[str]


def check_weights(fmt: str, artifact: Path, coverage: WeightCoverage, weights: dict[str, np.ndarray]
                  ) -> WeightCheck:
    """Read every located weight back through the artifact's structure; compare with ``weights`` (the reference)
    byte for byte, folds recomputed from it."""
    tensors = {t.region: t for t in stored_tensors(fmt, Path(artifact))}
    expected: list[tuple[WeightLocation, bytes]] = []
    problems = []
    for loc in coverage.verbatim:
        if loc.name not in weights:
            problems.append(f"{loc.name} is in the manifest's weight coverage but not in the reference")
        else:
            expected.append((loc, arranged(weights[loc.name], loc.layout)))
    for f in coverage.folded:
        missing = [n for n in folded_inputs(f) if n not in weights]
        if missing:
            problems.append(f"fold of {f.pair.conv_weight} reads {missing[0]}, which the reference lacks")
            continue
        w, b = fold(f.pair, weights)
        expected += [(f.weight, arranged(w, f.weight.layout)), (f.bias, arranged(b, f.bias.layout))]
    present = [(loc, data) for loc, data in expected if loc.region in tensors]
    problems += [f"manifest.json weight_coverage: {loc.name} lies in {fmt} {loc.region}, which "
                 f"{Path(artifact).name} does not have: re-export" for loc, _ in expected if loc.region not in tensors]
    stored = read_regions(Path(artifact), [tensors[loc.region] for loc, _ in present])
    for (loc, data), got in zip(present, stored):
        if got != data:
            problems.append(f"{loc.name} ({fmt} {loc.region}, layout {loc.layout}) differs from the reference"
                            f"{_first_difference(got, data)}")
    accounted = {loc.name for loc in coverage.verbatim} | {n for f in coverage.folded for n in folded_inputs(f)}
    unread = sorted(u.name for u in coverage.unchecked if u.reason == "unread")
    transformed = sorted(u.name for u in coverage.unchecked if u.reason == "transformed")
    unaccounted = sorted(set(weights) - accounted - set(unread) - set(transformed))
    problems += [f"{n}: the manifest does not say where it is stored or why it is not" for n in unaccounted]
    checked = sorted(set(weights) & accounted)
    return WeightCheck(problems, len(checked), len(weights), sum(weights[n].nbytes for n in checked),
                       sum(w.nbytes for w in weights.values()), unread, transformed)


def _first_difference(got: bytes, want: bytes) -> str:
    if len(got) != len(want):
        return f" ({len(got)} bytes stored, {len(want)} expected)"
    at = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
    return f" (first at byte {at} of {len(want)})"

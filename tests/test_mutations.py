"""Mutation testing of ``dcx verify``: single-bit changes to every format's artifacts and to the references, with
the manifest re-hashed each time (so the file checksums cannot give them away); verify must fail on every one and
name what differs. The score is printed.

The model, written here: a frozen convolution whose weight is one constant value, with a batch norm after it
(folded into the convolution by XNNPACK and the TFLite exporter), a trainable hidden layer, and a 3-class head
whose bias is 12 bytes. Mutated: one low mantissa bit and one sign bit of every stored weight of every artifact
(frozen, trainable, folded; every size), one bit of every reference tensor and of its metadata, and one bit of
each operator the program calls (its name, or its code in TFLite).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dcx
from dcx.backends.protobuf_spans import length_delimited_spans
from dcx.backends.stored import stored_tensors
from dcx.manifest import MANIFEST, read_manifest, sha256_of
from dcx.verification import verify_entry


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.hidden = nn.Linear(4 * 8 * 8, 8)
        self.head = nn.Linear(8, 3)
        with torch.no_grad():
            self.conv.weight.fill_(0.25)  # a constant-valued frozen layer
            self.conv.bias.zero_()
            self.norm.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
            self.norm.running_var.copy_(torch.tensor([1.5, 0.5, 2.0, 1.0]))
            self.norm.weight.copy_(torch.tensor([1.1, 0.9, 1.2, 0.8]))
            self.norm.bias.copy_(torch.tensor([0.05, -0.05, 0.1, 0.0]))
        for p in (*self.conv.parameters(), *self.norm.parameters()):
            p.requires_grad_(False)

    def forward(self, x):
        return self.head(F.relu(self.hidden(torch.flatten(F.relu(self.norm(self.conv(x))), 1))))


class Loss(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, y):
        return F.cross_entropy(self.net(x), y)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, kernels_build) -> Path:
    torch.manual_seed(0)
    net = Net().eval()  # the frozen batch norm keeps its statistics: the conv+BN pair is folded
    x, y = torch.rand(4, 1, 16, 16), torch.randint(0, 3, (4,))
    out = tmp_path_factory.mktemp("mutations") / "out"
    summary = dcx.export_programs([dcx.training_program("mut.train", Loss(net), (x, y), ("image", "label"), lr=0.1),
                                   dcx.inference_program("mut.infer", net, (x[:1],), ("image",), ("logits",))],
                                  out, reference_steps=3)
    assert not summary.failed and len(summary.written) == 7, summary.failed
    return out


@dataclass(frozen=True)
class Mutation:
    kind: str  # weight | reference | program
    file: str  # relative to the export folder
    offset: int
    bit: int
    names: str  # what verify must name in a failing row ("" for program mutations: any failing row)
    check: str | None = None  # the row that must fail (None: any)


def test_every_artifact_has_full_weight_coverage(exported):
    rows = dcx.verify(exported)
    weights = [r for r in rows if r.check == "weights"]
    assert len(weights) == 7 and all(r.verdict == "pass" for r in weights), weights
    for r in weights:  # every weight stored is checked; only the never-read num_batches_tracked is not stored
        assert "weights checked: 10 of 11" in r.detail and "norm.num_batches_tracked" in r.detail, r.detail
        assert "folded by the converter" not in r.detail, r.detail


def weight_mutations(out: Path) -> list[Mutation]:
    found = []
    for entry in read_manifest(out).artifacts:
        regions = {t.region: t for t in stored_tensors(entry.format, out / entry.file)}
        coverage = entry.weight_coverage
        located = [*coverage.verbatim, *(loc for f in coverage.folded for loc in (f.weight, f.bias))]
        for loc in located:
            t = regions[loc.region]
            file = str(Path(entry.file) / t.file) if t.file else entry.file
            for offset, bit in ((t.offset, 0), (t.offset + t.nbytes - 1, 7)):  # lowest mantissa bit, sign bit
                found.append(Mutation("weight", file, offset, bit, loc.name, "weights"))
    return found


def reference_mutations(out: Path) -> list[Mutation]:
    found = []
    for rel in read_manifest(out).references:
        data = (out / rel).read_bytes()
        (length,) = struct.unpack_from("<Q", data)
        header = json.loads(data[8 : 8 + length])
        for name, info in header.items():
            if name != "__metadata__" and info["data_offsets"][1] > info["data_offsets"][0]:
                found.append(Mutation("reference", rel, 8 + length + info["data_offsets"][0], 0, name, "reference"))
        program = header["__metadata__"]["program"]  # a character of the metadata: its digest no longer matches
        at = data.index(json.dumps(program).encode(), data.index(b'"program"'))
        found.append(Mutation("reference", rel, at + 2, 1, "", None))
    return found


def program_mutations(out: Path) -> list[Mutation]:
    """One bit of each operator the program calls: its name (ExecuTorch, ONNX, Core ML) or TFLite opcode."""
    found = []
    for entry in read_manifest(out).artifacts:
        path = out / entry.file
        if entry.format == "executorch":
            from executorch.exir._serialize._program import _flatbuffer_to_program, _get_extended_header

            data = path.read_bytes()
            program = _flatbuffer_to_program(data[:_get_extended_header(data).program_size])
            for op in program.execution_plan[0].operators:
                found.append(Mutation("program", entry.file, data.index(op.name.encode()), 1, ""))
        elif entry.format == "tflite":
            from ai_edge_litert import schema_py_generated as schema

            model = schema.Model.GetRootAs(path.read_bytes(), 0)
            for i in range(model.OperatorCodesLength()):
                code = model.OperatorCodes(i)
                field = code._tab.Offset(10)  # builtin_code (int32); readers take max(it, deprecated_builtin_code)
                lowest_zero = next(b for b in range(8) if not code.BuiltinCode() >> b & 1)  # so: raise it
                found.append(Mutation("program", entry.file, code._tab.Pos + field, lowest_zero, ""))
        elif entry.format == "onnx":
            import onnx

            data = path.read_bytes()
            found += [Mutation("program", entry.file, s.start, 1, "") for s in
                      length_delimited_spans(data, onnx.ModelProto.DESCRIPTOR) if s.path[-1][0] == "op_type"]
        else:
            from coremltools.proto import Model_pb2

            spec = path / "Data/com.apple.CoreML/model.mlmodel" if path.is_dir() else path
            rel = str(spec.relative_to(out))
            data = spec.read_bytes()
            layer_inputs = [s for s in length_delimited_spans(data, Model_pb2.Model.DESCRIPTOR)
                            if s.path[-1][0] == "input" and s.path[-2][0] == "layers"
                            or s.path[-1][0] == "type" and s.path[-2][0] == "operations"]
            found += [Mutation("program", rel, s.start, 1, "") for s in layer_inputs]
    return found


def _rehash(out: Path) -> None:
    manifest = json.loads((out / MANIFEST).read_text())
    for e in manifest["artifacts"]:
        e["sha256"] = sha256_of(out / e["file"])
        e["reference"]["sha256"] = sha256_of(out / e["reference"]["file"])
    (out / MANIFEST).write_text(json.dumps(manifest))


def _caught(out: Path, m: Mutation) -> list[str]:
    """The failing rows of every artifact the mutated file belongs to ("" when one of them passed)."""
    manifest = read_manifest(out)
    top = Path(m.file).parts[0]
    affected = [e for e in manifest.artifacts if top in (e.file, e.reference.file) or m.file == e.reference.file]
    assert affected, m
    details = []
    for entry in affected:
        failed = [r for r in verify_entry(out, entry, {}) if r.verdict == "FAIL"]
        named = [r for r in failed if (m.check is None or r.check == m.check) and m.names in r.detail]
        if not named:
            return []
        details.append(f"{named[0].check}: {named[0].detail}")
    return details


def test_verify_catches_every_single_bit_mutation(exported, capsys):
    mutations = weight_mutations(exported) + reference_mutations(exported) + program_mutations(exported)
    kinds = {k: sum(m.kind == k for m in mutations) for k in ("weight", "reference", "program")}
    assert len(mutations) >= 200 and all(kinds.values()), kinds
    manifest_text = (exported / MANIFEST).read_text()
    missed, examples = [], {}
    for m in mutations:
        path = exported / m.file
        original = path.read_bytes()
        data = bytearray(original)
        data[m.offset] ^= 1 << m.bit
        try:
            path.write_bytes(bytes(data))
            _rehash(exported)
            details = _caught(exported, m)
        finally:
            path.write_bytes(original)
            (exported / MANIFEST).write_text(manifest_text)
        if details:
            examples.setdefault(m.kind, details[0])
        else:
            missed.append(m)
    with capsys.disabled():
        print(f"\n[mutation score] {len(mutations) - len(missed)} of {len(mutations)} single-bit mutations caught "
              f"and named ({', '.join(f'{n} {k}' for k, n in kinds.items())})")
        for kind, detail in examples.items():
            print(f"  e.g. {kind}: {detail[:160]}")
    assert not missed, missed[:10]
    assert all(r.verdict != "FAIL" for r in dcx.verify(exported))  # restored: the folder verifies again

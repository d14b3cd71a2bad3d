"""TFLite spec tools: read a ``.tflite`` flatbuffer's operators and reject any that is not a TFLite builtin.

Why: the Flex delegate (TF kernels inside TFLite) is in neither the
ai-edge-litert wheels nor a lean app, and custom ops need native code
registered in the app. A model with a Flex or custom op loads but fails when
it runs, often only in the ``train`` signature. The exporter runs this check
on every artifact it writes and the runtime's ``static_checks`` reports it.

Reads the flatbuffer with LiteRT's generated schema, so the runtime needs no
TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ai_edge_litert import schema_py_generated as schema

from dcx.backends.stored import StoredTensor
from dcx.errors import DcxError

_BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def operator_codes(model: bytes) -> list[tuple[str, bool]]:
    """Each operator code of the model as (name, is_builtin); custom/Flex ops are named by their custom code."""
    m = schema.Model.GetRootAs(model, 0)
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # as tflite's schema_util reads it
        if code == schema.BuiltinOperator.CUSTOM:
            custom = oc.CustomCode()
            codes.append((custom.decode() if custom else "CUSTOM", False))
        else:
            codes.append((_BUILTIN_NAMES.get(code, f"BUILTIN_{code}"), True))
    return codes


def operator_histogram(model: bytes) -> Counter:
    """How many times each operator is used, over every subgraph (signatures, initializers)."""
    m = schema.Model.GetRootAs(model, 0)
    names = [name for name, _ in operator_codes(model)]
    hist: Counter = Counter()
    for s in range(m.SubgraphsLength()):
        sg = m.Subgraphs(s)
        for o in range(sg.OperatorsLength()):
            hist[names[sg.Operators(o).OpcodeIndex()]] += 1
    return hist


def non_builtin_ops(model: bytes) -> list[str]:
    """Names of the Flex/custom operators the model uses (empty when builtin-only)."""
    used = operator_histogram(model)
    return sorted(name for name, builtin in operator_codes(model) if not builtin and used[name])


def check_builtin_ops_only(model: bytes, where: str | Path = "model") -> None:
    """Raise ``DcxError`` naming the offending ops when ``model`` has any Flex or custom op."""
    bad = non_builtin_ops(model)
    if bad:
        raise DcxError(f"{where}: the TFLite graph uses non-builtin ops {', '.join(bad)}, which ai-edge-litert "
                       "and lean apps cannot run (no Flex delegate); give those ops builtin lowerings or "
                       "builtin-only gradients in toolchain/dcx/backends/tflite/passes/")


def stored_tensors(path: Path) -> list[StoredTensor]:
    """Every non-empty buffer of the model, named after the first tensor that reads it."""
    data = Path(path).read_bytes()
    m = schema.Model.GetRootAs(data, 0)
    names: dict[int, str] = {}
    for s in range(m.SubgraphsLength()):
        sg = m.Subgraphs(s)
        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            names.setdefault(tensor.Buffer(), (tensor.Name() or b"").decode())
    found = []
    for b in range(m.BuffersLength()):
        buffer = m.Buffers(b)
        if buffer.Size() > 0:  # stored after the flatbuffer, at an absolute offset
            start, length = buffer.Offset(), buffer.Size()
        else:
            field = buffer._tab.Offset(4)  # the `data` vector (flatbuffers has no public accessor for its position)
            if not field:
                continue
            start, length = buffer._tab.Vector(field), buffer._tab.VectorLen(field)
        if length:
            found.append(StoredTensor(f"buffer {b}", "", start, length, names.get(b)))
    return found

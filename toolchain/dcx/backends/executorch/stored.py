"""``.pte`` spec tools: where a program's tensors lie in the file.

A ``.pte`` is a Program flatbuffer followed by segments (its extended header
says where they start). Constant tensors live in the constant segment at
offsets the program lists, the initial values of a training program's
parameters in the mutable-data segment, and what a delegate stores by name
(XNNPACK's packed weights) in named-data segments. The tensor values of the
execution plan give each constant and mutable buffer's length.

Reads ExecuTorch's own (private) flatbuffer reader of the pinned executorch
version.
"""

from __future__ import annotations

import math
from pathlib import Path

from dcx.errors import DcxError
from dcx.backends.stored import StoredTensor

_ELEMENT_BYTES = {0: 1, 1: 1, 2: 2, 3: 4, 4: 8, 5: 2, 6: 4, 7: 8, 11: 1, 15: 2}  # ExecuTorch ScalarType -> bytes


def stored_tensors(path: Path) -> list[StoredTensor]:
    from executorch.exir._serialize._program import _flatbuffer_to_program, _get_extended_header

    data = Path(path).read_bytes()
    header = _get_extended_header(data)
    if header is None or not header.is_valid():
        raise DcxError(f"{path}: no valid extended header: not a .pte written by this ExecuTorch; re-export it")
    program = _flatbuffer_to_program(data[:header.program_size])
    base = header.segment_base_offset
    sizes: dict[tuple[bool, int], int] = {}  # (mutable, buffer index) -> bytes of the tensor stored there
    for plan in program.execution_plan:
        for value in plan.values:
            t = value.val
            if type(t).__name__ == "Tensor" and t.data_buffer_idx > 0:
                sizes[(t.allocation_info is not None, t.data_buffer_idx)] = \
                    math.prod(t.sizes) * _ELEMENT_BYTES[int(t.scalar_type)]
    found: list[StoredTensor] = []
    for label, mutable, table in (("constant", False, [program.constant_segment]),
                                  ("mutable", True, program.mutable_data_segments or [])):
        for segment_table in table:
            if not segment_table or not segment_table.offsets:
                continue
            segment = program.segments[segment_table.segment_index]
            for index, offset in enumerate(segment_table.offsets):
                if (mutable, index) in sizes:
                    found.append(StoredTensor(f"{label} {index}", "", base + segment.offset + offset,
                                              sizes[(mutable, index)]))
    for entry in program.named_data or []:
        segment = program.segments[entry.segment_index]
        found.append(StoredTensor(f"named data {entry.key[:16]}", "", base + segment.offset, segment.size))
    if any(t.offset + t.nbytes > len(data) for t in found):
        raise DcxError(f"{path}: a segment runs past the end of the file (truncated?): re-export it")
    return found

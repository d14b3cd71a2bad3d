"""Export passes: one small, named, tested rewrite per file (litert-torch style).

A pass has a ``name``, takes a graph and returns a graph (``run``), and
reports what it changed through the ``PassContext``; the reports become the
manifest entry's ``passes``. What "graph" means moves along an exporter's
list: the program's ``nn.Module``, then an ``ExportedProgram``, then a
backend's own representation. An exporter is a short list of passes plus
serialization; ``run_passes`` runs such a list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from dcx.manifest import Deviation, PassRecord, Requirements


@dataclass
class PassContext:
    """What passes share while one artifact is exported: the program, the options, and the reports."""

    program: Any  # dcx.programs.DeviceProgram
    options: Any  # the backend's export options (e.g. ExecuTorchOptions), or None
    format: str
    records: list[PassRecord] = field(default_factory=list)
    requires: Requirements = field(default_factory=Requirements)
    deviations: list[Deviation] = field(default_factory=list)

    def report(self, pass_name: str, **changes: Any) -> None:
        """Record what ``pass_name`` changed (merged into its record)."""
        record = next((r for r in self.records if r.name == pass_name), None)
        if record is None:
            self.records.append(PassRecord(pass_name, dict(changes)))
        else:
            record.changes.update(changes)

    def require(self, *, custom_ops: Sequence[str] = (), kernel_libraries: Sequence[str] = ()) -> None:
        """The artifact needs these beyond the stock runtime (recorded in the manifest's ``requires``)."""
        self.requires.custom_ops.extend(o for o in custom_ops if o not in self.requires.custom_ops)
        self.requires.kernel_libraries.extend(k for k in kernel_libraries if k not in self.requires.kernel_libraries)


class ExportPass(Protocol):
    name: str

    def run(self, graph: Any, ctx: PassContext) -> Any:
        """Return the rewritten graph; report changes with ``ctx.report(self.name, ...)``."""


@dataclass(frozen=True)
class FunctionPass:
    """A pass made of a function ``fn(graph, ctx) -> graph``, for steps that need no state of their own."""

    name: str
    fn: Callable[[Any, PassContext], Any]

    def run(self, graph: Any, ctx: PassContext) -> Any:
        return self.fn(graph, ctx)


def run_passes(passes: Sequence[ExportPass], graph: Any, ctx: PassContext) -> Any:
    """Run ``passes`` in order; every pass gets a record, with its changes or empty."""
    for p in passes:
        graph = p.run(graph, ctx)
        ctx.report(p.name)
    return graph

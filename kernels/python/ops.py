"""The op table, Python half: every dcx op as kernels/ops.def declares it, with its reference, fake
kernel and eligibility rule.

Each op is declared once, in kernels/ops.def: its library, family, name, arguments and returns. The C++
adapters expand the same rows into both registrations (see the comment at the top of ops.def); this
module reads them and pairs each, by name, with what only Python can give, from the op's family module
(``dcx.kernels.<library>.<family>``, or ``dcx.kernels.<library>`` when the family is the library):

- ``reference``: ``<name>_reference`` there, the op in plain PyTorch with the same arguments
  and results: what the kernels are tested against, and what the fast-training pass checks a rewrite
  against;
- ``fake``: ``<name>_fake`` there, the output shapes for torch.export and FakeTensor tracing;
- ``eligible``: the family's ``eligible``, where the kernel library decides which shapes a kernel takes
  (it asks the library itself), else None.

tests/test_kernel_op_table.py checks that the table, the ops the libraries register and the family
modules agree.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable

from dcx.kernels.library import SOURCE_ROOT

OPS_DEF = SOURCE_ROOT / "kernels" / "ops.def"
_ROW = re.compile(r'^DCX_OP\(\s*(\w+),\s*(\w+),\s*(\w+),\s*"([^"]*)",\s*"([^"]*)"\s*\)', re.M)


@dataclass(frozen=True)
class Op:
    library: str
    family: str
    name: str
    arguments: str
    returns: str
    reference: Callable
    fake: Callable
    eligible: Callable | None

    @property
    def qualified(self) -> str:
        return f"dcx::{self.name}"

    @property
    def schema(self) -> str:
        return f"{self.name}({self.arguments}) -> {self.returns}"


def family_module(library: str, family: str):
    return importlib.import_module(f"dcx.kernels.{library}" + ("" if family == library else f".{family}"))


def _read() -> dict[str, Op]:
    ops = {}
    for library, family, name, arguments, returns in _ROW.findall(OPS_DEF.read_text()):
        module = family_module(library, family)
        ops[name] = Op(library, family, name, arguments, returns, getattr(module, f"{name}_reference"), getattr(module, f"{name}_fake"),
                       getattr(module, "eligible", None))
    return ops


OPS: dict[str, Op] = _read()


def register_fakes(library: str) -> None:
    """The fake kernels of ``library``'s ops, once its PyTorch library defined them."""
    import torch

    for op in OPS.values():
        if op.library == library:
            torch.library.register_fake(op.qualified)(op.fake)

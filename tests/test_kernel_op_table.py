"""The op table (kernels/ops.def, read by ``dcx.kernels.ops``) is the one declaration of every dcx op: the
PyTorch and ExecuTorch libraries register exactly its rows, with its schemas; every row has its
reference and fake kernel; and where the kernel library decides which shapes a kernel takes, the Python
rule asks the library. (That ``dcx.kernels`` imports nothing from the rest of dcx is
tests/test_architecture.py's.)"""

from __future__ import annotations

import pytest
import torch

from dcx.kernels import library
from dcx.kernels.ops import OPS


@pytest.fixture(scope="module", autouse=True)
def loaded(kernels_build):
    for name in library.LIBRARIES:
        assert library.load_aten(name), library.load_error(name)
        library.load_executorch_library(library.executorch_library_name(name))


def test_the_aten_libraries_register_the_table_and_nothing_else():
    registered = {n for n in torch._C._dispatch_get_all_op_names() if n.startswith("dcx::")}
    assert registered == {f"dcx::{name}{form}" for name in OPS for form in ("", ".out")}
    for op in OPS.values():
        assert str(getattr(torch.ops.dcx, op.name).default._schema) == f"dcx::{op.schema}"


def test_the_executorch_libraries_register_the_table_and_nothing_else():
    from executorch.extension.pybindings import portable_lib

    registered = {n for n in portable_lib._get_operator_names() if n.startswith("dcx::")}
    assert registered == {f"dcx::{name}.out" for name in OPS}
    assert {library.executorch_library_for(f"dcx::{name}.out") for name in OPS} == {
        library.executorch_library_name(name) for name in library.LIBRARIES}


def test_every_row_has_its_reference_and_fake_kernel():
    assert {op.library for op in OPS.values()} == set(library.LIBRARIES)
    for op in OPS.values():
        assert callable(op.reference) and callable(op.fake), op.name


def test_eligibility_is_the_kernel_librarys():
    from dcx.kernels.training import conv, pool

    assert {op.name for op in OPS.values() if op.eligible is conv.eligible} == {
        "conv2d", "conv2d_backward", "conv2d_bn", "conv2d_bn_backward", "conv2d_bn_batch_stats",
        "conv2d_bn_batch_stats_backward"}
    stem = ((1, 3, 224, 224), (32, 3, 3, 3), (2, 2), (1, 1), (1, 1), 1)
    assert conv.eligible(*stem) == "stem3x3" and conv.eligible(*stem, backward=True) == "general"
    assert conv.eligible((1, 32, 56, 56), (32, 1, 3, 3), (2, 2), (1, 1), (1, 1), 32) == "depthwise3x3"
    assert conv.eligible((1, 32, 28, 28), (32, 1, 3, 3), (2, 2), (1, 1), (1, 1), 32) == "depthwise"  # short rows
    assert conv.eligible((1, 16, 7, 7), (24, 16, 1, 1), (1, 1), (0, 0), (1, 1), 1) == "pointwise"
    assert conv.eligible((1, 3, 5, 5), (4, 2, 3, 3), (1, 1), (0, 0), (1, 1), 2) is None  # 3 channels, 2 groups
    assert pool.eligible((1, 1, 4, 4), (2, 2), (2, 2), (1, 1)) and not pool.eligible((1, 1, 4, 4), (2, 2), (2, 2), (2, 2))

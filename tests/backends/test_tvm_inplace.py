"""CPU kernels that write their output over an operand that dies with them (`inplace.py`)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.backends.tvm import build  # noqa: E402
from archdsl.backends.tvm.inplace import WriteOverDeadOperands, overwritable  # noqa: E402

# r1's and r2's shortcuts die at their adds; `keep`'s add has a reader after it (the concat's
# identity branch), so its conv must write a fresh tensor; `both` adds two branches to x.
SHORTCUTS = r"""
arch shortcuts
input 3x12x12
defaults norm=bn act=relu
stem: conv3-16
r1: residual { conv3-16; conv3-16 act=none }
relu
r2: residual { conv3-32/2; conv3-32 act=none } shortcut(down) { conv1-32/2 act=none }
relu
keep: concat { add { | conv3-32 act=none } | }
both: add { | conv3-64 act=none | conv1-64 act=none }
gap
fc: FC-10 act=none
"""


def _te_func(read):
    from tvm import te
    a = te.placeholder((4, 16), name="A")
    r = te.placeholder((4, 16), name="R")
    c = te.compute((4, 16), lambda i, j: a[i, j] + read(r, i, j), name="C")
    return te.create_prim_func([a, r, c])


def test_an_elementwise_operand_is_overwritable():
    assert overwritable(_te_func(lambda r, i, j: r[i, j]), 1)
    assert not overwritable(_te_func(lambda r, i, j: r[i, j]), 2)  # the output itself
    # read at elements the block does not write: a later element would read a result
    assert not overwritable(_te_func(lambda r, i, j: r[i, 15 - j]), 1)
    assert not overwritable(_te_func(lambda r, i, j: r[0, j]), 1)


def test_a_kernel_that_reads_its_output_is_not_overwritable():
    from tvm import te
    a = te.placeholder((4, 16), name="A")
    r = te.placeholder((4, 16), name="R")
    k = te.reduce_axis((0, 16), "k")
    c = te.compute((4, 16), lambda i, j: te.sum(a[i, k] * r[i, j], axis=k), name="C")
    assert not overwritable(te.create_prim_func([a, r, c]), 1)


def _inplace_calls(arch, batch=2):
    seen = []
    build.SCHEDULE_HOOKS.append(lambda mod, target, options: seen.append(mod) or mod)
    try:
        backend.compile(arch.graph, target="llvm", batch=batch)
    finally:
        build.SCHEDULE_HOOKS.pop()
    return WriteOverDeadOperands()(seen[-1])["main"].script().count("call_tir_inplace")


def test_dead_shortcuts_are_written_over_and_live_ones_kept():
    """The residual adds whose shortcut dies write over it, the one whose shortcut a concat
    reads afterwards does not (or the concat would read the sum), and the network computes
    what the unscheduled, copying build computes."""
    arch = archdsl.load(SHORTCUTS)
    x = np.random.default_rng(0).standard_normal((2, *arch.graph.input_shape), np.float32)
    fast = backend.compile(arch.graph, batch=2)(x)
    naive = backend.compile(arch.graph, batch=2, schedules=False)(x)
    assert np.abs(fast - naive).max() <= 1e-4 * np.abs(naive).max()
    count = _inplace_calls(arch)
    assert 2 <= count <= 3  # r1, r2 (and `both`, when its add fuses into a conv)

"""Elementwise kernels (and reshape, concat), and the fallback that only parallelizes."""

from __future__ import annotations

import math

from tvm import s_tir

from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Plan,
    extent,
    iter_kinds,
    top_blocks,
    vector_lanes,
)

__all__ = ["fallback_parallel", "injective"]


def injective(k: Kernel) -> Plan | None:
    """Elementwise, broadcast, reshape, concat: every block inlined into the last one, whose
    loops are fused, vectorized by the vector width and split across the cores."""
    sch = s_tir.Schedule(k.func)
    blocks = top_blocks(sch)
    if any("R" in iter_kinds(sch, b) for b in blocks):
        return None
    for block in blocks[:-1]:
        sch.compute_inline(block)
    (block,) = top_blocks(sch)
    fused = sch.fuse(*sch.get_loops(block))
    total = math.prod(int(iv.dom.extent) for iv in sch.get(block).iter_vars)
    lanes = vector_lanes(k.target)
    if total % lanes == 0 and total > lanes:
        fused, inner = sch.split(fused, [None, lanes])
        sch.vectorize(inner)
    sch.parallel(fused)
    return Plan(sch.mod["main"])


def fallback_parallel(k: Kernel) -> Plan | None:
    """The fallback: each top-level loop nest's outer spatial loops across the cores."""
    sch = s_tir.Schedule(k.func)
    done = False
    for block in top_blocks(sch):
        kinds = iter_kinds(sch, block)
        spatial = len(kinds) - len(kinds.lstrip("S"))
        loops = sch.get_loops(block)
        if spatial == 0 or len(loops) < spatial:
            continue
        outer = loops[:max(1, spatial - 1)]
        if math.prod(extent(sch, block, i) for i in range(len(outer))) < 2:
            continue  # one iteration: a parallel launch would only cost
        try:
            sch.parallel(sch.fuse(*outer))
            done = True
        except (RuntimeError, ValueError):
            continue
    return Plan(sch.mod["main"]) if done else None

"""Kernels computed row by row (softmax, layer norm): every stage per row, parallel over rows
(`rows`)."""

from __future__ import annotations

import math

from tvm import s_tir, tirx

from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Plan,
    extent,
    indexed_by,
    iter_kinds,
    top_blocks,
    vector_lanes,
)

__all__ = ["rows"]


def rows(k: Kernel) -> Plan | None:
    """A kernel of stages over the last axis of one shape — reductions of a row (a softmax's
    max and sum, a layer norm's mean and variance) and elementwise steps — whose every access
    is by the row (its leading axes) or by nothing of it (a norm's weights): the rows go
    across the cores, every stage computed within its row (its buffers a row long, in L1),
    the last axis vectorized where whole vectors fill it (a reduction: as a vector of partial
    results, `rfactor`, its lanes summed at the end). The catch-all rule ran each stage over
    the whole tensor, a layer norm's reductions on one thread: ViT-B/16's layer norms (197 ×
    768) alone, one thread, 0.36 → 0.05 ms. Its softmax rows (197 scores: no whole vectors,
    the max and the sum scalar chains) take the catch-all rule's time (1.0–1.05x); whole
    vectors and a scalar remainder (`loop_partition`) took 1.5x."""
    sch = s_tir.Schedule(k.func)
    blocks = top_blocks(sch)
    if len(blocks) < 2:
        return None
    last = blocks[-1]
    lead = len(sch.get(last).iter_vars) - 1
    shape = [extent(sch, last, d) for d in range(lead)]
    if lead < 1 or "R" in iter_kinds(sch, last):
        return None
    reduces = False
    for block in blocks:
        kinds = iter_kinds(sch, block)
        if (not kinds.startswith("S" * lead) or len(kinds) > lead + 1
                or [extent(sch, block, d) for d in range(lead)] != shape
                or not _by_row(sch.get(block), lead)):
            return None
        reduces |= kinds.endswith("R")
    if not reduces:
        return None
    lanes = vector_lanes(k.target)
    partials = []
    for block in blocks:  # a reduction over whole vectors: a vector of partial results first
        if iter_kinds(sch, block).endswith("R") and extent(sch, block, lead) % lanes == 0:
            lane = sch.split(sch.get_loops(block)[-1], [None, lanes])[1]
            partials.append(sch.rfactor(lane, lead))
    row = sch.fuse(*sch.get_loops(last)[:lead])
    for block in reversed(top_blocks(sch)[:-1]):
        sch.compute_at(block, row)
    if math.prod(shape) > 1:
        sch.parallel(row)
    for block in partials:  # computed at the row, the lanes come out outermost
        *_, lane, outer = sch.get_loops(block)
        sch.reorder(outer, lane)
        sch.vectorize(lane)
        sch.decompose_reduction(block, outer)
    for block in blocks:
        if iter_kinds(sch, block) == "S" * (lead + 1) and extent(sch, block, lead) % lanes == 0:
            sch.vectorize(sch.split(sch.get_loops(block)[-1], [None, lanes])[1])
    return Plan(sch.mod["main"])


def _by_row(stmt, lead: int) -> bool:
    """Whether each of the block's accesses is at its row (the first `lead` indices are the
    block's first `lead` vars) or does not depend on the row at all."""
    row = [iv.var for iv in stmt.iter_vars[:lead]]
    return all(indexed_by(region, row, leading=True)
               or not any(_uses(r.min, row) for r in region.region)
               for region in (*stmt.reads, *stmt.writes))


def _uses(expr, variables) -> bool:
    return any(v.same_as(x) for v in tirx.analysis.undefined_vars(expr) for x in variables)

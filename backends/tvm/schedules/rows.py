"""Kernels computed row by row (softmax, layer norm): every stage per row, parallel over rows
(`rows`)."""

from __future__ import annotations

import math

import tvm_ffi
from tvm import ir, s_tir, tirx

from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Plan,
    divisors,
    extent,
    indexed_by,
    iter_kinds,
    top_blocks,
    uses,
    vector_lanes,
)

__all__ = ["columns", "rows"]


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
    vectors and a scalar remainder (`loop_partition`) took 1.5x. ViT-B/16's softmax (rows of
    224 keys) with x - max computed inside its exp, alone, one thread, Zen 3: 0.79 -> 0.39 ms."""
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
    sch = s_tir.Schedule(_by_reciprocals(k.func, lead))
    blocks = top_blocks(sch)
    last = blocks[-1]
    lanes = vector_lanes(k.target)
    # an elementwise stage read by one other (a softmax's x - max, read by its exp) is
    # computed where that one reads it: kept, its row buffer and the next stage's were one,
    # and LLVM stored the exp's max(e^x, x) over x as a masked store, microcoded on AMD cores
    for block in blocks[:-1]:
        if "R" not in iter_kinds(sch, block) and len(sch.get_consumers(block)) == 1:
            try:
                sch.compute_inline(block)
            except RuntimeError:  # (TVM's ScheduleError) not inlinable: kept as a stage
                pass
    blocks = top_blocks(sch)
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


def _by_reciprocals(func: tirx.PrimFunc, lead: int) -> tirx.PrimFunc:
    """`func` with each division by a row's value (a buffer of `lead` axes or fewer: a
    softmax's sum) a product with its reciprocal, which LLVM then computes once a row (it
    keeps a division, 3.5–5 cycles a vector on Zen 3, per element: the loop's quotient is not
    rounded as the product is, within an ulp). ViT-B/16's softmax (rows of 224) alone, Zen 3,
    interleaved: one thread 0.377 → 0.351 ms, two 0.205 → 0.192."""
    def visit(node):
        b = node.b
        if isinstance(b, ir.TensorLoad) and len(b.indices) <= lead and b.ty.dtype == "float32":
            return node.a * (tirx.const(1.0, "float32") / b)
        return node

    return func.with_body(tvm_ffi.structural_map(func.body, [(tirx.Div, visit)]))


def _by_row(stmt, lead: int) -> bool:
    """Whether each of the block's accesses is at its row (the first `lead` indices are the
    block's first `lead` vars) or does not depend on the row at all."""
    row = [iv.var for iv in stmt.iter_vars[:lead]]
    return all(indexed_by(region, row, leading=True)
               or not any(uses(r.min, row) for r in region.region)
               for region in (*stmt.reads, *stmt.writes))


def columns(k: Kernel) -> Plan | None:
    """A norm over a middle axis of a map — a layer norm over the channels of an NCHW map (as
    archdsl writes Swin-T's and ConvNeXt's), each pixel's values a plane apart: reductions
    over the axis and elementwise steps on the map without it, then the whole map. A row is
    every index but the axis's and the last (cut in pieces of whole vectors where there are
    fewer than `_MIN_ROWS` rows): the rows go across the cores, every stage computed within
    its row, each over the axis with the row's pixels as vectors (a sum is a vector of the
    row's pixels, added to once per channel, in L1). The catch-all rule ran each pixel's
    sums down the strided axis, scalar: alone, one thread, Swin-T's 96 × 56 × 56 layer norm
    0.62 -> 0.09 ms, its 29 layer norms 9.9 -> 1.7 ms."""
    sch = s_tir.Schedule(k.func)
    blocks = top_blocks(sch)
    if len(blocks) < 2:
        return None
    last = blocks[-1]
    rank = len(sch.get(last).iter_vars)
    if rank < 3 or iter_kinds(sch, last) != "S" * rank:
        return None
    shape = [extent(sch, last, d) for d in range(rank)]
    axis = _middle_axis(sch, blocks[:-1], shape)
    lanes = vector_lanes(k.target)
    if axis is None or (shape[-1] % lanes and shape[-1] > _ODD_VECTOR * lanes):
        return None
    loops = sch.get_loops(last)
    outer = [loop for d, loop in enumerate(loops) if d not in (axis, rank - 1)]
    rows, width = math.prod(shape) // (shape[axis] * shape[-1]), shape[-1]
    piece = width  # of the last axis a row has: with too few rows, whole vectors of it
    if rows < _MIN_ROWS and width % lanes == 0:
        piece = max(p for p in divisors(width)
                    if p % lanes == 0 and (rows * width // p >= _MIN_ROWS or p == lanes))
    pieces, inner = sch.split(loops[-1], [None, piece])
    sch.reorder(*outer, pieces, loops[axis], inner)
    row = sch.fuse(*outer, pieces)
    for block in reversed(blocks[:-1]):
        sch.compute_at(block, row)
    if rows * width // piece > 1:
        sch.parallel(row)
    for block in blocks:
        if iter_kinds(sch, block).endswith("R"):
            *_, pixels, over = sch.get_loops(block)
            sch.reorder(over, pixels)
            _vectorize(sch, pixels, lanes)
            sch.decompose_reduction(block, over)  # (its zeros' loop as vectors too)
        else:
            _vectorize(sch, sch.get_loops(block)[-1], lanes)
    return Plan(sch.mod["main"])


_ODD_VECTOR = 4  # vectors at most of a row not filling whole vectors, vectorized as one
_MIN_ROWS = 8  # parallel steps a column norm keeps, its rows cut in pieces where fewer


def _vectorize(sch: s_tir.Schedule, loop, lanes: int) -> None:
    """`loop` as whole vectors of `lanes`, or (not filling them) as one vector."""
    if int(sch.get(loop).extent) % lanes == 0:
        loop = sch.split(loop, [None, lanes])[1]
    sch.vectorize(loop)


def _middle_axis(sch: s_tir.Schedule, blocks: list, shape: list[int]) -> int | None:
    """The axis (not the last) that `blocks` reduce `shape`'s map over, where each of them is
    over the map without it (its reduction, if any, over it) and reads the map at its own
    pixel; None if they are not so."""
    axis = None
    for block in blocks:
        stmt, kinds = sch.get(block), iter_kinds(sch, block)
        spatial = [iv.var for iv in stmt.iter_vars[:len(shape) - 1]]
        if kinds not in ("S" * len(spatial), "S" * len(spatial) + "R"):
            return None
        for region in (*stmt.reads, *stmt.writes):
            dims = region.region
            if len(dims) == len(spatial):
                if not indexed_by(region, spatial):
                    return None
            elif len(dims) == len(shape):
                if not kinds.endswith("R"):
                    return None
                at = [d for d, r in enumerate(dims) if r.min.same_as(stmt.iter_vars[-1].var)]
                if len(at) != 1 or (axis is not None and at[0] != axis):
                    return None
                axis = at[0]
                if not indexed_by(region, [*spatial[:axis], stmt.iter_vars[-1].var,
                                           *spatial[axis:]]):
                    return None
            elif any(uses(r.min, spatial) for r in dims):
                return None
    if axis is None or axis == len(shape) - 1:
        return None
    without = shape[:axis] + shape[axis + 1:]
    for block in blocks:
        kinds = iter_kinds(sch, block)
        extents = [extent(sch, block, d) for d in range(len(kinds))]
        if extents != without + [shape[axis]] * kinds.endswith("R"):
            return None
    return axis

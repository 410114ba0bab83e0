"""Pools, global pools and other reductions over trailing axes: parallel per plane."""

from __future__ import annotations

from tvm import s_tir, sym

from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Plan,
    extent,
    iter_kinds,
    one_reduction,
    same,
    vector_lanes,
)

__all__ = ["pool"]


def pool(k: Kernel) -> Plan | None:
    """One reduction over trailing axes (max/avg pooling, global pooling, a mean): parallel
    over the leading axes but the last two (one plane of one image per iteration), its padding
    read in place (inlined: a window element out of the plane is the pad value; a padded copy
    made per output row had the padded rows written to memory and read back, 1.5× over at
    stride 2: ResNet-18's 3×3/2 max pool alone 0.55× the time at batch 32, 0.88× at batch 1,
    one thread), the last spatial axis vectorized when the input is read at stride 1 and the
    vector width divides it (strided vector loads measured slower than scalar code), the
    epilogue (an average's division) per plane."""
    found = one_reduction(k, "SS+R+")
    if found is None:
        return None
    sch, blocks, red = found
    stmt = sch.get(red)
    spatial = iter_kinds(sch, red).count("S")
    loops = sch.get_loops(red)
    outer = sch.fuse(*loops[:max(1, spatial - 2)])
    x = stmt.iter_vars[spatial - 1].var
    strides = [sym.detect_linear_equation(r.region[-1].min, [x]) for r in stmt.reads]
    lanes = vector_lanes(k.target)
    if (all(len(s) == 2 and same(s[0], 1) for s in strides)
            and extent(sch, red, spatial - 1) % lanes == 0):
        xo, xi = sch.split(loops[spatial - 1], [None, lanes])
        sch.reorder(xo, *loops[spatial:], xi)
        sch.vectorize(xi)
    sch.parallel(outer)
    for block in reversed(blocks[:blocks.index(red)]):  # read in place, padding and all
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:  # not an injective stage: made per plane
            sch.compute_at(block, outer)
    after = blocks[blocks.index(red) + 1:]
    for block in reversed(after[1:]):
        sch.reverse_compute_inline(block)
    if after:
        sch.reverse_compute_at(after[0], outer)
    sch.decompose_reduction(red, loops[spatial])
    return Plan(sch.mod["main"])

"""Dense (FC) layers: weights repacked to blocks of output columns, a tile of rows × one vector
block in registers."""

from __future__ import annotations

import numpy as np

from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Plan,
    constant_read,
    epilogue_of,
    extent,
    indexed_by,
    one_reduction,
    vector_lanes,
)

__all__ = ["dense"]


def dense(k: Kernel) -> Plan | None:
    """y[i, j] = sum_k x[i, k]·w[k, j] with w constant (the FC lowering pre-transposes it):
    w repacked to (N/vo)·K·vo, a tile of rows × vo columns in registers, parallel over
    column blocks (and row blocks)."""
    found = one_reduction(k, "SSR")
    if found is None:
        return None
    sch, blocks, mm = found
    stmt = sch.get(mm)
    i, j, r = (iv.var for iv in stmt.iter_vars)
    weight = constant_read(k, stmt, (r, j))
    if weight is None or not indexed_by(stmt.reads[1 - weight[0]], (i, r)):
        return None
    w_read, w_param = weight
    lanes = vector_lanes(k.target)
    rows, cols = extent(sch, mm, 0), extent(sch, mm, 1)
    vo = next((v * lanes for v in (2, 1) if cols % (v * lanes) == 0), None)
    if vo is None:
        return None
    ti = max(d for d in range(1, min(rows, 12 * lanes // vo) + 1) if rows % d == 0)
    for block in blocks[:blocks.index(mm)]:
        sch.compute_inline(block)
    epilogue = epilogue_of(sch, blocks, mm)
    sch.transform_layout(mm, ("read", w_read), lambda kk, n: (n // vo, kk, n % vo))
    sch.transform_layout(mm, ("write", 0), lambda m, n: (n // vo, m, n % vo))
    li, lj, lk = sch.get_loops(mm)
    jo, ji = sch.split(lj, [None, vo])
    io, ii = sch.split(li, [None, ti])
    sch.reorder(jo, io, lk, ii, ji)
    sch.parallel(sch.fuse(jo, io))
    sch.reverse_compute_at(epilogue, sch.get_loops(mm)[0])
    sch.vectorize(ji)
    sch.unroll(ii)
    sch.decompose_reduction(mm, lk)
    return Plan(sch.mod["main"], {w_param: lambda w: _pack_kn(w, vo)})


def _pack_kn(w: np.ndarray, vo: int) -> np.ndarray:
    """K·N → (N/vo)·K·vo: each block of `vo` columns contiguous."""
    return w.reshape(w.shape[0], w.shape[1] // vo, vo).transpose(1, 0, 2)

"""Batched products of two activations (attention's Q·Kᵀ and scores·V): a tile of rows × one
vector block of columns in registers, per matrix of the batch (`batch_matmul`)."""

from __future__ import annotations

from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Plan,
    epilogue_at,
    epilogue_of,
    extent,
    indexed_by,
    one_reduction,
    top_blocks,
    vector_lanes,
)
from archdsl.backends.tvm.schedules.dense import row_tile

__all__ = ["batch_matmul"]


def batch_matmul(k: Kernel) -> Plan | None:
    """y[..., i, j] = sum_r a[..., i, r]·b[..., r, j], neither a constant (the dense rule takes
    those), b read along its rows (Relax materializes a transposed K): a tile of rows × vo
    columns in registers (broadcast a, a vector of b's row, FMA), as the dense rule's but
    with b read in place — its block of vo columns, a vector per reduction step, stays in L1
    over the row tiles of a matrix. Columns that no vector divides (197 tokens) are padded to
    whole blocks (`pad_einsum`: b copied with zero columns, the product cropped into the
    epilogue; the padded b made per matrix). Parallel over the leading axes (batch, heads),
    and where b is read in place, over its column blocks and row tiles too."""
    found = one_reduction(k, "S+SSR")
    if found is None:
        return None
    sch, blocks, mm = found
    stmt = sch.get(mm)
    *lead, i, j, r = (iv.var for iv in stmt.iter_vars)
    if len(stmt.reads) != 2 or blocks.index(mm) != 0:
        return None
    a, b = stmt.reads
    if not (indexed_by(a, (*lead, i, r)) and indexed_by(b, (*lead, r, j))):
        return None
    if any(k.param_index(x.source) in k.constant_params for x in (a, b)):
        return None
    lanes = vector_lanes(k.target)
    rows, cols = extent(sch, mm, len(lead)), extent(sch, mm, len(lead) + 1)
    vo = next((v * lanes for v in (2, 1) if cols % (v * lanes) == 0), None)
    padded = vo is None
    if padded:  # whole blocks of two vectors, the pad a zero column of b (tiles of 12 rows
        # × one vector over 208 columns: ViT-B/16's Q·Kᵀ alone 2.2x the time of 6 × 2 over 224)
        vo = 2 * lanes
        sch.pad_einsum(mm, [1] * len(lead) + [1, vo, 1])
        blocks = top_blocks(sch)
        at = next(n for n, blk in enumerate(blocks) if sch.get(blk).same_as(sch.get(mm)))
        (b_pad,), mm = blocks[:at], blocks[at]
        sch.compute_at(b_pad, sch.get_loops(mm)[len(lead) - 1])
    ti = row_tile(rows, lanes, vo)
    epilogue = epilogue_of(sch, blocks, mm)
    *outer, li, lj, lk = sch.get_loops(mm)
    jo, ji = sch.split(lj, [None, vo])
    io, ii = sch.split(li, [None, ti])
    sch.reorder(jo, io, lk, ii, ji)
    sch.parallel(sch.fuse(*outer, *([] if padded else [jo, io])))
    epilogue_at(sch, epilogue, sch.get_loops(mm)[0], lanes)
    sch.vectorize(ji)
    sch.unroll(ii)
    sch.decompose_reduction(mm, lk)
    return Plan(sch.mod["main"])


"""The pieces of archdsl's CPU schedules (`tvm_schedules`): what a rule sees and returns, the
analysis of TOPI's fused PrimFuncs that rules share, and the rules for everything but
convolutions (`tvm_conv_schedules`): dense layers, pools and reductions, elementwise kernels and
a fallback that only parallelizes."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import s_tir, sym, tirx

__all__ = ["Kernel", "Plan", "Rule", "constant_read", "dense", "epilogue_of", "extent",
           "fallback_parallel", "indexed_by", "injective", "is_copy", "iter_kinds",
           "one_reduction", "pool", "same", "top_blocks", "vector_lanes"]

Pack = Callable[[np.ndarray], np.ndarray]


@dataclass
class Plan:
    """A scheduled function, and how the constants it takes must be laid out for it."""

    func: tirx.PrimFunc
    packs: dict[int, Pack] = field(default_factory=dict)  # param index → numpy repacking


@dataclass
class Kernel:
    """What a rule sees: the function, the target, and which params are constants at every
    call site (so that their layout may change)."""

    func: tirx.PrimFunc
    target: tvm.target.Target
    constant_params: frozenset[int]

    def param_index(self, var) -> int | None:
        for i, p in enumerate(self.func.params):
            if p.same_as(var):
                return i
        return None


Rule = Callable[[Kernel], Plan | None]


# ---------------------------------------------------------------- analysis

def vector_lanes(target: tvm.target.Target, dtype_bits: int = 32) -> int:
    """float32 lanes of the target's widest vector (AVX-512: 16, AVX/AVX2: 8, else 4)."""
    from tvm.target.codegen import llvm_get_cpu_features
    features = set(llvm_get_cpu_features(target))
    bits = 512 if "avx512f" in features else 256 if "avx" in features else 128
    return bits // dtype_bits


def top_blocks(sch: s_tir.Schedule) -> list:
    from tvm.s_tir.dlight.analysis import get_root_block
    return list(sch.get_child_blocks(get_root_block(sch)))


def iter_kinds(sch: s_tir.Schedule, block) -> str:
    """The block's iteration kinds: S (spatial) and R (reduction) per block var, as dlight."""
    names = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(names.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def extent(sch: s_tir.Schedule, block, i: int) -> int:
    return int(sch.get(block).iter_vars[i].dom.extent)


def same(a, b) -> bool:
    return sym.Analyzer().can_prove_equal(a, b)


def indexed_by(region, variables) -> bool:
    """Whether a read region is exactly `buffer[v0, v1, ...]` for these block vars."""
    return (len(region.region) == len(variables)
            and all(r.min.same_as(v) and int(r.extent) == 1
                    for r, v in zip(region.region, variables, strict=True)))


def is_copy(sch: s_tir.Schedule, block) -> bool:
    """Whether a block copies one buffer element for element (a padding stage that pads
    nothing, as TOPI makes for a convolution without padding)."""
    stmt = sch.get(block)
    variables = [iv.var for iv in stmt.iter_vars]
    return (len(stmt.reads) == 1 and indexed_by(stmt.reads[0], variables)
            and indexed_by(stmt.writes[0], variables))


def one_reduction(k: Kernel, kinds: str):
    """(schedule, top-level blocks, the reduction block) when the function has exactly one
    reduction block and its iteration kinds match the regular expression `kinds`."""
    sch = s_tir.Schedule(k.func)
    blocks = top_blocks(sch)
    reductions = [b for b in blocks if "R" in iter_kinds(sch, b)]
    if len(reductions) != 1 or not re.fullmatch(kinds, iter_kinds(sch, reductions[0])):
        return None
    return sch, blocks, reductions[0]


def constant_read(k: Kernel, stmt, variables) -> tuple[int, int] | None:
    """(read index, param index) of the block's read of a constant param exactly at
    `variables` (a weight), when the block reads it and one other buffer."""
    read = next((i for i, r in enumerate(stmt.reads) if indexed_by(r, variables)), None)
    if read is None or len(stmt.reads) != 2:
        return None
    param = k.param_index(stmt.reads[read].source)
    return (read, param) if param in k.constant_params else None


def epilogue_of(sch: s_tir.Schedule, blocks: list, producer):
    """Inline the injective blocks after `producer` into one epilogue block (reading the
    producer's output) and return it; if there are none, make a copy block (cache_write) so
    that `producer` writes an intermediate buffer whose layout the schedule may choose."""
    after = blocks[blocks.index(producer) + 1:]
    if not after:
        return sch.cache_write(producer, 0, "global")
    for block in reversed(after[1:]):
        sch.reverse_compute_inline(block)
    return after[0]


# ---------------------------------------------------------------- dense (FC)

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


# ---------------------------------------------------------------- pooling, reductions, the rest

def pool(k: Kernel) -> Plan | None:
    """One reduction over trailing axes (max/avg pooling, global pooling, a mean): parallel
    over the leading axes but the last two (one plane of one image per iteration), its padding
    stage computed per plane, the last spatial axis vectorized when the input is read at
    stride 1 and the vector width divides it (strided vector loads measured slower than scalar
    code), the epilogue (an average's division) per plane."""
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
    for block in reversed(blocks[:blocks.index(red)]):
        if is_copy(sch, block):
            sch.compute_inline(block)
        else:
            sch.compute_at(block, outer)
    after = blocks[blocks.index(red) + 1:]
    for block in reversed(after[1:]):
        sch.reverse_compute_inline(block)
    if after:
        sch.reverse_compute_at(after[0], outer)
    sch.decompose_reduction(red, loops[spatial])
    return Plan(sch.mod["main"])


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

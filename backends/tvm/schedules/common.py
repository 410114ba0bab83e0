"""What archdsl's CPU schedule rules share: what a rule sees (`Kernel`) and returns (`Plan`), and
the analysis of TOPI's fused PrimFuncs (blocks, iteration kinds, constant reads, epilogues)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, sym, tirx

__all__ = ["Kernel", "Machine", "Plan", "Rule", "constant_read", "divisors", "epilogue_at",
           "epilogue_of", "extent", "find_block", "found_nodes", "indexed_by", "is_copy",
           "iter_kinds", "load_ratio", "loops_below", "one_reduction", "per_line",
           "prefetch_next", "register_tile", "same", "split_tail", "tile_loops", "top_blocks",
           "uses", "vector_lanes"]

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
    return Machine.of(target).vector_bits // dtype_bits


# LLVM's names of the x86-64 cores with a 48 KB L1 data cache (Intel since Ice Lake's and
# Sunny Cove's, AMD's Zen 5); every other core archdsl may target has 32 KB. The target names
# the core (`make_target` names the host's), so a build is the same wherever it is made.
L1D_48K_CPUS = dict.fromkeys(
    ("icelake-client", "icelake-server", "tigerlake", "rocketlake", "alderlake", "raptorlake",
     "meteorlake", "arrowlake", "arrowlake-s", "lunarlake", "pantherlake", "sapphirerapids",
     "emeraldrapids", "graniterapids", "graniterapids-d", "diamondrapids", "znver5"),
    48 * 1024)

# L2 per core of LLVM's x86-64 cores, where it is more than 256 KB (Haswell's, Skylake's
# clients'; taken for every core not named: the smallest since Haswell)
L2_CPUS = {
    **dict.fromkeys(("znver1", "znver2", "znver3", "icelake-client"), 512 * 1024),
    **dict.fromkeys(("skylake-avx512", "cascadelake", "cooperlake", "znver4", "znver5"),
                    1024 * 1024),
    **dict.fromkeys(("icelake-server", "tigerlake", "rocketlake", "alderlake", "raptorlake",
                     "meteorlake", "arrowlake", "arrowlake-s", "lunarlake", "pantherlake"),
                    1280 * 1024),
    **dict.fromkeys(("sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d",
                     "diamondrapids"), 2048 * 1024),
}


@dataclass(frozen=True)
class Machine:
    """What the schedules size their tiles by, read from the target's CPU features."""

    vector_bits: int  # 512 with AVX-512, 256 with AVX, else 128 (SSE)
    registers: int  # vector registers: 32 with AVX-512, else 16
    fma: bool
    broadcast_operand: bool  # an FMA may take a broadcast scalar from memory (AVX-512)
    l1d: int = 32 * 1024  # bytes of L1 data cache per core
    l2: int = 256 * 1024  # bytes of L2 per core
    threads: int = 0  # the threads the code will run on (the target's num-cores), 0 if unknown

    @staticmethod
    def of(target: tvm.target.Target) -> Machine:
        from tvm.target.codegen import llvm_get_cpu_features
        features = set(llvm_get_cpu_features(target))
        avx512 = "avx512f" in features
        cpu = str(target.attrs.get("mcpu", "")) if target.kind.name == "llvm" else ""
        return Machine(512 if avx512 else 256 if "avx" in features else 128,
                       32 if avx512 else 16, "fma" in features, avx512,
                       L1D_48K_CPUS.get(cpu, 32 * 1024), L2_CPUS.get(cpu, 256 * 1024),
                       max(int(target.attrs.get("num-cores", 0) or 0), 0))

    @property
    def lanes(self) -> int:
        return self.vector_bits // 32

    @property
    def full_tile(self) -> int:
        """The accumulators a register tile should have at least: half the registers (8 of
        AVX2's 16), 14 of AVX-512's 32 — two vectors × a 7-pixel row, where a 7×7 plane's
        rows otherwise took 3×7 tiles over output blocks padded to a multiple of 3 (512
        channels as 33 blocks: 11 channel groups, which two threads share 6 to 5) or 4×4
        over rows computed 8 wide. ResNet-18's and ResNet-50's 3×3 512→512 convs on 7×7,
        2×7 tiles in 32 blocks instead of 3×7 in 33, alone: one thread 1.0–1.025× the time
        at batch 1, 0.97× at batch 32; two threads 0.92–0.93× at batch 1, 0.99× at batch 32.
        Whole networks (AVX-512 Xeon, interleaved builds), two threads: ResNet-18 0.97× at
        batch 1 and 32, ResNet-50 0.99× and 0.965×, DenseNet-121 and ResNeXt-50 (their 7×7
        convs: rows of 2×7 instead of a flat plane in 2×10, or rows of 2×8) within ±1.5%;
        one thread: all four within ±2%. (A C loop of 2×7 tiles had run at 0.94× the rate
        of 4×4's and 4×6's: it is taken only where it costs less than every tile of 16.)"""
        return 14 if self.registers >= 32 else self.registers // 2

    def tile_fits(self, vectors: int, pixels: int) -> bool:
        """Whether a tile of `vectors` weight vectors × `pixels` broadcast inputs keeps its
        accumulators, its weights (held when reused by several pixels) and a broadcast in
        registers, with two to spare: the tiles that filled all 16 of AVX2's (3×4, 2×6) were
        no faster than 2×4 and 4×2, and 2×7 spilled (1.4× slower)."""
        held = vectors if pixels > 1 else 0
        need = vectors * pixels + held + (0 if self.broadcast_operand else 1)
        return need <= self.registers - 2


def load_ratio(vectors: int, pixels: int) -> float:
    """Loads per FMA of a tile: V weight vectors and P broadcasts feed V·P FMAs."""
    return (vectors + pixels) / (vectors * pixels)


def register_tile(machine: Machine, vectors: list[int], pixels: list[int],
                  cost: Callable[[int, int], float] = load_ratio) -> tuple[int, int]:
    """(weight vectors, pixels) of a register tile from the allowed counts: among the tiles
    that fit in registers with at least `Machine.full_tile` accumulators (enough FMAs in
    flight to hide their latency, 4 cycles × 2 units), the least `cost` (loads per FMA), then
    the most accumulators, then more vectors; if none has that many, the most accumulators.
    Measured on AVX2 (one thread, against ONNX Runtime): 3×4 and 2×4 tiles of a 1×1 conv
    0.6-0.85× its time, 1×14 (as many accumulators, a load per FMA) 1.2×, 2×7 (a register
    spilled) 1.4×."""
    tiles = [(v, p) for v in vectors for p in pixels if machine.tile_fits(v, p)]
    full = [t for t in tiles if t[0] * t[1] >= machine.full_tile]
    if full:
        return min(full, key=lambda t: (cost(*t), -t[0] * t[1], -t[0]))
    return max(tiles, key=lambda t: (t[0] * t[1], t[0]))


def divisors(n: int, limit: int | None = None) -> list[int]:
    return [d for d in range(1, min(n, limit or n) + 1) if n % d == 0]


def top_blocks(sch: s_tir.Schedule) -> list:
    from tvm.s_tir.dlight.analysis import get_root_block
    return list(sch.get_child_blocks(get_root_block(sch)))


def find_block(sch: s_tir.Schedule, blocks: list, prefix: str):
    """The one of `blocks` whose name starts with `prefix` (FuseTIR may add a suffix), if one
    does."""
    return next((b for b in blocks if sch.get(b).name_hint.startswith(prefix)), None)


def iter_kinds(sch: s_tir.Schedule, block) -> str:
    """The block's iteration kinds: S (spatial) and R (reduction) per block var, as dlight."""
    names = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(names.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def extent(sch: s_tir.Schedule, block, i: int) -> int:
    return int(sch.get(block).iter_vars[i].dom.extent)


def same(a, b) -> bool:
    return sym.Analyzer().can_prove_equal(a, b)


def indexed_by(region, variables, leading: bool = False) -> bool:
    """Whether a read region is exactly `buffer[v0, v1, ...]` for these block vars (with
    `leading`, whether its first indices are, whatever follows)."""
    dims = region.region[:len(variables)] if leading else region.region
    return (len(dims) == len(variables)
            and all(r.min.same_as(v) and int(r.extent) == 1
                    for r, v in zip(dims, variables, strict=True)))


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
    that `producer` writes an intermediate buffer whose layout the schedule may choose.
    Each block but the last is inlined into its readers: a block read twice (SiLU's x in
    x·sigmoid(x)) is inlined into both, where inlining into the one reader would not do."""
    after = blocks[blocks.index(producer) + 1:]
    if not after:
        return sch.cache_write(producer, 0, "global")
    for block in after[:-1]:
        sch.compute_inline(block)
    return after[-1]


def epilogue_at(sch: s_tir.Schedule, epilogue, loop, lanes: int) -> None:
    """The epilogue computed at `loop`, its innermost loop vectorized where whole vectors fill
    it (ViT-B/16's first MLP layer, whose GELU had run scalar: 8.4 → 6.0 ms alone, batch 1,
    one thread)."""
    sch.reverse_compute_at(epilogue, loop)
    inner = sch.get_loops(epilogue)[-1]
    if int(sch.get(inner).extent) % lanes == 0:
        sch.vectorize(sch.split(inner, [None, lanes])[1])


def loops_below(sch: s_tir.Schedule, block, under) -> list:
    """`block`'s loops inside the loop `under`."""
    loops = sch.get_loops(block)
    start = next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(under)))
    return loops[start + 1:]


def tile_loops(sch: s_tir.Schedule, unrolled: list, lanes) -> None:
    """A register tile's loops: `unrolled`, and the vector `lanes`."""
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(lanes)


_LINE = 64  # bytes of a cache line


def per_line(dtype) -> int:
    """The elements of `dtype` a cache line holds."""
    return _LINE * 8 // tvm.DataType(str(dtype)).bits


def prefetch_next(sch: s_tir.Schedule, block, buffer, spread, along, elements: int
                  ) -> tirx.PrimFunc:
    """The scheduled function with, at the end of loop `spread`'s body, a share of a prefetch
    of what the block reads of `buffer` in the iteration after this one of loop `along`:
    either a loop inside `spread` whose every iteration reads `elements` contiguous elements,
    one after the other (the lines the next `along` loop will take), or a loop around
    `spread` whose next iteration starts reading `elements` contiguous ones there. They come
    from memory while this one computes, each of `spread`'s iterations fetching its share
    (none past the buffer's end). At the end, not inside the reduction: LLVM keeps a tile's
    sums in memory across a loop that calls the prefetch intrinsic."""
    func = sch.mod["main"]
    spread_loop, along_loop = sch.get(spread), sch.get(along)
    stmt = sch.get(block)
    realize = found_nodes(func.body, s_tir.SBlockRealize, lambda r: r.block.same_as(stmt))[0]
    bound = list(zip([iv.var for iv in stmt.iter_vars], realize.iter_values, strict=True))
    at = [(lp.loop_var, lp.min) for lp in map(sch.get, loops_below(sch, block, spread))]
    if any(v.same_as(along_loop.loop_var) for v, _ in at):
        at = [(v, along_loop.min + along_loop.extent if v.same_as(along_loop.loop_var) else m)
              for v, m in at]
        count = int(along_loop.extent) * elements
    else:
        at.append((along_loop.loop_var, along_loop.loop_var + 1))
        count = elements
    region = next(r for r in stmt.reads if r.source.same_as(buffer))
    index = [_substitute(_substitute(r.min, bound), at) for r in region.region]
    in_line = per_line(region.source.dtype)
    lines = -(-count // in_line)
    share = -(-lines // int(spread_loop.extent))
    p = tirx.Var("p", spread_loop.loop_var.ty)
    line = (spread_loop.loop_var - spread_loop.min) * share + p
    at_line = [*index[:-1], index[-1] + line * in_line]
    shape = [int(d) for d in region.source.ty.shape]
    flat = sum(i * math.prod(shape[n + 1:]) for n, i in enumerate(at_line))
    prefetch = tirx.Evaluate(tirx.call_llvm_intrin(
        "void", "llvm.prefetch.p0",
        tirx.call_intrin("handle", "tirx.address_of", tirx.BufferLoad(region.source, at_line)),
        tirx.const(0, "int32"), tirx.const(3, "int32"), tirx.const(1, "int32")))
    fetch = tirx.For(p, tirx.const(0, p.ty), tirx.const(share, p.ty), tirx.ForKind.SERIAL,
                     tirx.IfThenElse(flat < math.prod(shape), prefetch, None))

    def visit(node):
        if not node.loop_var.same_as(spread_loop.loop_var):
            return node
        return tirx.For(node.loop_var, node.min, node.extent, node.kind,
                        tirx.SeqStmt([node.body, fetch]), node.thread_binding,
                        node.annotations, node.step)

    return func.with_body(tvm_ffi.structural_map(func.body, [(tirx.For, visit)]))


def split_tail(func: tirx.PrimFunc, loop_var, full: int) -> tirx.PrimFunc:
    """`func` with loop `loop_var` as two loops: its first `full` iterations, where every block
    predicate under it that those iterations make true is dropped, and the rest as they were
    (fresh loop variables): a register tile's rows cut short by a predicate (197 tokens in
    tiles of 6) leave the whole tiles' code free of it, as LLVM's unswitching does not always
    do."""
    def visit(node):
        if not node.loop_var.same_as(loop_var) or full >= int(node.extent):
            return node
        analyzer = sym.Analyzer()
        analyzer.bind(loop_var, tvm.ir.Range.from_min_extent(node.min, full))
        loops = found_nodes(node.body, tirx.For)
        for inner in loops:
            analyzer.bind(inner.loop_var,
                          tvm.ir.Range.from_min_extent(inner.min, inner.extent))

        def drop(realize):
            if not analyzer.can_prove(realize.predicate):
                return realize
            return s_tir.SBlockRealize(realize.iter_values, True, realize.block)

        head = tirx.For(loop_var, node.min, tirx.const(full, loop_var.ty), node.kind,
                        tvm_ffi.structural_map(node.body, [(s_tir.SBlockRealize, drop)]),
                        node.thread_binding, node.annotations, node.step)
        defined = [lp.loop_var for lp in [node, *loops]]
        defined += [iv.var for block in found_nodes(node.body, s_tir.SBlock)
                    for iv in block.iter_vars]
        fresh = [(v, tirx.Var(v.name, v.ty)) for v in defined]
        tail = tirx.For(fresh[0][1], node.min + full, node.extent - full, node.kind,
                        _substitute(node.body, fresh), node.thread_binding,
                        node.annotations, node.step)
        return tirx.SeqStmt([head, tail])

    return func.with_body(tvm_ffi.structural_map(func.body, [(tirx.For, visit)]))


def _substitute(expr, pairs):
    """`expr` with each of `pairs`' variables replaced by its value."""
    def var(v):
        return next((value for x, value in pairs if x.same_as(v)), v)
    return tvm_ffi.structural_map(expr, [(tirx.Var, var)])


def uses(expr, variables) -> bool:
    """Whether `expr` depends on any of `variables`."""
    return any(v.same_as(x) for v in tirx.analysis.undefined_vars(expr) for x in variables)


def found_nodes(stmt, kind, match: Callable[[object], bool] = lambda _: True) -> list:
    """The nodes of type `kind` in `stmt` (those that `match`)."""
    found: list = []
    tvm_ffi.structural_map(stmt, [(kind, lambda node: found.append(node) or node
                                   if match(node) else node)])
    return found

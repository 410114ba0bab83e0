"""archdsl's default CPU schedules: fast kernels without tuning, from what the graph's ops are.

After legalization and fusion (`tvm._fuse_passes`) a CPU build has one PrimFunc per fused group,
written as TVM's TOPI computes them: NCHW/OIHW convolutions with a padding stage and an epilogue
(bias, residual add, activation), matmuls against a pre-transposed weight, pools, reductions and
elementwise ops. Left as they are, every loop runs scalar on one core. `schedule_cpu` (a schedule
hook of `backends/tvm.py`) gives each function not already scheduled (by tuning) a schedule by
the first rule in `RULES` that fits:

- dense convolution: the direct algorithm of the TVM x86 / oneDNN kernels — the
  output channels in blocks of `vo` (one or two AVX vectors), a small tile of output pixels in
  registers (broadcast input × vector of weights → FMA), the reduction over input channels and the
  kernel window inside, parallel over (batch, channel block, rows). The weights are repacked to
  OIHW{vo}o at compile time (numpy, at the call sites: the constants change, not the graph), the
  epilogue runs on each tile while it is in registers. A depthwise convolution's padding stage
  writes its input channel-blocked (NCHW{vo}c) so that its loads are vectors too.
- dense (FC): weights repacked to N/{vo}·K·{vo}, rows × one vector block in registers.
- pooling, global pooling and other reductions over trailing axes: parallel over the outer
  spatial axes, vectorized where the inner one allows; softmax and the rest: parallel over
  their outer loops where there are several iterations. (dlight's CPU reduction rule made a
  1000-class softmax 3.4 ms instead of 4 µs: not used.)
- everything else that is elementwise: inlined into one loop nest, vectorized and parallel.

Each function scheduled here carries the attribute `MARK` (the rule's name) besides
"tirx.is_scheduled". `compile(..., schedules=False)` turns all of this off (TVM's naive loops).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, s_tir, sym, tirx

__all__ = ["MARK", "RULES", "schedule_cpu", "scheduled_by"]

MARK = "archdsl.schedule"
# Attributes that say "already scheduled": TVM 0.27 spells it tirx.*, older code tir.*
_SCHEDULED = ("tirx.is_scheduled", "tir.is_scheduled")

Pack = Callable[[np.ndarray], np.ndarray]
_Const = tvm.ir.expr.GenericConst  # a Relax constant (relax.const makes one)


@dataclass
class Plan:
    """A scheduled function, and how the constants it takes must be laid out for it."""

    func: tirx.PrimFunc
    packs: dict[int, Pack] = field(default_factory=dict)  # param index → numpy repacking
    name: str | None = None  # the mark, when it is not the rule's name


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


def scheduled_by(func) -> str | None:
    """The name of the archdsl rule that scheduled `func`, if one did."""
    attrs = getattr(func, "attrs", None)
    return str(attrs[MARK]) if attrs is not None and MARK in attrs else None


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return func.attrs is not None and any(bool(func.attrs.get(k, False)) for k in _SCHEDULED)


# ---------------------------------------------------------------- the hook

def schedule_cpu(mod: tvm.IRModule, target: tvm.target.Target,
                 options: dict) -> tvm.IRModule:
    """Schedule every PrimFunc of a fused CPU module that is not scheduled yet (a schedule hook:
    `backends/tvm.SCHEDULE_HOOKS`). `options["schedules"] = False` leaves the module alone."""
    if target.kind.name != "llvm" or not options.get("schedules", True):
        return mod
    sites = _call_sites(mod)
    plans: dict[tvm.ir.GlobalVar, Plan] = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
            continue
        constant = frozenset(i for i in range(len(func.params))
                             if all(isinstance(args[i], _Const)
                                    for args in sites.get(gv, [()]) if len(args) > i)
                             and gv in sites)
        kernel = Kernel(func, target, constant)
        for name, rule in RULES.items():
            plan = _try(rule, kernel)
            if plan is not None:
                plan.func = (plan.func.with_attr("tirx.is_scheduled", True)
                             .with_attr(MARK, plan.name or name))
                plans[gv] = plan
                break
    return _install(mod, plans)


def _try(rule: Rule, kernel: Kernel) -> Plan | None:
    """A rule's plan, or None when the rule does not fit (or a schedule primitive refuses)."""
    try:
        return rule(kernel)
    except (RuntimeError, ValueError, IndexError):  # TVM's errors are RuntimeErrors
        return None


def _call_sites(mod: tvm.IRModule) -> dict[tvm.ir.GlobalVar, list[tuple]]:
    """The arguments of every `call_tir` in the module's Relax functions, by callee."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    sites: dict[tvm.ir.GlobalVar, list[tuple]] = {}

    def visit(expr) -> None:
        if (isinstance(expr, relax.Call) and expr.op.same_as(call_tir)
                and isinstance(expr.args[1], relax.Tuple)):
            sites.setdefault(expr.args[0], []).append(tuple(expr.args[1].fields))

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sites


def _install(mod: tvm.IRModule, plans: dict[tvm.ir.GlobalVar, Plan]) -> tvm.IRModule:
    """Put the scheduled functions into (a copy of) the module. A function whose constants
    change layout changes type, so it gets a new GlobalVar (typed by the BlockBuilder) and its
    call sites get the new callee and the repacked constants."""
    mod = mod.clone()
    for gv, plan in plans.items():
        if plan.packs:
            del mod[gv]
        else:
            mod[gv] = plan.func
    bb = relax.BlockBuilder(mod)
    renamed = {gv: (bb.add_func(plan.func, gv.name_hint), plan.packs)
               for gv, plan in plans.items() if plan.packs}
    mod = bb.get()
    if not renamed:
        return mod
    call_tir = tvm.ir.Op.get("relax.call_tir")

    @relax.expr_functor.mutator
    class Repack(relax.PyExprMutator):
        def visit_call_(self, call):
            if not (call.op.same_as(call_tir) and call.args[0] in renamed):
                return super().visit_call_(call)
            callee, packs = renamed[call.args[0]]
            args = list(call.args[1].fields)
            for i, pack in packs.items():
                value = np.ascontiguousarray(pack(args[i].value.numpy()))
                args[i] = relax.const(value, str(value.dtype))
            return relax.Call(call.op, [callee, relax.Tuple(args)], call.attrs, call.ty_args)

    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = Repack(mod).visit_expr(func)
    return mod


# ---------------------------------------------------------------- analysis helpers

def _vector_lanes(target: tvm.target.Target, dtype_bits: int = 32) -> int:
    """float32 lanes of the target's widest vector (AVX-512: 16, AVX/AVX2: 8, else 4)."""
    from tvm.target.codegen import llvm_get_cpu_features
    features = set(llvm_get_cpu_features(target))
    bits = 512 if "avx512f" in features else 256 if "avx" in features else 128
    return bits // dtype_bits


def _blocks(sch: s_tir.Schedule) -> list:
    from tvm.s_tir.dlight.analysis import get_root_block
    return list(sch.get_child_blocks(get_root_block(sch)))


def _kinds(sch: s_tir.Schedule, block) -> str:
    """The block's iteration kinds: S (spatial) and R (reduction) per block var, as dlight."""
    names = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(names.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def _extent(sch: s_tir.Schedule, block, i: int) -> int:
    return int(sch.get(block).iter_vars[i].dom.extent)


def _same(a, b) -> bool:
    return sym.Analyzer().can_prove_equal(a, b)


def _indexed_by(region, variables) -> bool:
    """Whether a read region is exactly `buffer[v0, v1, ...]` for these block vars."""
    return (len(region.region) == len(variables)
            and all(r.min.same_as(v) and int(r.extent) == 1
                    for r, v in zip(region.region, variables, strict=True)))


def _is_copy(sch: s_tir.Schedule, block) -> bool:
    """Whether a block copies one buffer element for element (a padding stage that pads
    nothing, as TOPI makes for a convolution without padding)."""
    stmt = sch.get(block)
    variables = [iv.var for iv in stmt.iter_vars]
    return (len(stmt.reads) == 1 and _indexed_by(stmt.reads[0], variables)
            and _indexed_by(stmt.writes[0], variables))


def _one_reduction(k: Kernel, kinds: str):
    """(schedule, top-level blocks, the reduction block) when the function has exactly one
    reduction block and its iteration kinds match the regular expression `kinds`."""
    sch = s_tir.Schedule(k.func)
    blocks = _blocks(sch)
    reductions = [b for b in blocks if "R" in _kinds(sch, b)]
    if len(reductions) != 1 or not re.fullmatch(kinds, _kinds(sch, reductions[0])):
        return None
    return sch, blocks, reductions[0]


def _constant_read(k: Kernel, stmt, variables) -> tuple[int, int] | None:
    """(read index, param index) of the block's read of a constant param exactly at
    `variables` (a weight), when the block reads it and one other buffer."""
    read = next((i for i, r in enumerate(stmt.reads) if _indexed_by(r, variables)), None)
    if read is None or len(stmt.reads) != 2:
        return None
    param = k.param_index(stmt.reads[read].source)
    return (read, param) if param in k.constant_params else None


def _epilogue(sch: s_tir.Schedule, blocks: list, producer):
    """Inline the injective blocks after `producer` into one epilogue block (reading the
    producer's output) and return it; if there are none, make a copy block (cache_write) so
    that `producer` writes an intermediate buffer whose layout the schedule may choose."""
    after = blocks[blocks.index(producer) + 1:]
    if not after:
        return sch.cache_write(producer, 0, "global")
    for block in reversed(after[1:]):
        sch.reverse_compute_inline(block)
    return after[0]


# ---------------------------------------------------------------- convolution

def _conv_tile(out_h: int, out_w: int, channels: int,
               lanes: int) -> tuple[int, int, int] | None:
    """(channel block, rows, columns) of the register tile: as many accumulator vectors as
    fit beside the broadcast input and the weights (at most 12 of AVX2's 16 registers), the
    tile dividing the output exactly (no remainder loops); wider rows first (contiguous
    input)."""
    best, best_key = None, None
    for vectors in (2, 1, 4):
        vo = vectors * lanes
        if channels % vo:
            continue
        for xi in (d for d in range(1, out_w + 1) if out_w % d == 0):
            for yi in (d for d in range(1, out_h + 1) if out_h % d == 0):
                accs = vectors * xi * yi
                if accs > 12:
                    continue
                key = (accs, vectors == 2, xi)
                if best_key is None or key > best_key:
                    best, best_key = (vo, yi, xi), key
    return best


def _pointwise_strided(sch: s_tir.Schedule, conv, read: int) -> bool:
    """Whether a conv is 1×1 and reads its input at a stride above 1."""
    stmt = sch.get(conv)
    if _extent(sch, conv, 5) * _extent(sch, conv, 6) != 1:
        return False
    region = stmt.reads[read].region
    return not all(_same(sym.detect_linear_equation(region[d].min, [iv.var])[0], 1)
                   for d, iv in ((2, stmt.iter_vars[2]), (3, stmt.iter_vars[3])))


_RC_CHUNK = 32  # input channels per chunk when a plane's partial sums stay in cache
_ROW_CHUNK = 8  # ... when a row's do


def _channel_chunk(sch: s_tir.Schedule, conv, vo: int) -> int | None:
    """How many input channels each pass over the output tiles takes, if the reduction is
    blocked. Whole planes when the partial sums of one channel block fit in 64 KB, there are
    more input channels than a chunk and enough (batch × channel block) iterations to share
    among threads (measured: 1×1 convs on 14×14 and 7×7 planes 1.3-1.5× faster, 3×3 convs
    the same); otherwise rows of tiles when there are over 8 input channels (VGG's 224- and
    112-wide 3×3 convs 1.1-1.2× faster: the weights of a chunk stay in L1 along the row)."""
    n, f, h, w, c = (_extent(sch, conv, i) for i in range(5))
    if (vo * h * w * 4 <= 64 * 1024 and c > _RC_CHUNK and c % _RC_CHUNK == 0
            and n * f // vo >= 8):
        return _RC_CHUNK
    if c > _ROW_CHUNK and c % _ROW_CHUNK == 0:
        return _ROW_CHUNK
    return None


@dataclass
class _Conv:
    """A convolution block found in a function: its schedule, blocks and reads."""

    sch: s_tir.Schedule
    blocks: list
    block: object
    w_read: int  # index among the block's reads of the weight (a constant param)
    w_param: int  # index among the function's params of the weight
    d_read: int  # index among the block's reads of the input
    depthwise: bool

    @property
    def data(self):
        """The block writing the conv's input (TOPI's padding stage), if there is one."""
        source = self.sch.get(self.block).reads[self.d_read].source
        return next((b for b in self.sch.get_producers(self.block)
                     if self.sch.get(b).writes[0].source.same_as(source)), None)


def _find_conv(k: Kernel) -> _Conv | None:
    """A dense (groups = 1) or depthwise (one output per input channel) NCHW convolution with
    constant OIHW weights; grouped ones are left to the fallback."""
    found = _one_reduction(k, "SSSSRRR")
    if found is None:
        return None
    sch, blocks, conv = found
    stmt = sch.get(conv)
    n, f, y, x, rc, ry, rx = (iv.var for iv in stmt.iter_vars)
    weight = _constant_read(k, stmt, (f, rc, ry, rx))
    if weight is None:
        return None
    d_read = 1 - weight[0]
    channel = stmt.reads[d_read].region[1].min
    depthwise = _extent(sch, conv, 4) == 1 and _same(channel, f + rc)
    if not (depthwise or channel.same_as(rc)):
        return None
    return _Conv(sch, blocks, conv, *weight, d_read, depthwise)


def _conv(k: Kernel) -> Plan | None:
    found = _find_conv(k)
    if found is None or found.depthwise:
        return None
    sch, blocks, conv, w_read, w_param, d_read = (found.sch, found.blocks, found.block,
                                                 found.w_read, found.w_param, found.d_read)
    tile = _conv_tile(_extent(sch, conv, 2), _extent(sch, conv, 3), _extent(sch, conv, 1),
                      _vector_lanes(k.target))
    if tile is None:
        return None
    vo, yi, xi = tile

    # the input: padding stage inlined when it only copies
    data = found.data
    if _pointwise_strided(sch, conv, d_read):
        # a strided 1×1 conv reads every s-th pixel: gather those into a dense block first
        # (measured 1.1-1.7× faster on ResNet-50's downsampling convs)
        pad = data
        data = sch.reindex_cache_read(conv, d_read, "global",
                                      lambda n_, f_, y_, x_, c_, r_, s_: (n_, c_, y_, x_, r_, s_))
        if pad is not None:
            sch.compute_inline(pad)
    epilogue = _epilogue(sch, blocks, conv)
    sch.transform_layout(conv, ("read", w_read), lambda o, i, h, w: (o // vo, i, h, w, o % vo))
    sch.transform_layout(conv, ("write", 0), lambda n_, c, h, w: (n_, c // vo, h, w, c % vo))

    ln, lf, ly, lx, lrc, lry, lrx = sch.get_loops(conv)
    fo, fi = sch.split(lf, [None, vo])
    yo, yi_ = sch.split(ly, [None, yi])
    xo, xi_ = sch.split(lx, [None, xi])
    chunk = _channel_chunk(sch, conv, vo)
    if chunk is None:
        sch.reorder(ln, fo, yo, xo, lrc, lry, lrx, yi_, xi_, fi)
        sch.parallel(sch.fuse(ln, fo, yo))
        sch.reverse_compute_at(epilogue, xo)
    else:
        # every tile of a plane (or of a row of tiles) takes a chunk of input channels
        # before the next chunk: that chunk's weights stay in L1 across the tiles, the
        # partial sums of the plane (row) in cache
        plane = chunk == _RC_CHUNK
        rco, rci = sch.split(lrc, [None, chunk])
        if plane:
            sch.reorder(ln, fo, rco, yo, xo, rci, lry, lrx, yi_, xi_, fi)
            outer = sch.fuse(ln, fo)
        else:
            sch.reorder(ln, fo, yo, rco, xo, rci, lry, lrx, yi_, xi_, fi)
            outer = sch.fuse(ln, fo, yo)
        sch.parallel(outer)
        sch.reverse_compute_at(epilogue, outer)
        lrc = rco
    sch.vectorize(fi)
    sch.unroll(xi_)
    sch.unroll(yi_)
    sch.decompose_reduction(conv, lrc)
    if data is not None:
        if _is_copy(sch, data):
            sch.compute_inline(data)
        else:
            loops = sch.get_loops(data)
            sch.parallel(sch.fuse(*loops[:2]))
    return Plan(sch.mod["main"], {w_param: lambda w: _pack_oihw(w, vo)})


def _depthwise(k: Kernel) -> Plan | None:
    """A depthwise conv, vectorized along output rows (NCHW keeps them contiguous): a tile of
    up to 4 rows × 8 columns in registers, the 3×3 weights broadcast, parallel over (batch,
    channel) with each channel's padded plane made right before it is used. A stride-s conv
    reads its plane de-interleaved (columns w % s side by side), so that its loads are
    contiguous too. (Measured on MobileNet v1: 1.1-3× faster per layer than the channel-
    blocked NCHW8c version of the dense schedule, which re-laid out each input.)"""
    found = _find_conv(k)
    if found is None or not found.depthwise:
        return None
    sch, conv = found.sch, found.block
    stmt = sch.get(conv)
    x = stmt.iter_vars[3].var
    out_h, out_w = _extent(sch, conv, 2), _extent(sch, conv, 3)
    lanes = _vector_lanes(k.target)
    xv = lanes if out_w % lanes == 0 else max(
        d for d in range(1, min(out_w, 2 * lanes) + 1) if out_w % d == 0)
    yi = max(d for d in range(1, 5) if out_h % d == 0 and d * -(-xv // lanes) <= 8)
    data = found.data
    stride = int(sym.detect_linear_equation(stmt.reads[found.d_read].region[3].min, [x])[0])
    if stride > 1:
        if data is None or int(sch.get(data).writes[0].source.ty.shape[3]) % stride:
            return None
        sch.transform_layout(data, ("write", 0),
                             lambda n, c, h, w: (n, c, h, w % stride, w // stride))
    epilogue = _epilogue(sch, found.blocks, conv)
    ln, lf, ly, lx, lrc, lry, lrx = sch.get_loops(conv)
    yo, yi_ = sch.split(ly, [None, yi])
    xo, xi_ = sch.split(lx, [None, xv])
    sch.reorder(ln, lf, yo, xo, lrc, lry, lrx, yi_, xi_)
    outer = sch.fuse(ln, lf)
    sch.parallel(outer)
    sch.reverse_compute_at(epilogue, xo)
    sch.vectorize(xi_)
    sch.unroll(yi_)
    sch.decompose_reduction(conv, lrc)
    sch.vectorize(sch.get_loops(epilogue)[-1])
    if data is not None:
        if _is_copy(sch, data):
            sch.compute_inline(data)
        else:
            sch.compute_at(data, outer)
    return Plan(sch.mod["main"])


def _pack_oihw(w: np.ndarray, vo: int) -> np.ndarray:
    """OIHW → (O/vo)·I·H·W·vo: the weights of `vo` output channels side by side."""
    return w.reshape(w.shape[0] // vo, vo, *w.shape[1:]).transpose(0, 2, 3, 4, 1)


# ---------------------------------------------------------------- dense (FC)

def _dense(k: Kernel) -> Plan | None:
    """y[i, j] = sum_k x[i, k]·w[k, j] with w constant (the FC lowering pre-transposes it):
    w repacked to (N/vo)·K·vo, a tile of rows × vo columns in registers, parallel over
    column blocks (and row blocks)."""
    found = _one_reduction(k, "SSR")
    if found is None:
        return None
    sch, blocks, mm = found
    stmt = sch.get(mm)
    i, j, r = (iv.var for iv in stmt.iter_vars)
    weight = _constant_read(k, stmt, (r, j))
    if weight is None or not _indexed_by(stmt.reads[1 - weight[0]], (i, r)):
        return None
    w_read, w_param = weight
    lanes = _vector_lanes(k.target)
    rows, cols = _extent(sch, mm, 0), _extent(sch, mm, 1)
    vo = next((v * lanes for v in (2, 1) if cols % (v * lanes) == 0), None)
    if vo is None:
        return None
    ti = max(d for d in range(1, min(rows, 12 * lanes // vo) + 1) if rows % d == 0)
    for block in blocks[:blocks.index(mm)]:
        sch.compute_inline(block)
    epilogue = _epilogue(sch, blocks, mm)
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

def _pool(k: Kernel) -> Plan | None:
    """One reduction over trailing axes (max/avg pooling, global pooling, a mean): parallel
    over the leading axes but the last two (one plane of one image per iteration), its padding
    stage computed per plane, the last spatial axis vectorized when the input is read at
    stride 1 and the vector width divides it (strided vector loads measured slower than scalar
    code), the epilogue (an average's division) per plane."""
    found = _one_reduction(k, "SS+R+")
    if found is None:
        return None
    sch, blocks, red = found
    stmt = sch.get(red)
    spatial = _kinds(sch, red).count("S")
    loops = sch.get_loops(red)
    outer = sch.fuse(*loops[:max(1, spatial - 2)])
    x = stmt.iter_vars[spatial - 1].var
    strides = [sym.detect_linear_equation(r.region[-1].min, [x]) for r in stmt.reads]
    lanes = _vector_lanes(k.target)
    if (all(len(s) == 2 and _same(s[0], 1) for s in strides)
            and _extent(sch, red, spatial - 1) % lanes == 0):
        xo, xi = sch.split(loops[spatial - 1], [None, lanes])
        sch.reorder(xo, *loops[spatial:], xi)
        sch.vectorize(xi)
    sch.parallel(outer)
    for block in reversed(blocks[:blocks.index(red)]):
        if _is_copy(sch, block):
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


def _injective(k: Kernel) -> Plan | None:
    """Elementwise, broadcast, reshape, concat: every block inlined into the last one, whose
    loops are fused, vectorized by the vector width and split across the cores."""
    sch = s_tir.Schedule(k.func)
    blocks = _blocks(sch)
    if any("R" in _kinds(sch, b) for b in blocks):
        return None
    for block in blocks[:-1]:
        sch.compute_inline(block)
    (block,) = _blocks(sch)
    fused = sch.fuse(*sch.get_loops(block))
    total = math.prod(int(iv.dom.extent) for iv in sch.get(block).iter_vars)
    lanes = _vector_lanes(k.target)
    if total % lanes == 0 and total > lanes:
        fused, inner = sch.split(fused, [None, lanes])
        sch.vectorize(inner)
    sch.parallel(fused)
    return Plan(sch.mod["main"])


def _parallel(k: Kernel) -> Plan | None:
    """The fallback: each top-level loop nest's outer spatial loops across the cores."""
    sch = s_tir.Schedule(k.func)
    done = False
    for block in _blocks(sch):
        kinds = _kinds(sch, block)
        spatial = len(kinds) - len(kinds.lstrip("S"))
        loops = sch.get_loops(block)
        if spatial == 0 or len(loops) < spatial:
            continue
        outer = loops[:max(1, spatial - 1)]
        if math.prod(_extent(sch, block, i) for i in range(len(outer))) < 2:
            continue  # one iteration: a parallel launch would only cost
        try:
            sch.parallel(sch.fuse(*outer))
            done = True
        except (RuntimeError, ValueError):
            continue
    return Plan(sch.mod["main"]) if done else None


RULES: dict[str, Rule] = {
    "conv2d": _conv,
    "depthwise_conv2d": _depthwise,
    "dense": _dense,
    "pool": _pool,
    "injective": _injective,
    "parallel": _parallel,
}

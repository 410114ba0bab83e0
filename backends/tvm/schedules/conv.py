"""The convolution rule of archdsl's CPU schedules: dense convolutions as register tiles of output
channels × pixels over OIHW{vo}o-packed weights (`find_conv` also serves the depthwise rule).
Every choice here was measured on this project's zoo (ResNet, VGG, MobileNet) on an AVX2 CPU;
the docstrings say by how much."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import s_tir, sym

from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Plan,
    constant_read,
    epilogue_of,
    extent,
    is_copy,
    one_reduction,
    same,
    vector_lanes,
)

__all__ = ["ConvFound", "conv2d", "find_conv"]


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
    if extent(sch, conv, 5) * extent(sch, conv, 6) != 1:
        return False
    region = stmt.reads[read].region
    return not all(same(sym.detect_linear_equation(region[d].min, [iv.var])[0], 1)
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
    n, f, h, w, c = (extent(sch, conv, i) for i in range(5))
    if (vo * h * w * 4 <= 64 * 1024 and c > _RC_CHUNK and c % _RC_CHUNK == 0
            and n * f // vo >= 8):
        return _RC_CHUNK
    if c > _ROW_CHUNK and c % _ROW_CHUNK == 0:
        return _ROW_CHUNK
    return None


@dataclass
class ConvFound:
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


def find_conv(k: Kernel) -> ConvFound | None:
    """A dense (groups = 1) or depthwise (one output per input channel) NCHW convolution with
    constant OIHW weights; grouped ones are left to the fallback."""
    found = one_reduction(k, "SSSSRRR")
    if found is None:
        return None
    sch, blocks, conv = found
    stmt = sch.get(conv)
    n, f, y, x, rc, ry, rx = (iv.var for iv in stmt.iter_vars)
    weight = constant_read(k, stmt, (f, rc, ry, rx))
    if weight is None:
        return None
    d_read = 1 - weight[0]
    channel = stmt.reads[d_read].region[1].min
    depthwise = extent(sch, conv, 4) == 1 and same(channel, f + rc)
    if not (depthwise or channel.same_as(rc)):
        return None
    return ConvFound(sch, blocks, conv, *weight, d_read, depthwise)


def conv2d(k: Kernel) -> Plan | None:
    found = find_conv(k)
    if found is None or found.depthwise:
        return None
    sch, conv = found.sch, found.block
    tile = _conv_tile(extent(sch, conv, 2), extent(sch, conv, 3), extent(sch, conv, 1),
                      vector_lanes(k.target))
    if tile is None:
        return None
    vo = tile[0]
    data = _dense_input(found)
    epilogue = epilogue_of(sch, found.blocks, conv)
    sch.transform_layout(conv, ("read", found.w_read),
                         lambda o, i, h, w: (o // vo, i, h, w, o % vo))
    # the partial sums (a register tile) with the channel block innermost
    sch.transform_layout(conv, ("write", 0), lambda n, c, h, w: (n, c // vo, h, w, c % vo))
    reduction = _tile_loops(sch, conv, epilogue, *tile)
    sch.decompose_reduction(conv, reduction)
    if data is not None:
        if is_copy(sch, data):
            sch.compute_inline(data)
        else:
            sch.parallel(sch.fuse(*sch.get_loops(data)[:2]))
    return Plan(sch.mod["main"], {found.w_param: lambda w: _pack_oihw(w, vo)})


def _dense_input(found: ConvFound):
    """The block that makes the conv's input. A strided 1×1 conv reads every s-th pixel: it
    gets a block gathering those densely first (measured 1.1-1.7× faster on ResNet-50's
    downsampling convs), into which the padding stage (a copy) is inlined."""
    sch, conv, data = found.sch, found.block, found.data
    if not _pointwise_strided(sch, conv, found.d_read):
        return data
    gathered = sch.reindex_cache_read(conv, found.d_read, "global",
                                      lambda n, f, y, x, c, r, s: (n, c, y, x, r, s))
    if data is not None:
        sch.compute_inline(data)
    return gathered


def _tile_loops(sch: s_tir.Schedule, conv, epilogue, vo: int, yi: int, xi: int):
    """Split and order the conv's loops into register tiles, parallel outside, the epilogue
    on each tile (or plane, row); returns the loop to decompose the reduction at."""
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
        rco, rci = sch.split(lrc, [None, chunk])
        if chunk == _RC_CHUNK:
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
    return lrc


def _pack_oihw(w: np.ndarray, vo: int) -> np.ndarray:
    """OIHW → (O/vo)·I·H·W·vo: the weights of `vo` output channels side by side."""
    return w.reshape(w.shape[0] // vo, vo, *w.shape[1:]).transpose(0, 2, 3, 4, 1)

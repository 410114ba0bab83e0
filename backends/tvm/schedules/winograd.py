"""Winograd convolution F(4×4, 3×3) on channel-blocked activations: the compute, its weights and
its schedule rule.

A 3×3 stride-1 conv computes each 4×4 tile of its output from a 6×6 tile of its input as
Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
2016): per tile and channel pair 36 products instead of 144, 4× fewer multiplications. In
channel blocks it is three stages, each vectorized over a block's lanes:

- `IN`/`V`: each input tile's transform, V = Bᵀ d B (adds and a few multiplies by constants,
  written out per row of Bᵀ with its zeros left out);
- `GEMM`: for each of the 36 tile positions, the product of the transformed tiles
  (tiles × input channels) with the transformed weights U = G g Gᵀ (input × output channels,
  computed at compile time in float64: `pack`) — a 1×1 conv over the tiles, tiled in registers
  as `conv_blocked`'s (V output vectors × P tiles);
- `ROWS`/`OUT`: each output tile, Aᵀ M A, then the conv's fused epilogue (bias, residual,
  activation) on it.

The tiles of an image are numbered row by row and padded to a multiple of the register tile's
P; the tiles beyond the output's edge read zeros (or the input's padding) and their outputs
are dropped. Per image (one loop around the three stages, `merge`d: an image's transformed
tiles and products are still in L2 when read, and buffers of one image are all it takes):
its tiles' transforms, then the products, then the outputs, each stage parallel (one launch
of the pool, barriers between: `launch.py`). The products are computed over all the padded
tiles: put under the output's image loop instead, only the tiles it reads would be, in a
predicated inner loop (ResNet-18's 64→64 on 56×56, 196 tiles as 33 of 6: 1.13 ms → 0.48).

Kernels alone, one thread, batch 1, against the direct conv of `conv_blocked` (AVX-512 Xeon,
`emeraldrapids`): ResNet-18's 3×3 64→64 on 56×56 0.48 ms (direct 1.13–1.54), 128→128 on
28×28 0.47 (1.57–1.60), 256→256 on 14×14 0.81 (1.44–1.47), 512→512 on 7×7 1.44 (1.26–1.33).

The rounding error is larger than the direct conv's — the transforms' constants reach 8 and
1/24 — about 6e-6 of the output's scale where float32's direct sum is 3e-7 (64 → 64 channels
on 56×56), far inside the 1e-4 that builds are held to (tests/backends/test_tvm_zoo.py).

When (`use`): a dense 3×3 conv, stride 1, undilated, of a blocked input whose image has at
least `MIN_TILES` output tiles (each position's weights are 36/9 = 4× the direct conv's and are
read once per image: on fewer tiles their reads, not the products, set the pace). 16 tiles
(14×14) rather than 32: whole networks, interleaved builds, batch 1: ResNet-18 0.95× the time
on two threads, ResNet-50 0.98× on two and 0.93× on one; 4 (7×7, an 8×8 of tiles for its 49
pixels) was slower alone (above) and, at batch 32 on two threads, ResNet-18 0.98× and
ResNet-50 0.90–1.01×: not taken.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import s_tir, te, tirx

from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Machine,
    Plan,
    epilogue_of,
    extent,
    find_block,
    loops_below,
    tile_loops,
    top_blocks,
)
from archdsl.backends.tvm.schedules.conv_blocked import pixel_tile
from archdsl.backends.tvm.schedules.layout import pad_axis, padded

__all__ = ["AT", "BT", "G", "GEMM", "IN", "M", "MIN_TILES", "OUT", "ROWS", "V", "conv2d",
           "conv2d_winograd", "pack", "product_tile", "tiles", "use"]

M = 4  # output tile's side
ALPHA = M + 2  # input tile's side
# points 0, 1, -1, 2, -2 and ∞
BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], np.float64)

MIN_TILES = 16  # output tiles of an image a conv needs at least (see the docstring)

IN = "archdsl_wino_in"  # Bᵀ d: an input tile's rows transformed
V = "archdsl_wino_v"  # Bᵀ d B
GEMM = "archdsl_wino_gemm"  # Σ over input channels of U ⊙ V, per tile position
ROWS = "archdsl_wino_rows"  # M A
OUT = "archdsl_wino_out"  # Aᵀ M A: the output


def use(kernel: tuple[int, int], strides, dilation, groups: int, blocked_input: bool,
        out_plane: tuple[int, int]) -> bool:
    """Whether a conv goes by Winograd (see the module's docstring)."""
    return (tuple(kernel) == (3, 3) and all(int(s) == 1 for s in strides)
            and all(int(d) == 1 for d in dilation) and groups == 1 and blocked_input
            and tiles(out_plane) >= MIN_TILES)


def tiles(out_plane: tuple[int, int]) -> int:
    """An image's output tiles."""
    return -(-int(out_plane[0]) // M) * -(-int(out_plane[1]) // M)


def product_tile(ocb: int, count: int, machine: Machine) -> tuple[int, int, int]:
    """(V, P, padded tile count): the register tile of the products, as a 1×1 conv's over
    `count` tiles (`conv_blocked.pixel_tile`)."""
    return pixel_tile(ocb, count, machine)


def pack(w: np.ndarray, b: int) -> np.ndarray:
    """OIHW 3×3 weights → U = G g Gᵀ as α·α·OCb·ICb·b·b (input lane, then output lane),
    channels zero-padded to whole blocks; computed in float64."""
    o, i = w.shape[:2]
    w = pad_axis(pad_axis(w.astype(np.float64), 0, padded(o, b)), 1, padded(i, b))
    u = np.einsum("ak,oikl,bl->aboi", G, w, G)
    u = u.reshape(ALPHA, ALPHA, w.shape[0] // b, b, w.shape[1] // b, b)
    return np.ascontiguousarray(u.transpose(0, 1, 2, 4, 5, 3).astype(np.float32))


def _combine(matrix: np.ndarray, row, term: Callable[[int], tirx.PrimExpr]) -> tirx.PrimExpr:
    """Σ_i matrix[row, i] · term(i) for the row `row` (an expression): each row's sum written
    out without its zeros, the rows chosen by `Select` (which unrolling the row's loop folds)."""
    chosen = None
    for r in reversed(range(matrix.shape[0])):
        total = None
        for i, c in enumerate(matrix[r]):
            if c == 0:
                continue
            t = term(i)
            t = t if c == 1 else -t if c == -1 else t * tirx.const(float(c), "float32")
            total = t if total is None else total + t
        chosen = total if chosen is None else tirx.Select(row == r, total, chosen)
    return chosen


def conv2d(data: te.Tensor, weight: te.Tensor, padding, tiled: int,
           out_dtype: str = "float32") -> te.Tensor:
    """A 3×3 stride-1 conv of blocked `data` (N×ICb×H×W×b) with Winograd weights (`pack`'s
    α·α·OCb·ICb·b·b) → N×OCb×OH×OW×b, its tiles padded to `tiled` (≥ the image's tiles)."""
    n, icb, h, w, b = (int(d) for d in data.shape)
    ocb = int(weight.shape[2])
    top, left, bottom, right = (int(p) for p in padding)
    oh, ow = h + top + bottom - 2, w + left + right - 2
    rows, columns = -(-oh // M), -(-ow // M)
    count = rows * columns
    zero = tirx.const(0.0, data.dtype)

    def read(c, n_, t, i, j, lane):  # input pixel (i, j) of tile t, zero outside
        t = tirx.min(t, count - 1) if tiled > count else t
        y, x = t // columns * M + i - top, t % columns * M + j - left
        inside = tirx.all(y >= 0, y < h, x >= 0, x < w)
        return tirx.if_then_else(inside, data[n_, c, y, x, lane], zero)

    rowwise = te.compute((n, icb, tiled, ALPHA, ALPHA, b), lambda n_, c, t, xi, j, lane:
                         _combine(BT, xi, lambda i: read(c, n_, t, i, j, lane)), name=IN)
    v = te.compute((n, ALPHA, ALPHA, icb, tiled, b), lambda n_, xi, nu, c, t, lane:
                   _combine(BT, nu, lambda j: rowwise[n_, c, t, xi, j, lane]), name=V)
    rc, ri = te.reduce_axis((0, icb), "rc"), te.reduce_axis((0, b), "ri")
    products = te.compute(
        (n, ALPHA, ALPHA, ocb, tiled, b), lambda n_, xi, nu, o, t, lane: te.sum(
            v[n_, xi, nu, rc, t, ri].astype(out_dtype) * weight[xi, nu, o, rc, ri, lane]
            .astype(out_dtype), axis=[rc, ri]), name=GEMM)
    half = te.compute((n, ocb, tiled, ALPHA, M, b), lambda n_, o, t, xi, j, lane:
                      _combine(AT, j, lambda nu: products[n_, xi, nu, o, t, lane]), name=ROWS)
    return te.compute((n, ocb, oh, ow, b), lambda n_, o, y, x, lane: _combine(
        AT, y % M, lambda xi: half[n_, o, y // M * columns + x // M, xi, x % M, lane]),
        name=OUT)


def conv2d_winograd(k: Kernel) -> Plan | None:
    """The rule: per image (the outermost loop), the input tiles' transforms parallel over
    input blocks and tiles; the products parallel over tile positions and output-channel
    groups, each a register tile of V output vectors × P tiles summed over the input channels
    (a group's weights of one position stay in L1 and L2 across the image's tiles); then the
    output tiles, each with its epilogue, parallel over output blocks and rows of tiles."""
    sch = s_tir.Schedule(k.func)
    blocks = top_blocks(sch)
    rowwise, v, gemm, half, out = (find_block(sch, blocks, name)
                                        for name in (IN, V, GEMM, ROWS, OUT))
    if None in (rowwise, v, gemm, half, out):
        return None
    ocb, tiled = extent(sch, gemm, 3), extent(sch, gemm, 4)
    oh, ow = extent(sch, out, 2), extent(sch, out, 3)
    vectors, pixels, padded_tiles = product_tile(ocb, tiles((oh, ow)), Machine.of(k.target))
    if padded_tiles != tiled or ocb % vectors:
        return None  # not padded as this rule tiles it
    epilogue = epilogue_of(sch, blocks, out)
    if [extent(sch, epilogue, i) for i in range(5)] != [extent(sch, out, i) for i in range(5)]:
        return None  # a layout transform fused in: not this rule's epilogue
    # the output tiles with the epilogue: image, output block, row of tiles, tile, its pixels
    n, o, y, x, lane = sch.get_loops(epilogue)
    yo, yi = sch.split(y, [None, M])
    xo, xi = sch.split(x, [None, M])
    sch.reorder(n, o, yo, xo, yi, xi, lane)
    sch.compute_at(out, xo)
    sch.compute_at(half, xo)
    sch.set_scope(half, 0, "local")
    for block in (half, out):
        *unrolled, last = loops_below(sch, block, xo)
        tile_loops(sch, unrolled, last)
    tile_loops(sch, [yi, xi], lane)
    sch.parallel(sch.fuse(o, yo))
    # the products: image → position, group, tiles → input channels → tile (all the padded
    # tiles: computed under the output's image loop, the tiles it reads would be predicated)
    images = [n]
    n, xi, nu, o, t, lane, rc, ri = sch.get_loops(gemm)
    oo, ov = sch.split(o, [None, vectors])
    to, tp = sch.split(t, [None, pixels])
    sch.reorder(n, xi, nu, oo, to, rc, ri, tp, ov, lane)
    sch.parallel(sch.fuse(xi, nu, oo))
    tile_loops(sch, [tp, ov], lane)
    sch.decompose_reduction(gemm, rc)
    images.append(n)
    # the input tiles: image → input block, tile → its 36 positions
    n, xi, nu, c, t, lane = sch.get_loops(v)
    sch.reorder(n, c, t, xi, nu, lane)
    sch.compute_at(rowwise, t)
    sch.set_scope(rowwise, 0, "local")
    *unrolled, last = loops_below(sch, rowwise, t)
    tile_loops(sch, unrolled, last)
    tile_loops(sch, [xi, nu], lane)
    sch.parallel(sch.fuse(c, t))
    images.append(n)
    # one image loop around the three: each image's stages while its tiles are in cache
    sch.merge(*reversed(images))
    return Plan(sch.mod["main"])

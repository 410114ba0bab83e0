"""Depthwise convolutions: on NCHW activations (float16 builds) vectorized along output rows,
each channel's padded plane made just before use; on blocked ones a vector of channels per
pixel, the padding read in place."""

from __future__ import annotations

from tvm import s_tir, sym

from archdsl.backends.tvm.schedules import blocked
from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Machine,
    Plan,
    divisors,
    epilogue_of,
    extent,
    find_block,
    is_copy,
    top_blocks,
    vector_lanes,
)
from archdsl.backends.tvm.schedules.conv import find_conv

__all__ = ["depthwise_blocked", "depthwise_conv2d"]


def depthwise_conv2d(k: Kernel) -> Plan | None:
    """A depthwise conv, vectorized along output rows (NCHW keeps them contiguous): a tile of
    up to 4 rows × 8 columns in registers, the 3×3 weights broadcast, parallel over (batch,
    channel) with each channel's padded plane made right before it is used. A stride-s conv
    reads its plane de-interleaved (columns w % s side by side), so that its loads are
    contiguous too. (Measured on MobileNet v1: 1.1-3× faster per layer than the channel-
    blocked NCHW8c version of the dense schedule, which re-laid out each input.)"""
    found = find_conv(k)
    if found is None or not found.depthwise:
        return None
    sch, conv = found.sch, found.block
    stmt = sch.get(conv)
    x = stmt.iter_vars[3].var
    out_h, out_w = extent(sch, conv, 2), extent(sch, conv, 3)
    lanes = vector_lanes(k.target)
    xv = lanes if out_w % lanes == 0 else max(
        d for d in range(1, min(out_w, 2 * lanes) + 1) if out_w % d == 0)
    yi = max(d for d in range(1, 5) if out_h % d == 0 and d * -(-xv // lanes) <= 8)
    data = found.data
    stride = int(sym.detect_linear_equation(stmt.reads[found.d_read].region[3].min, [x])[0])
    if stride > 1:  # the padded plane de-interleaved: columns w % stride side by side
        if data is None or int(sch.get(data).writes[0].source.ty.shape[3]) % stride:
            return None
        sch.transform_layout(data, ("write", 0),
                             lambda n, c, h, w: (n, c, h, w % stride, w // stride))
    epilogue = epilogue_of(sch, found.blocks, conv)
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
        if is_copy(sch, data):
            sch.compute_inline(data)
        else:
            sch.compute_at(data, outer)
    return Plan(sch.mod["main"])


def depthwise_blocked(k: Kernel) -> Plan | None:
    """A depthwise conv on blocked activations (`blocked.depthwise_conv2d`): one vector of
    channels per output pixel, a row of up to half the registers' count of pixels in
    registers with the K×K window unrolled around them, parallel over (image, channel block).
    The padding is read in place (a condition per pixel and window position, not per lane):
    a padded copy of each block's plane, made right before use, had the conv write and read
    the plane once more, at a few FLOPs per byte (one thread, interleaved: MobileNet v1 0.95×
    the time at batch 1 and 0.94× at 32, MobileNetV2 0.975× and 0.93×, EfficientNet-B0
    0.94× at batch 1 with AVX-512; with AVX2 code, on the same Intel core, 0.97–0.99×).
    Measured on AVX2 (Zen 3), one thread, against ONNX Runtime (same layer, ratio of times,
    with the copy): 3×3 on 56×56 0.56, 3×3/2 0.65, 5×5 on 14×14 0.43, 3×3 on 14×14 0.29."""
    sch = s_tir.Schedule(k.func)
    blocks = top_blocks(sch)
    conv = find_block(sch, blocks, blocked.DEPTHWISE)
    if conv is None:
        return None
    out_w = extent(sch, conv, 3)
    pixels = max(divisors(out_w, Machine.of(k.target).registers // 2))
    pad = find_block(sch, blocks, blocked.PAD)
    epilogue = epilogue_of(sch, blocks, conv)
    n, c, y, x, ci, ry, rx = sch.get_loops(conv)
    xo, xi = sch.split(x, [None, pixels])
    sch.reorder(n, c, y, xo, ry, rx, xi, ci)
    outer = sch.fuse(n, c)
    sch.parallel(outer)
    sch.reverse_compute_at(epilogue, xo)
    sch.vectorize(ci)
    sch.unroll(xi)
    sch.unroll(rx)
    sch.unroll(ry)
    sch.decompose_reduction(conv, ry)
    sch.vectorize(sch.get_loops(epilogue)[-1])
    if pad is not None:  # read in place: a window's reads beyond the plane are zeros
        sch.compute_inline(pad)
    return Plan(sch.mod["main"])

"""Convolutions on channel-blocked activations (NCHW[b]c, b = the vector width), as TE computes.

A blocked tensor is N × ⌈C/b⌉ × H × W × b: the b channels of a pixel side by side, one vector,
the last block padded. `layout.Blocked` lowers the network's convolutions to these computes (via
`call_te`) and keeps activations blocked between them; the schedule rules (`conv.py`,
`depthwise.py`) find the blocks by the names below. The padded channels of an activation hold
finite values that every blocked conv multiplies by zero weights.

- `conv2d`: data N×ICb×H×W×ib (or plain NCHW, N×IC×H×W, read as ib = 1: a first layer of 3
  channels is not padded to a vector), weights OCb×ICb×KH×KW×ib×ob → N×OCb×OH×OW×ob; grouped,
  when each group's channels are whole blocks (RegNet's and ResNeXt's group widths of 8k),
  with ICb the blocks of one group and output block o reading its group's
  (its block is annotated `GROUP_VECTORS`: output blocks per group);
- `flat_conv2d`: a dense conv of blocked data on a small plane over its output plane as one
  flat axis of pixels, padded to a multiple of the register tile's pixels (a 7×7 plane's 49
  pixels as 13 tiles of 4: the last computes pixel 48 again, and its copies are dropped);
  a 1×1 unpadded conv's input is first gathered densely when it is strided, any other's
  padded as `conv2d`'s;
- `depthwise_conv2d`: data N×Cb×H×W×b, weights Cb×KH×KW×b → N×Cb×OH×OW×b;
- `channel_gather`: channel routing (slices at any offset, concatenations of parts that do
  not fill blocks, channel shuffles) from blocked parts to a blocked result in one pass, each
  output lane reading its source channel's block and lane; padded lanes are zero.
The convs pad their input in a stage of their own (`PAD`), which the schedules place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tvm import te, tirx

__all__ = ["CONV", "DEPTHWISE", "FLAT", "GATHER", "GROUP_VECTORS", "PAD", "SUM", "TAIL", "UNPAD",
           "channel_gather", "conv2d", "depthwise_conv2d", "flat_conv2d", "out_size"]

CONV = "archdsl_conv_blocked"
FLAT = "archdsl_conv_flat"
DEPTHWISE = "archdsl_dwconv_blocked"
PAD = "archdsl_pad"
UNPAD = "archdsl_unpad"
TAIL = "archdsl_tail_conv"  # a conv's last input blocks, reduced apart (`conv2d`'s `tail`)
SUM = "archdsl_tail_sum"
GATHER = "archdsl_gather"
GROUP_VECTORS = "archdsl_group_vectors"


def out_size(size: int, kernel: int, stride: int, dilation: int, before: int, after: int) -> int:
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def _padded(data: te.Tensor, padding: Sequence[int]) -> te.Tensor:
    """data with `padding` (top, left, bottom, right) zeros around its H×W axes (2 and 3)."""
    top, left, bottom, right = (int(p) for p in padding)
    if not any((top, left, bottom, right)):
        return data
    shape = list(data.shape)
    h, w = int(shape[2]), int(shape[3])
    shape[2], shape[3] = h + top + bottom, w + left + right
    zero = tirx.const(0.0, data.dtype)

    def value(n, c, y, x, *i):
        inside = tirx.all(y >= top, y < top + h, x >= left, x < left + w)
        return tirx.if_then_else(inside, data[(n, c, y - top, x - left, *i)], zero)

    return te.compute(shape, value, name=PAD)


def conv2d(data: te.Tensor, weight: te.Tensor, strides: Sequence[int], padding: Sequence[int],
           dilation: Sequence[int], out_dtype: str, width: int | None = None,
           groups: int = 1, blocks: int | None = None, tail: int = 0) -> te.Tensor:
    """A dense or grouped convolution onto blocked output channels (see the module's
    docstring). With
    `width` above the output's, rows are computed that wide (whole register tiles: a 7-wide
    row as 8 = 2 × 4) and cut back (`UNPAD`): a padded conv's input is padded further on the
    right, an unpadded one's extra columns read its last column again (no copy). With
    `blocks` below the weights' output blocks (padded with zeros to whole register tiles),
    the output is cut back to that many too. With `tail` (input blocks, fewer than the
    weights' and only when nothing is cut back), the sum over the last `tail` input blocks is
    a reduction of its own (`TAIL`) and the output their sum (`SUM`): the schedule computes
    the tail tile by tile in registers and applies the epilogue as each tile is done, instead
    of a pass over the partial sums after the last chunk."""
    ocb, icb, kh, kw, ib, ob = (int(d) for d in weight.shape)
    blocks = blocks or ocb
    n, _, h, w = (int(d) for d in data.shape[:4])
    (sy, sx), (dy, dx) = (int(s) for s in strides), (int(d) for d in dilation)
    oh = out_size(h, kh, sy, dy, int(padding[0]), int(padding[2]))
    ow = out_size(w, kw, sx, dx, int(padding[1]), int(padding[3]))
    wide = max(width or ow, ow)
    top, left, bottom, right = (int(p) for p in padding)
    # an unpadded conv's columns beyond the row read its last column again: padding the
    # input only for them copied all of it first (MobileNetV2's 16→96 1×1 conv on 112×112
    # rows as 38 tiles of 3 pixels, batch 32, one thread: 36–52 ms with the copy, 15 without)
    clamp = w - 1 if wide > ow and not any((top, left, bottom, right)) else None
    pad = _padded(data, (top, left, bottom, right + (wide - ow) * sx * (clamp is None)))
    blocked = len(data.shape) == 5
    per_group = ocb // groups  # output blocks per group

    def read(b, o, c, y, x, i):
        if clamp is not None:
            x = tirx.min(x, clamp)
        if groups > 1:
            c = o // per_group * icb + c
        return pad[b, c, y, x, i] if blocked else pad[b, c, y, x]

    def reduction(first: int, count: int, name: str) -> te.Tensor:
        """The sum over input blocks first ... first + count - 1."""
        rc = te.reduce_axis((0, count), "rc")
        ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
        ri = te.reduce_axis((0, ib), "ri")
        return te.compute(
            (n, ocb, oh, wide, ob),
            lambda b, o, y, x, oi: te.sum(
                read(b, o, rc + first, y * sy + ry * dy, x * sx + rx * dx, ri).astype(out_dtype)
                * weight[o, rc + first, ry, rx, ri, oi].astype(out_dtype),
                axis=[rc, ry, rx, ri]),
            name=name, attrs={GROUP_VECTORS: per_group} if groups > 1 else None)

    if 0 < tail < icb and wide == ow and blocks == ocb:
        head, last = reduction(0, icb - tail, CONV), reduction(icb - tail, tail, TAIL)
        return te.compute(head.shape, lambda *i: head[i] + last[i], name=SUM)
    out = reduction(0, icb, CONV)
    if wide == ow and blocks == ocb:
        return out
    return te.compute((n, blocks, oh, ow, ob), lambda *i: out[i], name=UNPAD)


def flat_conv2d(data: te.Tensor, weight: te.Tensor, strides: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int], pixels: int, out_dtype: str,
                blocks: int | None = None) -> te.Tensor:
    """A dense convolution of blocked data as a product over its flattened output plane of
    `pixels` (≥ OH·OW) pixels (see the module's docstring), onto `blocks` output blocks of
    the weights' (the rest are zero padding to whole register tiles). Pixel p reads the
    window at row p // OW and column p % OW of the (padded) input; a 1×1 unpadded strided
    conv's input is first gathered densely instead."""
    ocb, icb, kh, kw, ib, ob = (int(d) for d in weight.shape)
    n, _, h, w, _ = (int(d) for d in data.shape)
    (sy, sx), (dy, dx) = (int(s) for s in strides), (int(d) for d in dilation)
    top, left, bottom, right = (int(p) for p in padding)
    oh, ow = out_size(h, kh, sy, dy, top, bottom), out_size(w, kw, sx, dx, left, right)
    if (kh, kw) == (1, 1) and not any((top, left, bottom, right)) and (sy, sx) != (1, 1):
        source = data
        data = te.compute((n, icb, oh, ow, ib),
                          lambda b, c, y, x, i: source[b, c, y * sy, x * sx, i], name=GATHER)
        sy = sx = 1
    else:
        data = _padded(data, padding)
    last = oh * ow - 1
    rc, ri = te.reduce_axis((0, icb), "rc"), te.reduce_axis((0, ib), "ri")
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")

    def read(b, c, p, i):
        q = tirx.min(p, last) if pixels > oh * ow else p
        return data[b, c, q // ow * sy + ry * dy, q % ow * sx + rx * dx, i].astype(out_dtype)

    flat = te.compute((n, ocb, pixels, ob), lambda b, o, p, oi: te.sum(
        read(b, rc, p, ri) * weight[o, rc, ry, rx, ri, oi].astype(out_dtype),
        axis=[rc, ry, rx, ri]), name=FLAT)
    return te.compute((n, blocks or ocb, oh, ow, ob),
                      lambda b, o, y, x, oi: flat[b, o, y * ow + x, oi], name="archdsl_unflat")


def depthwise_conv2d(data: te.Tensor, weight: te.Tensor, strides: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int],
                     out_dtype: str) -> te.Tensor:
    """A depthwise convolution of a blocked activation (see the module's docstring)."""
    cb, kh, kw, b = (int(d) for d in weight.shape)
    n, _, h, w, _ = (int(d) for d in data.shape)
    (sy, sx), (dy, dx) = (int(s) for s in strides), (int(d) for d in dilation)
    oh = out_size(h, kh, sy, dy, int(padding[0]), int(padding[2]))
    ow = out_size(w, kw, sx, dx, int(padding[1]), int(padding[3]))
    pad = _padded(data, padding)
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, cb, oh, ow, b),
        lambda i, c, y, x, ci: te.sum(
            pad[i, c, y * sy + ry * dy, x * sx + rx * dx, ci].astype(out_dtype)
            * weight[c, ry, rx, ci].astype(out_dtype), axis=[ry, rx]),
        name=DEPTHWISE)


# (output channel, read(part, channel)) → the channel's value; TIR expressions throughout
Route = Callable[[Any, Callable[[int, Any], Any]], Any]


def channel_gather(*parts: te.Tensor, channels: Sequence[int], out: int,
                   route: Route) -> te.Tensor:
    """`out` channels, blocked as the parts are (N×⌈C/b⌉×H×W×b, `channels` real channels each):
    output channel c is `route(c, read)`, where read(p, s) is channel s of part p. A read is
    clamped into its part (a route may read past it for lanes it then does not select, and for
    padded lanes, which are zero)."""
    n, _, h, w, b = (int(d) for d in parts[0].shape)
    zero = tirx.const(0.0, parts[0].dtype)

    def value(i, cb, y, x, ci):
        def read(p: int, s):
            s = tirx.max(tirx.min(s, channels[p] - 1), 0)
            return parts[p][i, s // b, y, x, s % b]

        c = cb * b + ci
        got = route(c, read)
        return got if out % b == 0 else tirx.if_then_else(c < out, got, zero)

    return te.compute((n, -(-out // b), h, w, b), value, name="archdsl_channel_gather")

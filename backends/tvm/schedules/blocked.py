"""Convolutions on channel-blocked activations (NCHW[b]c, b = the vector width), as TE computes.

A blocked tensor is N × ⌈C/b⌉ × H × W × b: the b channels of a pixel side by side, one vector,
the last block padded. `layout.Blocked` lowers the network's convolutions to these computes (via
`call_te`) and keeps activations blocked between them; the schedule rules (`conv.py`,
`depthwise.py`) find the blocks by the names below. The padded channels of an activation hold
finite values that every blocked conv multiplies by zero weights.

- `conv2d`: data N×ICb×H×W×ib (or plain NCHW, N×IC×H×W, read as ib = 1: a first layer of 3
  channels is not padded to a vector), weights OCb×ICb×KH×KW×ib×ob → N×OCb×OH×OW×ob;
- `depthwise_conv2d`: data N×Cb×H×W×b, weights Cb×KH×KW×b → N×Cb×OH×OW×b.
Both pad their input in a stage of their own (`PAD`), which the schedules place.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

__all__ = ["CONV", "DEPTHWISE", "PAD", "conv2d", "depthwise_conv2d", "out_size"]

CONV = "archdsl_conv_blocked"
DEPTHWISE = "archdsl_dwconv_blocked"
PAD = "archdsl_pad"


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
           dilation: Sequence[int], out_dtype: str) -> te.Tensor:
    """A dense convolution onto blocked output channels (see the module's docstring)."""
    ocb, icb, kh, kw, ib, ob = (int(d) for d in weight.shape)
    n, _, h, w = (int(d) for d in data.shape[:4])
    (sy, sx), (dy, dx) = (int(s) for s in strides), (int(d) for d in dilation)
    oh = out_size(h, kh, sy, dy, int(padding[0]), int(padding[2]))
    ow = out_size(w, kw, sx, dx, int(padding[1]), int(padding[3]))
    pad = _padded(data, padding)
    rc = te.reduce_axis((0, icb), "rc")
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    ri = te.reduce_axis((0, ib), "ri")
    blocked = len(data.shape) == 5

    def read(b, c, y, x, i):
        return pad[b, c, y, x, i] if blocked else pad[b, c, y, x]

    return te.compute(
        (n, ocb, oh, ow, ob),
        lambda b, o, y, x, oi: te.sum(
            read(b, rc, y * sy + ry * dy, x * sx + rx * dx, ri).astype(out_dtype)
            * weight[o, rc, ry, rx, ri, oi].astype(out_dtype), axis=[rc, ry, rx, ri]),
        name=CONV)


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

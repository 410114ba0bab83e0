"""Pooling: windows (max, average), global and adaptive pooling. No weights; connections
units × the window (Kh·Kw), or each output's positions for global pooling."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..windows import pair
from .core import INPUTS, REQUIRED, AttrSpec, Keeps, OpDef, OpShapeError, Shape
from .shapes import conv_like, features, fmt_axes, kernel_area, resolve_pad, spatial


def _pool_prepare(name: str) -> Callable[[dict, list[Shape]], tuple[str, dict]]:
    def prepare(a: dict, ins: list[Shape]) -> tuple[str, dict]:
        a = dict(a)
        if a["stride"] is None:
            a["stride"] = a["k"]
        return name, resolve_pad(a)
    return prepare


def _pool_shape(a: dict, ins: list[Shape]) -> Shape:
    c = spatial(ins, "pooling")[0]
    if any(p * 2 > k for p, k in zip(pair(a["pad"]), pair(a["k"]), strict=True)):
        raise OpShapeError(f"pooling padding {fmt_axes(a['pad'], ',')} is more than half the "
                           f"window {fmt_axes(a['k'])}")
    return conv_like(a, ins, "pooling", c)


_POOL_ATTRS = {
    "k": AttrSpec("pair", 2, 1, doc="window (maxpool3, maxpool1x3)"),
    "stride": AttrSpec("pair", None, 1, doc="stride (maxpool3/2); default: the window"),
    "pad": AttrSpec("pad", "valid", doc="valid (default) | same | N | H,W"),
    "ceil": AttrSpec("bool", False, doc="round the output size up (PyTorch ceil_mode)"),
}


def _global_shape(a: dict, ins: list[Shape]) -> Shape:
    """C×H×W → C×1×1 (as PyTorch's AdaptiveAvgPool2d(1)); L×D tokens → a D-vector (pooled over
    the tokens, as `x.mean(dim=1)`)."""
    if len(ins[0]) == 2:
        return (ins[0][1],)
    return (spatial(ins, "global pooling")[0], 1, 1)


def _global_fan_in(a: dict, ins: list[Shape], out: Shape) -> int:
    """Positions pooled per output: H·W of a map, L of a sequence."""
    return math.prod(ins[0]) // features(ins[0])


def _adaptive_window_sum(size: int, out: int) -> int:
    """Σ over PyTorch's adaptive windows [floor(i·size/out), ceil((i+1)·size/out)) of their
    lengths, in closed form: size + out − gcd(size, out) (ceil = floor + 1 except where out
    divides i·size, which happens gcd(size, out) times for i in 1..out)."""
    return size + out - math.gcd(size, out)


def _adaptive_shape(a: dict, ins: list[Shape]) -> Shape:
    c, h, w = spatial(ins, "adaptive pooling")
    return (c, *pair(a["size"]))


def _adaptive_connections(a: dict, ins: list[Shape], out: Shape) -> int:
    # PyTorch's adaptive windows differ in size; sum them exactly over all units
    c, h, w = ins[0]
    oh, ow = pair(a["size"])
    return c * _adaptive_window_sum(h, oh) * _adaptive_window_sum(w, ow)


POOL_OPS = [
    OpDef("maxpool", "pool", "max pooling: maxpool (2×2/2), maxpool3/2", attrs=_POOL_ATTRS,
          kernel="k", slash="stride", prepare=_pool_prepare("maxpool"), shape=_pool_shape,
          fan_in=lambda a, ins, out: kernel_area(a),
          keeps=Keeps(("inputs", "extra"), extra_bytes=lambda a, ins, out: 8 * math.prod(out))),
    OpDef("avgpool", "pool", "average pooling (padding counted, as in PyTorch): avgpool2/2",
          attrs=_POOL_ATTRS, kernel="k", slash="stride", prepare=_pool_prepare("avgpool"),
          shape=_pool_shape, fan_in=lambda a, ins, out: kernel_area(a), keeps=INPUTS),
    OpDef("gap", "pool", "global average pooling: C×H×W to C×1×1, or L×D tokens to their "
          "mean D-vector", shape=_global_shape, fan_in=_global_fan_in),
    OpDef("gmp", "pool", "global max pooling: C×H×W to C×1×1, or L×D tokens to a D-vector",
          shape=_global_shape, fan_in=_global_fan_in,
          # a map's max pooling keeps int64 indices; tokens' maximum (amax), its output
          keeps=Keeps(("inputs", "extra"),
                      extra=lambda a, ins, out: math.prod(out) if len(ins[0]) == 2 else 0,
                      extra_bytes=lambda a, ins, out: 8 * math.prod(out)
                      if len(ins[0]) == 3 else 0)),
    OpDef("adaptive_avgpool", "pool",
          "adaptive average pooling to C×S×S, or C×H×W: adaptive_avgpool(7), adaptive_avgpool(4x6)",
          attrs={"size": AttrSpec("pair", REQUIRED, 1)}, positional=("size",),
          shape=_adaptive_shape, total_connections=_adaptive_connections, keeps=INPUTS),
]

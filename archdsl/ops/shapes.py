"""The shape helpers the op families share: what an op needs of its input (a map, a sequence),
sliding windows (conv and pooling), padding, and the feature axis of per-position ops."""

from __future__ import annotations

import math

from ..windows import pair
from .core import OpShapeError, Shape


def fmt_shape(shape: Shape | None) -> str:
    return "?" if shape is None else "×".join(str(d) for d in shape)


def fmt_axes(value: int | tuple[int, int], sep: str = "×", collapse: bool = False) -> str:
    """A per-axis attribute for people: 3 → 3×3 (3 with `collapse`), (1, 7) → 1×7 (`sep`
    between the axes)."""
    if collapse and isinstance(value, int):
        return str(value)
    return sep.join(str(v) for v in pair(value))


def of_rank(ins: list[Shape], rank: int, needs: str, hint: str) -> Shape:
    if len(ins[0]) != rank:
        raise OpShapeError(f"{needs}, got {fmt_shape(ins[0])}", hint)
    return ins[0]


def spatial(ins: list[Shape], op: str) -> tuple[int, int, int]:
    """The C×H×W map an op needs; a sequence or a vector is refused with the way back."""
    if len(ins[0]) == 2:
        raise OpShapeError(
            f"{op} needs a C×H×W map, got {fmt_shape(ins[0])}: a sequence of {ins[0][0]} tokens "
            f"of {ins[0][1]} features",
            "turn the tokens back into a map first: `grid` makes L×D a D×H×W map "
            "(`grid(h, w)` when it is not square)")
    return of_rank(ins, 3, f"{op} needs a C×H×W input",  # type: ignore[return-value]
                   "a flattened tensor cannot be convolved or pooled; "
                   "move this layer before the FC/flatten")


def window_size(size: int, k: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    span = dilation * (k - 1) + 1
    num = size + 2 * pad - span
    if num < 0:
        return 0
    out = (-(-num // stride) if ceil else num // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1  # PyTorch: the last window must start inside the input or left padding
    return out


def conv_like(a: dict, ins: list[Shape], op: str, channels: int) -> Shape:
    c, h, w = spatial(ins, op)
    (kh, kw), (sh, sw), (ph, pw) = pair(a["k"]), pair(a["stride"]), pair(a["pad"])
    dh, dw = pair(a.get("dilation", 1))
    ceil = a.get("ceil", False)
    ho, wo = window_size(h, kh, sh, ph, dh, ceil), window_size(w, kw, sw, pw, dw, ceil)
    if ho < 1 or wo < 1:
        raise OpShapeError(
            f"spatial size shrinks below 1: a {fmt_axes(a['k'])} window with stride "
            f"{fmt_axes(a['stride'], collapse=True)} and padding "
            f"{fmt_axes(a['pad'], ',', collapse=True)} on a {h}×{w} "
            f"input gives {max(ho, 0)}×{max(wo, 0)}",
            "use a larger input resolution, padding (pad=same), or fewer downsampling layers")
    return (channels, ho, wo)


def axes(values: tuple[int, int]) -> int | tuple[int, int]:
    """The canonical form of a per-axis attribute: an int when both axes agree."""
    return values[0] if values[0] == values[1] else values


def same_pad(a: dict) -> int | tuple[int, int]:
    d, k = pair(a.get("dilation", 1)), pair(a["k"])
    return axes((d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2))


def resolve_pad(a: dict) -> dict:
    pad = a["pad"]
    if pad == "same":
        a["pad"] = same_pad(a)
    elif pad == "valid":
        a["pad"] = 0
    return a


def kernel_area(a: dict) -> int:
    kh, kw = pair(a["k"])
    return kh * kw


def features(shape: Shape) -> int:
    """The feature dimension a per-position op (linear, layernorm, layerscale) works on: the
    channels of a C×H×W map (at every pixel), the features of an L×D sequence (every token),
    or the length of a vector."""
    return shape[0] if len(shape) in (1, 3) else shape[-1]


def with_features(shape: Shape, n: int) -> Shape:
    return (n, *shape[1:]) if len(shape) in (1, 3) else (*shape[:-1], n)


def sequence(ins: list[Shape], op: str) -> tuple[int, int]:
    return of_rank(ins, 2, f"{op} needs a sequence of tokens (L×D)",  # type: ignore[return-value]
                   "make tokens from a feature map first: `tokens` turns C×H×W "
                   "into H·W tokens of C features")


def positions(shape: Shape) -> int:
    """Positions a per-position op normalizes over: pixels of a map, tokens, or 1."""
    return math.prod(shape) // features(shape)


def in_features(ins: list[Shape]) -> int:
    """What FC reads: its input flattened."""
    return math.prod(ins[0])

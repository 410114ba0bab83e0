"""Joins (add, mul, concat) and channel routing (slice, chunk, channel_shuffle, affine): they
route or combine data; only `mul` and `affine` compute, and none has weights."""

from __future__ import annotations

from .core import INPUTS, REQUIRED, AttrSpec, OpDef, OpShapeError, Shape
from .shapes import features, fmt_shape, spatial, with_features


def _add_shape(a: dict, ins: list[Shape]) -> Shape:
    first = ins[0]
    for s in ins[1:]:
        if s != first:
            raise OpShapeError(f"cannot add {fmt_shape(first)} and {fmt_shape(s)}",
                               "make every branch end with the same shape")
    return first


def _mul_shape(a: dict, ins: list[Shape]) -> Shape:
    out = list(ins[0])
    for s in ins[1:]:
        if len(s) != len(out) or any(x != y and 1 not in (x, y)
                                     for x, y in zip(s, out, strict=True)):
            raise OpShapeError(f"cannot multiply {fmt_shape(tuple(out))} by {fmt_shape(s)}",
                               "each dimension must match or be 1 (a gate is C×1×1)")
        out = [max(x, y) for x, y in zip(out, s, strict=True)]
    return tuple(out)


def _concat_shape(a: dict, ins: list[Shape]) -> Shape:
    first = ins[0]
    for s in ins[1:]:
        if len(s) != len(first) or s[1:] != first[1:]:
            raise OpShapeError(
                f"cannot concatenate {fmt_shape(first)} and {fmt_shape(s)} along channels: "
                "the other dimensions differ",
                "every branch must keep the same spatial size (check strides and padding)")
    return (sum(s[0] for s in ins),) + tuple(first[1:])


def _slice_shape(a: dict, ins: list[Shape]) -> Shape:
    n, start, end = features(ins[0]), a["start"], a["end"]
    if not start < end <= n:
        raise OpShapeError(f"channels {start} to {end} (end excluded) are not a part of the "
                           f"{n} of a {fmt_shape(ins[0])} input",
                           f"give 0 <= start < end <= {n}")
    return with_features(ins[0], end - start)


def chunk_bounds(channels: int, n: int, index: int) -> tuple[int, int]:
    """Where the `index`-th of `n` chunks starts and ends, as torch.chunk cuts: ceil(C/n)
    channels each, the last one what is left."""
    size = -(-channels // n)
    start = index * size
    if start >= channels:
        raise OpShapeError(f"{channels} channels make {-(-channels // size)} chunks of {size}, "
                           f"not {index + 1}", "torch.chunk gives fewer chunks when the "
                           "channels run out; use slice(start, end)")
    return start, min(channels, start + size)


def _chunk_prepare(a: dict, ins: list[Shape]) -> tuple[str, dict]:
    if a["index"] >= a["n"]:
        raise OpShapeError(f"chunk {a['index']} of {a['n']} does not exist",
                           f"chunks are numbered 0 to {a['n'] - 1}")
    start, end = chunk_bounds(features(ins[0]), a["n"], a["index"])
    return "slice", {"start": start, "end": end}


def _shuffle_shape(a: dict, ins: list[Shape]) -> Shape:
    c = spatial(ins, "channel_shuffle")[0]
    if c % a["groups"]:
        raise OpShapeError(f"{a['groups']} groups must divide the {c} channels")
    return ins[0]


def _affine_shape(a: dict, ins: list[Shape]) -> Shape:
    n = features(ins[0])
    for key in ("scale", "shift"):
        if len(a[key]) not in (1, n):
            raise OpShapeError(f"`{key}` has {len(a[key])} values for {n} channels",
                               "give one value, or one per channel")
    return ins[0]


CHANNEL_OPS = [
    OpDef("slice", "shape",
          "channels start to end (end excluded) of a C×H×W map; of each token's features, or "
          "of a vector: slice(0, 58)",
          attrs={"start": AttrSpec("int", REQUIRED, 0), "end": AttrSpec("int", REQUIRED, 1)},
          positional=("start", "end"), shape=_slice_shape, makes_units=False, view=True),
    OpDef("chunk", "shape",
          "the index-th of n parts of the channels, as torch.chunk cuts them: chunk(2, 1)",
          attrs={"n": AttrSpec("int", REQUIRED, 1), "index": AttrSpec("int", REQUIRED, 0)},
          positional=("n", "index"), prepare=_chunk_prepare, lowers_to="slice"),
    OpDef("channel_shuffle", "shape",
          "ShuffleNet's shuffle: the channels as G groups, transposed: channel_shuffle(2)",
          attrs={"groups": AttrSpec("int", REQUIRED, 1)}, positional=("groups",),
          shape=_shuffle_shape, makes_units=False),
    OpDef("affine", "scale",
          "a fixed scale and shift per channel, x·scale + shift (torchvision's GoogLeNet and "
          "Inception transform_input): affine(scale=[0.458, 0.448, 0.45], shift=[...])",
          attrs={"scale": AttrSpec("floats", (1.0,), doc="one value, or one per channel"),
                 "shift": AttrSpec("floats", (0.0,), doc="one value, or one per channel")},
          positional=("scale", "shift"), shape=_affine_shape),
]


JOIN_OPS = [
    OpDef("add", "join", "elementwise sum of branches (residual join)", arity=(2, 0),
          in_syntax=False, shape=_add_shape),
    OpDef("mul", "join", "elementwise product with broadcasting (gating)", arity=(2, 0),
          in_syntax=False, shape=_mul_shape, keeps=INPUTS),
    OpDef("concat", "join", "concatenation along channels", arity=(2, 0), in_syntax=False,
          shape=_concat_shape, makes_units=False),
]

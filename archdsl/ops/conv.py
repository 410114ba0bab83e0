"""The weighted layers over maps and vectors: convolution (and depthwise), fully connected, and
the per-position linear layer. Weights Kh·Kw·Cin/groups·Cout for a conv, in·out for FC;
connections units × fan-in; MACs = connections."""

from __future__ import annotations

from ..windows import pair
from .core import FOR_WEIGHTS, REQUIRED, AttrSpec, OpDef, OpShapeError, Shape
from .shapes import (
    conv_like,
    features,
    fmt_shape,
    in_features,
    kernel_area,
    resolve_pad,
    spatial,
    with_features,
)


def _conv_prepare(a: dict, ins: list[Shape]) -> tuple[str, dict]:
    return "conv", resolve_pad(a)


def _dwconv_prepare(a: dict, ins: list[Shape]) -> tuple[str, dict]:
    c = spatial(ins, "dwconv")[0]
    a = dict(a)
    a["groups"] = c
    if a.get("out") is None:
        a["out"] = c
    return "conv", resolve_pad(a)


def _dwconv_advice(a: dict, ins: list[Shape]) -> tuple[str, str] | None:
    """`dwconv3-64` on 32 channels is valid (2 outputs per channel, a channel multiplier) but
    reads as "a depthwise conv to 64 channels", which it is not."""
    c = ins[0][0] if len(ins[0]) == 3 else None
    out = a.get("out")
    if c is None or out is None or out == c:
        return None
    return (f"a depthwise conv on {c} channels with {out} outputs makes "
            f"{out / c:g} per input channel (a channel multiplier)",
            f"drop -{out} to keep {c} channels, or say it plainly: "
            f"conv{a['k']}-{out} groups={c}")


def _conv_shape(a: dict, ins: list[Shape]) -> Shape:
    c = spatial(ins, "conv")[0]
    g = a["groups"]
    if c % g or a["out"] % g:
        raise OpShapeError(
            f"groups={g} must divide both input channels ({c}) and output channels ({a['out']})")
    return conv_like(a, ins, "conv", a["out"])


def _conv_weights(a: dict, ins: list[Shape], out: Shape) -> int:
    return kernel_area(a) * (ins[0][0] // a["groups"]) * a["out"]


_CONV_ATTRS = {
    "out": AttrSpec("int", REQUIRED, 1, doc="output channels (conv3-64)"),
    "k": AttrSpec("pair", REQUIRED, 1, doc="kernel size: the digits in conv3, or conv1x7"),
    "stride": AttrSpec("pair", 1, 1, doc="stride (conv7-64/2; stride=1x2 per axis)"),
    "pad": AttrSpec("pad", "same", doc="same | valid | N | H,W"),
    "dilation": AttrSpec("pair", 1, 1),
    "groups": AttrSpec("int", 1, 1),
    "bias": AttrSpec("bias", "auto", doc="auto: none with norm=, or before a batch norm"),
}


def _fc_shape(a: dict, ins: list[Shape]) -> Shape:
    return (a["out"],)


def _linear_shape(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) not in (1, 2, 3):
        raise OpShapeError(f"linear needs a vector, L×D tokens or a C×H×W map, "
                           f"got {fmt_shape(ins[0])}")
    return with_features(ins[0], a["out"])


def _matrix(a: dict, n_in: int) -> dict[str, Shape]:
    return {"weight": (a["out"], n_in), **({"bias": (a["out"],)} if a["bias"] else {})}


CONV_OPS = [
    OpDef("conv", "conv", "2-D convolution: conv3-64, conv7-64/2, conv3-64 groups=32",
          attrs=_CONV_ATTRS, kernel="k", dash="out", slash="stride", attaches=True,
          prepare=_conv_prepare, shape=_conv_shape, weights=_conv_weights,
          biases=lambda a, ins, out: a["out"] if a["bias"] else 0,
          fan_in=lambda a, ins, out: kernel_area(a) * ins[0][0] // a["groups"], weighted=True,
          keeps=FOR_WEIGHTS, tensors=lambda a, ins, out: {
              "weight": (a["out"], ins[0][0] // a["groups"], *pair(a["k"])),
              **({"bias": (a["out"],)} if a["bias"] else {})}),
    OpDef("dwconv", "conv", "depthwise convolution (groups = input channels): dwconv3/2",
          attrs={**_CONV_ATTRS, "out": AttrSpec("int", None, 1, doc="default: input channels")},
          kernel="k", dash="out", slash="stride", attaches=True, prepare=_dwconv_prepare,
          lowers_to="conv", advice=_dwconv_advice),
    OpDef("fc", "linear", "fully connected layer over the flattened input: FC-4096",
          attrs={"out": AttrSpec("int", REQUIRED, 1), "bias": _CONV_ATTRS["bias"]},
          dash="out", attaches=True, default_attach=("act",), shape=_fc_shape,
          weights=lambda a, ins, out: in_features(ins) * a["out"],
          biases=lambda a, ins, out: a["out"] if a["bias"] else 0,
          fan_in=lambda a, ins, out: in_features(ins), weighted=True, keeps=FOR_WEIGHTS,
          tensors=lambda a, ins, out: _matrix(a, in_features(ins))),
    OpDef("linear", "linear",
          "fully connected layer at every position: over the channels of each pixel of a "
          "C×H×W map (a 1×1 convolution kept as a matrix), the features of each token of "
          "an L×D sequence, or a vector: linear-384",
          attrs={"out": AttrSpec("int", REQUIRED, 1), "bias": _CONV_ATTRS["bias"]},
          dash="out", attaches=True, default_attach=("act",), shape=_linear_shape,
          weights=lambda a, ins, out: features(ins[0]) * a["out"],
          biases=lambda a, ins, out: a["out"] if a["bias"] else 0,
          fan_in=lambda a, ins, out: features(ins[0]), weighted=True, keeps=FOR_WEIGHTS,
          tensors=lambda a, ins, out: _matrix(a, features(ins[0]))),
]

"""Normalization, learned scales and regularizers: bn, layernorm, layerscale, lrn, dropout,
droppath. Their scale/shift vectors are params but not weights; no MACs."""

from __future__ import annotations

import math

from .core import FOR_WEIGHTS, AttrSpec, Keeps, OpDef, Shape
from .shapes import features, positions


def scale_shape(ins: list[Shape]) -> Shape:
    """layerscale's per-feature tensor, shaped to broadcast (torchvision: C×1×1 for maps)."""
    n = features(ins[0])
    return (n, 1, 1) if len(ins[0]) == 3 else (n,)


def _norm_tensors(a: dict, ins: list[Shape], out: Shape) -> dict[str, Shape]:
    n = features(ins[0])
    return {"weight": (n,), "bias": (n,)}


def _keeps_dropped(a: dict, ins: list[Shape], out: Shape) -> int:
    # PyTorch's CPU dropout keeps a mask of the activation dtype (CUDA's: 1 byte a value)
    return math.prod(out) if a["p"] > 0 else 0


NORM_OPS = [
    OpDef("bn", "norm", "batch normalization (inference: scale and shift per channel)",
          attrs={"eps": AttrSpec("float", 1e-5, 0), "momentum": AttrSpec("float", 0.1, 0)},
          cancels_bias=True, biases=lambda a, ins, out: 2 * ins[0][0],
          keeps=Keeps(("inputs", "extra"), ("inputs", "extra"),
                      per_batch=lambda a, ins, out: 2 * ins[0][0]),
          tensors=lambda a, ins, out: {k: (ins[0][0],) for k in (
              "weight", "bias", "running_mean", "running_var")}),
    OpDef("layernorm", "norm",
          "layer normalization with a learned scale and shift per feature: over the channels "
          "of each pixel of a C×H×W map (ConvNeXt), the features of each token (ViT), or a "
          "vector: layernorm eps=1e-6",
          attrs={"eps": AttrSpec("float", 1e-5, 0)},
          biases=lambda a, ins, out: 2 * features(ins[0]), tensors=_norm_tensors,
          keeps=Keeps(("inputs", "extra"), ("inputs", "extra"),  # and a mean and 1/σ each
                      extra=lambda a, ins, out: 2 * positions(ins[0]))),
    OpDef("layerscale", "scale",
          "a learned scale per feature, initialised to `init` (CaiT, ConvNeXt): layerscale(1e-6)",
          attrs={"init": AttrSpec("float", 1e-6, doc="initial value of every scale")},
          positional=("init",), weights=lambda a, ins, out: features(ins[0]),
          keeps=FOR_WEIGHTS, tensors=lambda a, ins, out: {"": scale_shape(ins)}),
    OpDef("lrn", "norm", "local response normalization across channels (Krizhevsky et al.)",
          attrs={"size": AttrSpec("int", 5, 1), "alpha": AttrSpec("float", 1e-4),
                 "beta": AttrSpec("float", 0.75), "k": AttrSpec("float", 2.0)},
          # PyTorch's LocalResponseNorm is a composite: it keeps the squares padded by the
          # window across channels, and the power's base and result
          positional=("size",), keeps=Keeps(("inputs", "extra"), extra=lambda a, ins, out: (
              (out[0] + a["size"] - 1 + 2 * out[0]) * math.prod(out[1:])))),
    OpDef("dropout", "regularizer", "dropout (identity at inference): dropout, dropout(0.4)",
          attrs={"p": AttrSpec("float", 0.5, 0, maximum=1)}, positional=("p",),
          makes_units=False, keeps=Keeps(("extra",), extra=_keeps_dropped)),
    OpDef("droppath", "regularizer",
          "stochastic depth: drops a residual branch per sample in training (identity at "
          "inference): droppath(0.2)",
          attrs={"p": AttrSpec("float", 0.0, 0, maximum=1)}, positional=("p",),
          makes_units=False,  # keeps one mask value per sample
          keeps=Keeps(("extra",), extra=lambda a, ins, out: 1 if a["p"] > 0 else 0)),
]

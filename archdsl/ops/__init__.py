"""ONE declaration per op kind: its attributes, shape rule and counts.

The declarations live by family (conv.py, pool.py, norm.py, activations.py, channels.py,
sequence.py, swin.py), the `OpDef` they are made of in core.py and the shape helpers they
share in shapes.py; this module gathers them into `OPS`, the one table every pass reads.

Analysis and every backend ask these declarations; nothing else switches on op names.
Counting conventions (Grosse & Ba, CSC421 "Convolutional networks", and DESIGN.md):

- units: output activations of a layer, C·H·W per image (0 for ops that only re-view or route
  data: flatten, tokens, token, slice, channel_shuffle, concat, dropout).
- weights: multiplicative weights only (Kh·Kw·Cin/groups·Cout for conv, in·out for FC, 4·D² for
  attention's projections, one per feature for a layer scale, prelu's learned slopes) and
  learned embeddings (class token, position embedding).
- params: every trainable parameter: weights + biases + normalization scale/shift.
- connections: units × fan-in, for conv (Kh·Kw·Cin/groups), FC (in) and pooling windows
  (Kh·Kw).
- MACs: multiply-accumulates of weighted layers (the MobileNet paper's Mult-Adds,
  torchvision's "GFLOPS"); for attention the projections plus QKᵀ and A·V (L²·D each);
  FLOPs = 2 × MACs.
"""

from __future__ import annotations

import functools

from ..windows import pair
from .activations import ACTIVATION_OPS
from .channels import CHANNEL_OPS, JOIN_OPS, chunk_bounds
from .conv import CONV_OPS
from .core import REQUIRED, AttrSpec, Keeps, OpDef, OpShapeError, Shape
from .norm import NORM_OPS, scale_shape
from .pool import POOL_OPS
from .sequence import SEQUENCE_OPS
from .shapes import axes, features, fmt_axes, fmt_shape, kernel_area, same_pad

__all__ = [
    "ACTIVATION_OPS", "ALIASES", "ATTR_SPELLINGS", "CHANNEL_OPS", "OPS", "REQUIRED", "AttrSpec",
    "Keeps", "OpDef", "OpShapeError", "Shape", "attachable", "axes", "cached_on_ops",
    "chunk_bounds", "features", "fmt_axes", "fmt_shape", "kernel_area", "lookup", "ops_changed",
    "pair", "same_pad", "scale_shape", "spellings", "syntax_names",
]

INPUT = OpDef("input", "source", "the network's input", attrs={"shape": AttrSpec("shape")},
              arity=(0, 0), in_syntax=False, makes_units=False, shape=lambda a, ins: a["shape"])

OPS: dict[str, OpDef] = {op.name: op for op in [
    INPUT, *CONV_OPS, *POOL_OPS, *NORM_OPS, *ACTIVATION_OPS, *CHANNEL_OPS, *SEQUENCE_OPS,
    *JOIN_OPS,
]}

# Other spellings people use for the same op (papers, PyTorch, Keras).
ALIASES: dict[str, str] = {
    "dense_layer": "fc", "ln": "layernorm", "layer_norm": "layernorm",
    "layer_scale": "layerscale", "mhsa": "attention", "self_attention": "attention",
    "cls_token": "class_token", "position_embedding": "pos_embedding",
    "batchnorm": "bn", "soft-max": "softmax",
    "silu": "swish", "hard_swish": "hardswish", "hswish": "hardswish",
    "hard_sigmoid": "hardsigmoid", "hsigmoid": "hardsigmoid", "hard_tanh": "hardtanh",
    "leaky_relu": "leakyrelu", "lrelu": "leakyrelu", "logsoftmax": "log_softmax",
    "log_sigmoid": "logsigmoid", "globalavgpool": "gap", "global_avgpool": "gap", "gavgpool": "gap",
    "global_maxpool": "gmp", "max_pool": "maxpool", "avg_pool": "avgpool",
    "depthwise": "dwconv", "stochastic_depth": "droppath", "drop_path": "droppath",
    "shifted_window_attention": "window_attention", "w_msa": "window_attention",
    "window_msa": "window_attention", "patch_merge": "patch_merging",
    "untokens": "grid", "to_map": "grid",
}

# Attribute names other tools use, and how archdsl writes them (a hint on an unknown attribute).
ATTR_SPELLINGS: dict[str, str] = {
    **dict.fromkeys(("kh", "kw", "kernel_h", "kernel_w", "kernel_size", "kernel"),
                    "the kernel is `k`, one number or one per axis: k=3, k=1x7 (or conv1x7-C)"),
    **dict.fromkeys(("padding", "pad_h", "pad_w", "ph", "pw"),
                    "padding is `pad`: same, valid, a number or one per axis: pad=0,3"),
    **dict.fromkeys(("strides", "stride_h", "stride_w", "sh", "sw"),
                    "the stride is `/S` or `stride`, one per axis: stride=1x2"),
    "out_channels": "output channels are written `-N` (conv3-64) or `out=N`",
    "out_features": "output features are written `-N` (FC-1000) or `out=N`",
    "num_groups": "groups are `groups=G`",
    "shuffle": "a channel shuffle is a layer of its own: channel_shuffle(G)",
}

@functools.cache
def attachable(key: str | None = None) -> tuple[str, ...]:
    """The ops `norm=` (key "norm") or `act=` (key "act") may name; both without a key.
    (Asked for every layer: cached, and forgotten when an op is registered: `ops_changed`.)"""
    categories = ("norm", "act") if key is None else (key,)
    return tuple(n for n, op in OPS.items() if op.category in categories and op.in_syntax)


_CACHED: list = [attachable]


def cached_on_ops(fn):
    """A function of the registered ops alone, computed once until an op is registered or
    removed (archdsl.plugins calls `ops_changed`)."""
    fn = functools.cache(fn)
    _CACHED.append(fn)
    return fn


def ops_changed() -> None:
    for fn in _CACHED:
        fn.cache_clear()


def lookup(name: str) -> OpDef | None:
    """The op a written name means (case-insensitive, aliases allowed), or None."""
    key = name.lower()
    return OPS.get(ALIASES.get(key, key))


def spellings(names) -> list[str]:
    """Each op name followed by its other spellings (`swish`, `silu`): the lists that
    messages and docs give are made from the declarations, so none can miss one."""
    return [w for n in names for w in (n, *(a for a, t in ALIASES.items() if t == n))]


def syntax_names() -> list[str]:
    """Every name a spec may write for an op, for 'did you mean' hints."""
    return sorted([n for n, op in OPS.items() if op.in_syntax] + list(ALIASES))

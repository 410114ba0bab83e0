"""Sequences of tokens (ViT, Swin) and the ops that re-view data between maps, sequences and
vectors: flatten, tokens, grid, token; class token, position embedding, global attention."""

from __future__ import annotations

import math

from .core import REQUIRED, AttrSpec, Keeps, OpDef, OpShapeError, Shape
from .shapes import sequence, spatial
from .swin import WINDOW_OPS


def _flatten_shape(a: dict, ins: list[Shape]) -> Shape:
    return (math.prod(ins[0]),)


def _tokens_shape(a: dict, ins: list[Shape]) -> Shape:
    c, h, w = spatial(ins, "tokens")
    return (h * w, c)


def _grid_shape(a: dict, ins: list[Shape]) -> Shape:
    """L×D tokens → a D×H×W map, row by row (the inverse of `tokens`); H and W default to
    √L."""
    n, d = sequence(ins, "grid")
    h, w = a["h"], a["w"]
    if h is None and w is None:
        h = w = math.isqrt(n)
        if h * h != n:
            raise OpShapeError(f"{n} tokens are not a square grid",
                               "give the map's height and width: grid(h, w) with h·w = "
                               f"{n} (drop a class token first)")
    elif h is None or w is None:
        h, w = (n // w, w) if h is None else (h, n // h)
    if h * w != n:
        raise OpShapeError(f"a {h}×{w} grid holds {h * w} tokens, the sequence has {n}",
                           f"give a height and width whose product is {n}")
    return (d, h, w)


def _class_token_shape(a: dict, ins: list[Shape]) -> Shape:
    n, d = sequence(ins, "class_token")
    return (n + 1, d)


def _attention_shape(a: dict, ins: list[Shape]) -> Shape:
    n, d = sequence(ins, "attention")
    if d % a["heads"]:
        raise OpShapeError(f"{a['heads']} heads must divide the {d} features of each token")
    return ins[0]


def _attention_macs(a: dict, ins: list[Shape], out: Shape) -> int:
    """Q, K, V projections (3·L·D²), QKᵀ and A·V (L²·D each: every head's L×L scores over
    D/heads features), output projection (L·D²) — what torchvision's counts include."""
    n, d = ins[0]
    return 4 * n * d * d + 2 * n * n * d


def _token_shape(a: dict, ins: list[Shape]) -> Shape:
    n, d = sequence(ins, "token")
    if not 0 <= a["index"] < n:
        raise OpShapeError(f"token {a['index']} does not exist: the sequence has {n} tokens")
    return (d,)


def _attention_kept(a: dict, ins: list[Shape], out: Shape) -> int:
    """Q, K, V and the heads' output (L·D each) and one log-sum-exp per head and token, as
    PyTorch's fused attention keeps them (without attention dropout)."""
    n, d = ins[0]
    return 4 * n * d + a["heads"] * n


# in this order in OPS (and `archdsl ops`): Swin's ops after global attention
SEQUENCE_OPS = [
    OpDef("flatten", "shape", "flatten C×H×W to a vector", shape=_flatten_shape,
          makes_units=False, view=True),
    OpDef("tokens", "shape",
          "a C×H×W map as a sequence of H·W tokens of C features (row by row; ViT's patches)",
          shape=_tokens_shape, makes_units=False, view=True),
    OpDef("class_token", "sequence",
          "prepends a learned token to an L×D sequence (BERT's [class], ViT): L+1 × D",
          shape=_class_token_shape, makes_units=False,
          weights=lambda a, ins, out: ins[0][1],
          tensors=lambda a, ins, out: {"": (1, 1, ins[0][1])}),
    OpDef("pos_embedding", "sequence",
          "adds a learned position embedding, one D-vector per token of an L×D sequence",
          shape=lambda a, ins: sequence(ins, "pos_embedding"),
          weights=lambda a, ins, out: math.prod(ins[0]),
          tensors=lambda a, ins, out: {"": (1, *ins[0])}),
    OpDef("attention", "attention",
          "multi-head self-attention over an L×D sequence (Vaswani et al.): Q, K, V and output "
          "projections with biases, softmax(QKᵀ/√(D/heads))·V per head: attention(12)",
          attrs={"heads": AttrSpec("int", REQUIRED, 1, doc="attention heads (divide D)"),
                 "dropout": AttrSpec("float", 0.0, 0, maximum=1,
                                     doc="dropout on the attention weights (training)")},
          positional=("heads",), shape=_attention_shape,
          weights=lambda a, ins, out: 4 * ins[0][1] ** 2,
          biases=lambda a, ins, out: 4 * ins[0][1],
          total_connections=_attention_macs, weighted=True,
          keeps=Keeps(("extra",), ("inputs", "extra"), extra=_attention_kept),
          tensors=lambda a, ins, out: {
              "in_proj_weight": (3 * ins[0][1], ins[0][1]), "in_proj_bias": (3 * ins[0][1],),
              "out_proj.weight": (ins[0][1], ins[0][1]), "out_proj.bias": (ins[0][1],)}),
    *WINDOW_OPS,
    OpDef("grid", "shape",
          "L×D tokens back to a D×H×W map, row by row (the inverse of `tokens`): grid, "
          "grid(14), grid(7, 28)",
          attrs={"h": AttrSpec("int", None, 1, doc="rows; default √L"),
                 "w": AttrSpec("int", None, 1, doc="columns; default L/h")},
          positional=("h", "w"), shape=_grid_shape, makes_units=False),
    OpDef("token", "shape", "one token of an L×D sequence as a D-vector: token(0)",
          attrs={"index": AttrSpec("int", REQUIRED, 0)}, positional=("index",),
          shape=_token_shape, makes_units=False, view=True),
]

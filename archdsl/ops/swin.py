"""Swin's ops on C×H×W maps (Liu et al. 2021; v2: Liu et al. 2022): window attention with
shift, mask and relative position bias — also MaxViT's block and grid attention (Tu et al.
2022) — and patch merging; keyed as torchvision's modules."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..windows import (
    MAX_WINDOW_TOKENS,
    WindowPlan,
    pair,
    relative_coords_table,
    relative_position_index,
    table_rows,
)
from .core import REQUIRED, AttrSpec, Keeps, OpDef, OpShapeError, Shape
from .shapes import spatial


def _window_plan(a: dict, ins: list[Shape]) -> WindowPlan:
    c, h, w = ins[0]
    return WindowPlan((h, w), pair(a["window"]), pair(a["shift"]), a["partition"])


# The names of the qkv and output projections in the state_dict, by `keys`: torchvision's
# ShiftedWindowAttention (Swin) and RelativePositionalMultiHeadAttention (MaxViT)
PROJECTIONS = {"swin": ("qkv", "proj"), "maxvit": ("to_qkv", "merge")}


def _window_attention_shape(a: dict, ins: list[Shape]) -> Shape:
    c = spatial(ins, "window_attention")[0]
    if c % a["heads"]:
        raise OpShapeError(f"{a['heads']} heads must divide the {c} channels")
    window = pair(a["window"])
    if window[0] * window[1] > MAX_WINDOW_TOKENS:
        raise OpShapeError(f"a {window[0]}×{window[1]} window holds {window[0] * window[1]:,} "
                           f"tokens, more than archdsl's limit of {MAX_WINDOW_TOKENS:,}",
                           "windows are bounded (archdsl/windows.py): their relative-position "
                           "index grows as the square of the tokens")
    if a["partition"] == "grid":
        _check_grid(ins[0][1:], window, pair(a["shift"]))
    for axis, win, shift in zip(("height", "width"), window, pair(a["shift"]), strict=True):
        if shift >= win:
            raise OpShapeError(f"a shift of {shift} is not smaller than the window's {axis} "
                               f"{win}", "Swin shifts by half the window (shift=window//2)")
    return ins[0]


def _check_grid(size: tuple[int, ...], window: tuple[int, int], shift: tuple[int, int]) -> None:
    """A grid's windows stride across the whole map: it must divide evenly, and is not shifted."""
    for axis, n, win in zip(("height", "width"), size, window, strict=True):
        if n % win:
            raise OpShapeError(f"a grid of {window[0]}×{window[1]} does not divide the map's "
                               f"{axis} {n}", "grid attention needs a map whose height and "
                               "width are multiples of the window (MaxViT's input size rule)")
    if any(shift):
        raise OpShapeError("grid attention is not shifted", "leave shift at 0 with partition=grid")


def _window_attention_macs(a: dict, ins: list[Shape], out: Shape) -> int:
    """Over the padded map of P positions in windows of N tokens: the Q, K, V and output
    projections (4·P·C²), and in every window QKᵀ and A·V (N²·C each, over all heads:
    2·P·N·C in all) — torchvision's swin_t/s/b GFLOPS (4.491, 8.741, 15.431) exactly. Swin v2's
    position-bias MLP runs on every forward pass and is counted too (its 5.940, 11.546, 20.325);
    the bias and mask additions, softmax and v2's normalizations are not multiply-adds."""
    plan = _window_plan(a, ins)
    c = ins[0][0]
    positions = plan.padded[0] * plan.padded[1]
    macs = positions * (4 * c * c + 2 * plan.tokens * c)
    if a["position_bias"] == "mlp":
        hidden = a["mlp_hidden"]
        macs += table_rows(plan.window) * (2 * hidden + hidden * a["heads"])
    return macs


def _window_attention_kept(a: dict, ins: list[Shape], out: Shape) -> int:
    """What torchvision's shifted_window_attention keeps, per image, over the P positions of
    the padded map in windows of N tokens: the qkv projection's input, Q, K and V, the
    output projection's input (P·C each) and the attention weights (P·N per head); v2's
    cosine attention also Q, K and V as one tensor, normalized Q and K with their norms, and
    the unscaled weights (measured: tests/backends/test_training_memory.py)."""
    plan = _window_plan(a, ins)
    positions, c, heads = plan.padded[0] * plan.padded[1], ins[0][0], a["heads"]
    kept = 5 * positions * c + positions * plan.tokens * heads
    if a["cosine"]:
        kept += 3 * positions * c + 4 * positions * heads + positions * plan.tokens * heads
    return kept


def _window_attention_per_batch(a: dict, ins: list[Shape], out: Shape) -> int:
    """v2's position-bias MLP runs once per batch: its hidden layer over the offset table,
    the bias it makes (per head, N×N) and the logit scale."""
    if a["position_bias"] != "mlp":
        return 0
    plan = _window_plan(a, ins)
    return table_rows(plan.window) * a["mlp_hidden"] + a["heads"] * (plan.tokens ** 2 + 1)


def _window_attention_tensors(a: dict, ins: list[Shape], out: Shape) -> dict[str, Shape]:
    """Keyed and ordered as torchvision's ShiftedWindowAttention(V2) state_dict: the module's
    own parameters (v1's relative-position table; v2's logit scale), its buffers (v2's
    log-spaced offsets; the table index), then qkv, proj and v2's position-bias MLP."""
    c, heads, hidden, bias = ins[0][0], a["heads"], a["mlp_hidden"], a["bias"]
    window = pair(a["window"])
    n, position = window[0] * window[1], a["position_bias"]
    t: dict[str, Shape] = {}
    if position == "table":
        t["relative_position_bias_table"] = (table_rows(window), heads)
    if a["cosine"]:
        t["logit_scale"] = (heads, 1, 1)
    if position == "mlp":
        t["relative_coords_table"] = (1, 2 * window[0] - 1, 2 * window[1] - 1, 2)
    if position != "none":  # MaxViT's index buffer is N×N, Swin's flat
        t["relative_position_index"] = (n, n) if a["keys"] == "maxvit" else (n * n,)
    qkv, proj = PROJECTIONS[a["keys"]]
    t[f"{qkv}.weight"] = (3 * c, c)
    t.update({f"{qkv}.bias": (3 * c,)} if bias else {})
    t[f"{proj}.weight"] = (c, c)
    t.update({f"{proj}.bias": (c,)} if bias else {})
    if position == "mlp":
        t.update({"cpb_mlp.0.weight": (hidden, 2), "cpb_mlp.0.bias": (hidden,),
                  "cpb_mlp.2.weight": (heads, hidden)})
    return t


def _window_attention_derived(a: dict, ins: list[Shape], out: Shape) -> dict[str, tuple]:
    window = pair(a["window"])
    if a["position_bias"] == "none":
        return {}
    derived: dict[str, tuple] = {"relative_position_index": relative_position_index(window)}
    if a["position_bias"] == "mlp":
        derived["relative_coords_table"] = relative_coords_table(window)
    return derived


_WINDOW_BUFFERS = ("relative_position_index", "relative_coords_table")


def _learned(kind: str) -> Callable[[dict, list[Shape], Shape], int]:
    """Window attention's weights (learned tensors of 2+ dimensions) or biases (vectors): every
    declared tensor but the buffers computed from the window."""
    def count(a: dict, ins: list[Shape], out: Shape) -> int:
        return sum(math.prod(shape) for key, shape in _window_attention_tensors(a, ins, out).items()
                   if key not in _WINDOW_BUFFERS and (len(shape) >= 2) == (kind == "weights"))
    return count


def _merge_shape(a: dict, ins: list[Shape]) -> Shape:
    c, h, w = spatial(ins, "patch_merging")
    return (a["out"], -(-h // 2), -(-w // 2))


def _merge_prepare(a: dict, ins: list[Shape]) -> tuple[str, dict]:
    a = dict(a)
    if a["out"] is None:
        a["out"] = 2 * spatial(ins, "patch_merging")[0]
    return "patch_merging", a


def _merge_tensors(a: dict, ins: list[Shape], out: Shape) -> dict[str, Shape]:
    """torchvision's PatchMerging(V2): `reduction` (4C → out, no bias), then `norm` over 4C
    features (v1, before the reduction) or over the outputs (v2, after it)."""
    c = ins[0][0]
    n = a["out"] if a["post_norm"] else 4 * c
    return {"reduction.weight": (a["out"], 4 * c), "norm.weight": (n,), "norm.bias": (n,)}


WINDOW_OPS = [
    OpDef("window_attention", "attention",
          "multi-head self-attention within windows of a C×H×W map (Swin, Liu et al. 2021), "
          "the map zero-padded to whole windows and, with a shift, rolled cyclically and "
          "masked between regions, or (partition=grid, MaxViT) a grid of windows strided "
          "across the map; a learned bias per relative position and head: "
          "window_attention(3) window=7 shift=3",
          attrs={"heads": AttrSpec("int", REQUIRED, 1, doc="attention heads (divide C)"),
                 "window": AttrSpec("pair", 7, 1, doc="window size: N or [height, width]"),
                 "shift": AttrSpec("pair", 0, 0, doc="cyclic shift: N or [down, across]"),
                 "bias": AttrSpec("bool", True, doc="biases on the qkv and output projections"),
                 "position_bias": AttrSpec("choice", "table", choices=("table", "mlp", "none"),
                                           doc="table: learned per offset (v1); mlp: Swin v2's "
                                               "continuous position bias"),
                 "mlp_hidden": AttrSpec("int", 512, 1, doc="width of v2's position-bias MLP"),
                 "cosine": AttrSpec("bool", False,
                                    doc="Swin v2's scaled cosine attention (learned per head)"),
                 "partition": AttrSpec("choice", "window", choices=("window", "grid"),
                                       doc="window: blocks of adjacent positions; grid: a "
                                           "window×window grid strided across the map "
                                           "(MaxViT's grid attention)"),
                 "scale": AttrSpec("choice", "head", choices=("head", "channels"),
                                   doc="scores scaled by 1/sqrt(C/heads), or by 1/sqrt(C) as "
                                       "torchvision's MaxViT does"),
                 "keys": AttrSpec("choice", "swin", choices=tuple(PROJECTIONS),
                                  doc="state_dict keys as torchvision's Swin (qkv, proj) or "
                                      "MaxViT (to_qkv, merge; an N×N index)"),
                 "dropout": AttrSpec("float", 0.0, 0, maximum=1,
                                     doc="dropout on the attention weights (training)"),
                 "proj_dropout": AttrSpec("float", 0.0, 0, maximum=1,
                                          doc="dropout after the output projection (training)")},
          positional=("heads",), shape=_window_attention_shape,
          weights=_learned("weights"), biases=_learned("biases"),
          total_connections=_window_attention_macs, weighted=True,
          tensors=_window_attention_tensors, derived=_window_attention_derived,
          keeps=Keeps(("extra",), ("extra",), extra=_window_attention_kept,
                      per_batch=_window_attention_per_batch)),
    OpDef("patch_merging", "linear",
          "Swin's patch merging: each 2×2 neighbourhood of a C×H×W map concatenated (4C), layer "
          "normalization, a linear reduction without bias to `out` (default 2C); odd sizes "
          "zero-padded: patch_merging, patch_merging post_norm=true (v2: the norm after)",
          attrs={"out": AttrSpec("int", None, 1, doc="output channels; default 2C"),
                 "post_norm": AttrSpec("bool", False,
                                       doc="normalize after the reduction (Swin v2)"),
                 "eps": AttrSpec("float", 1e-5, 0)},
          dash="out", prepare=_merge_prepare, shape=_merge_shape,
          weights=lambda a, ins, out: 4 * ins[0][0] * a["out"],
          biases=lambda a, ins, out: 2 * (a["out"] if a["post_norm"] else 4 * ins[0][0]),
          fan_in=lambda a, ins, out: 4 * ins[0][0], weighted=True, tensors=_merge_tensors,
          # the 2×2 neighbourhoods concatenated (once), what the norm normalizes with its
          # mean and 1/σ per position, and (v2) the reduction's output the norm reads
          keeps=Keeps(("extra",), ("extra",), extra=lambda a, ins, out: (
              math.prod(out) if a["post_norm"] else 4 * ins[0][0] * out[1] * out[2])
              + 4 * ins[0][0] * out[1] * out[2] + 2 * out[1] * out[2])),
]

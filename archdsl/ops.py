"""ONE declaration per op kind: its attributes, shape rule and counts.

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
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .windows import (
    MAX_WINDOW_TOKENS,
    WindowPlan,
    pair,
    relative_coords_table,
    relative_position_index,
    table_rows,
)

Shape = tuple[int, ...]
REQUIRED = object()


class OpShapeError(Exception):
    """Raised by a shape rule; the elaborator adds the location and the producing layer."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class AttrSpec:
    """An attribute: its type (int, float, bool, pad, choice, act, norm), default and range."""

    type: str
    default: Any = REQUIRED
    minimum: float | None = None
    choices: tuple = ()
    maximum: float | None = None
    doc: str = ""


def _nothing(a: dict, ins: list[Shape], out: Shape) -> int:
    return 0


@dataclass(frozen=True)
class Keeps:
    """What an op keeps for its backward pass when it trains, as PyTorch's autograd does
    (measured with saved_tensors_hooks; tests/backends/test_training_memory.py): what the
    gradient of its input needs (`for_input`), and what the gradients of its own parameters
    need (`for_params`) — "inputs" (its input tensors), "output", "extra" (tensors of its
    own: `extra` values per image in the activation dtype plus `extra_bytes` per image, such
    as max pooling's int64 indices, and `per_batch` values however large the batch: batch
    norm's batch mean and 1/σ)."""

    for_input: tuple[str, ...] = ()
    for_params: tuple[str, ...] = ()
    extra: Callable[[dict, list[Shape], Shape], int] = _nothing
    extra_bytes: Callable[[dict, list[Shape], Shape], int] = _nothing
    per_batch: Callable[[dict, list[Shape], Shape], int] = _nothing


_INPUTS = Keeps(("inputs",))
_OUTPUT = Keeps(("output",))
_FOR_WEIGHTS = Keeps((), ("inputs",))  # conv/FC/linear: their input, for the weight gradient


@dataclass(frozen=True)
class OpDef:
    name: str
    # conv | linear | attention | pool | norm | scale | act | regularizer | shape | sequence |
    # join | source
    category: str
    doc: str
    attrs: dict[str, AttrSpec] = field(default_factory=dict)
    shape: Callable[[dict, list[Shape]], Shape] = lambda a, ins: ins[0]
    positional: tuple[str, ...] = ()  # order of call arguments: dropout(0.5), lrn(5)
    kernel: str | None = None  # attribute set by a digit suffix: conv3 → k=3
    dash: str | None = None  # attribute set by "-N": conv3-64 → out=64
    slash: str | None = None  # attribute set by "/S": maxpool3/2 → stride=2
    attaches: bool = False  # takes norm=/act= (emitted as separate nodes after it)
    # which of norm=/act= a network `defaults` line gives it: papers normalize convolutions,
    # almost never the classifier, so FC takes a norm only when one is written on it
    default_attach: tuple[str, ...] = ("norm", "act")
    arity: tuple[int, int] = (1, 1)  # (min, max) inputs; max 0 = unbounded
    in_syntax: bool = True  # can be written as a layer (joins come from add/concat/mul {...})
    prepare: Callable[[dict, list[Shape]], tuple[str, dict]] | None = None
    lowers_to: str | None = None  # the op `prepare` turns this one into (dwconv → conv)
    weights: Callable[[dict, list[Shape], Shape], int] = lambda a, ins, out: 0
    biases: Callable[[dict, list[Shape], Shape], int] = lambda a, ins, out: 0
    fan_in: Callable[[dict, list[Shape], Shape], int] = lambda a, ins, out: 0
    # for ops whose windows differ in size (adaptive pooling): the exact total
    total_connections: Callable[[dict, list[Shape], Shape], int] | None = None
    makes_units: bool = True
    weighted: bool = False  # MACs = connections
    # subtracts a per-channel mean (batch norm): a bias on the layer before has no effect, so
    # `bias=auto` there means none, even when the norm is written as a layer of its own
    cancels_bias: bool = False
    # the tensors a layer holds at inference, suffix → shape, keyed like PyTorch's state_dict
    # ("weight", "running_mean", "out_proj.weight"; "" is a tensor registered under the
    # layer's own name, like torchvision's `class_token`); backends and tests read this
    tensors: Callable[[dict, list[Shape], Shape], dict[str, Shape]] = lambda a, ins, out: {}
    # a layer that is valid but probably not what was meant: (warning, hint) or None
    advice: Callable[[dict, list[Shape]], tuple[str, str] | None] | None = None
    # those of `tensors` that are computed from the attributes rather than learned (buffers
    # like Swin's relative_position_index): suffix → values, flat and row-major
    derived: Callable[[dict, list[Shape], Shape], dict[str, tuple]] = lambda a, ins, out: {}
    # a user-defined op's own lowerings, by backend ("pytorch", "tvm"); the built-in ops'
    # are in each backend's table (archdsl.plugins.register_op)
    lowerings: dict[str, Callable] = field(default_factory=dict)
    keeps: Keeps = Keeps()  # what it keeps for backward in training
    view: bool = False  # its output is a view of its input (no memory of its own)

    def params(self, attrs: dict, ins: list[Shape], out: Shape) -> int:
        return self.weights(attrs, ins, out) + self.biases(attrs, ins, out)

    def units(self, out: Shape) -> int:
        return math.prod(out) if self.makes_units else 0

    def connections(self, attrs: dict, ins: list[Shape], out: Shape) -> int:
        if self.total_connections is not None:
            return self.total_connections(attrs, ins, out)
        return self.units(out) * self.fan_in(attrs, ins, out)

    def macs(self, attrs: dict, ins: list[Shape], out: Shape) -> int:
        return self.connections(attrs, ins, out) if self.weighted else 0


# ---------------------------------------------------------------- shape helpers

def _of_rank(ins: list[Shape], rank: int, needs: str, hint: str) -> Shape:
    if len(ins[0]) != rank:
        raise OpShapeError(f"{needs}, got {fmt_shape(ins[0])}", hint)
    return ins[0]


def _spatial(ins: list[Shape], op: str) -> tuple[int, int, int]:
    """The C×H×W map an op needs; a sequence or a vector is refused with the way back."""
    if len(ins[0]) == 2:
        raise OpShapeError(
            f"{op} needs a C×H×W map, got {fmt_shape(ins[0])}: a sequence of {ins[0][0]} tokens "
            f"of {ins[0][1]} features",
            "turn the tokens back into a map first: `grid` makes L×D a D×H×W map "
            "(`grid(h, w)` when it is not square)")
    return _of_rank(ins, 3, f"{op} needs a C×H×W input",  # type: ignore[return-value]
                    "a flattened tensor cannot be convolved or pooled; "
                    "move this layer before the FC/flatten")


def _window(size: int, k: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    span = dilation * (k - 1) + 1
    num = size + 2 * pad - span
    if num < 0:
        return 0
    out = (-(-num // stride) if ceil else num // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1  # PyTorch: the last window must start inside the input or left padding
    return out


def _conv_like(a: dict, ins: list[Shape], op: str, channels: int) -> Shape:
    c, h, w = _spatial(ins, op)
    (kh, kw), (sh, sw), (ph, pw) = pair(a["k"]), pair(a["stride"]), pair(a["pad"])
    dh, dw = pair(a.get("dilation", 1))
    ceil = a.get("ceil", False)
    ho, wo = _window(h, kh, sh, ph, dh, ceil), _window(w, kw, sw, pw, dw, ceil)
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


def _resolve_pad(a: dict) -> dict:
    pad = a["pad"]
    if pad == "same":
        a["pad"] = same_pad(a)
    elif pad == "valid":
        a["pad"] = 0
    return a


def kernel_area(a: dict) -> int:
    kh, kw = pair(a["k"])
    return kh * kw


# ---------------------------------------------------------------- conv / fc

def _conv_prepare(a: dict, ins: list[Shape]) -> tuple[str, dict]:
    return "conv", _resolve_pad(a)


def _dwconv_prepare(a: dict, ins: list[Shape]) -> tuple[str, dict]:
    c = _spatial(ins, "dwconv")[0]
    a = dict(a)
    a["groups"] = c
    if a.get("out") is None:
        a["out"] = c
    return "conv", _resolve_pad(a)


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
    c = _spatial(ins, "conv")[0]
    g = a["groups"]
    if c % g or a["out"] % g:
        raise OpShapeError(
            f"groups={g} must divide both input channels ({c}) and output channels ({a['out']})")
    return _conv_like(a, ins, "conv", a["out"])


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


# ---------------------------------------------------------------- pooling

def _pool_prepare(name: str) -> Callable[[dict, list[Shape]], tuple[str, dict]]:
    def prepare(a: dict, ins: list[Shape]) -> tuple[str, dict]:
        a = dict(a)
        if a["stride"] is None:
            a["stride"] = a["k"]
        return name, _resolve_pad(a)
    return prepare


def _pool_shape(a: dict, ins: list[Shape]) -> Shape:
    c = _spatial(ins, "pooling")[0]
    if any(p * 2 > k for p, k in zip(pair(a["pad"]), pair(a["k"]), strict=True)):
        raise OpShapeError(f"pooling padding {fmt_axes(a['pad'], ',')} is more than half the "
                           f"window {fmt_axes(a['k'])}")
    return _conv_like(a, ins, "pooling", c)


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
    return (_spatial(ins, "global pooling")[0], 1, 1)


def _global_fan_in(a: dict, ins: list[Shape], out: Shape) -> int:
    """Positions pooled per output: H·W of a map, L of a sequence."""
    return math.prod(ins[0]) // features(ins[0])


def _adaptive_window_sum(size: int, out: int) -> int:
    """Σ over PyTorch's adaptive windows [floor(i·size/out), ceil((i+1)·size/out)) of their
    lengths, in closed form: size + out − gcd(size, out) (ceil = floor + 1 except where out
    divides i·size, which happens gcd(size, out) times for i in 1..out)."""
    return size + out - math.gcd(size, out)


def _adaptive_shape(a: dict, ins: list[Shape]) -> Shape:
    c, h, w = _spatial(ins, "adaptive pooling")
    return (c, *pair(a["size"]))


def _adaptive_connections(a: dict, ins: list[Shape], out: Shape) -> int:
    # PyTorch's adaptive windows differ in size; sum them exactly over all units
    c, h, w = ins[0]
    oh, ow = pair(a["size"])
    return c * _adaptive_window_sum(h, oh) * _adaptive_window_sum(w, ow)


# ---------------------------------------------------------------- features, tokens

def features(shape: Shape) -> int:
    """The feature dimension a per-position op (linear, layernorm, layerscale) works on: the
    channels of a C×H×W map (at every pixel), the features of an L×D sequence (every token),
    or the length of a vector."""
    return shape[0] if len(shape) in (1, 3) else shape[-1]


def _with_features(shape: Shape, n: int) -> Shape:
    return (n, *shape[1:]) if len(shape) in (1, 3) else (*shape[:-1], n)


def _sequence(ins: list[Shape], op: str) -> tuple[int, int]:
    return _of_rank(ins, 2, f"{op} needs a sequence of tokens (L×D)",  # type: ignore[return-value]
                    "make tokens from a feature map first: `tokens` turns C×H×W "
                    "into H·W tokens of C features")


def _linear_shape(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) not in (1, 2, 3):
        raise OpShapeError(f"linear needs a vector, L×D tokens or a C×H×W map, "
                           f"got {fmt_shape(ins[0])}")
    return _with_features(ins[0], a["out"])


def _scale_shape(ins: list[Shape]) -> Shape:
    """layerscale's per-feature tensor, shaped to broadcast (torchvision: C×1×1 for maps)."""
    n = features(ins[0])
    return (n, 1, 1) if len(ins[0]) == 3 else (n,)


def _tokens_shape(a: dict, ins: list[Shape]) -> Shape:
    c, h, w = _spatial(ins, "tokens")
    return (h * w, c)


def _grid_shape(a: dict, ins: list[Shape]) -> Shape:
    """L×D tokens → a D×H×W map, row by row (the inverse of `tokens`); H and W default to
    √L."""
    n, d = _sequence(ins, "grid")
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
    n, d = _sequence(ins, "class_token")
    return (n + 1, d)


def _attention_shape(a: dict, ins: list[Shape]) -> Shape:
    n, d = _sequence(ins, "attention")
    if d % a["heads"]:
        raise OpShapeError(f"{a['heads']} heads must divide the {d} features of each token")
    return ins[0]


def _attention_macs(a: dict, ins: list[Shape], out: Shape) -> int:
    """Q, K, V projections (3·L·D²), QKᵀ and A·V (L²·D each: every head's L×L scores over
    D/heads features), output projection (L·D²) — what torchvision's counts include."""
    n, d = ins[0]
    return 4 * n * d * d + 2 * n * n * d


def _window_plan(a: dict, ins: list[Shape]) -> WindowPlan:
    c, h, w = ins[0]
    return WindowPlan((h, w), pair(a["window"]), pair(a["shift"]))


def _window_attention_shape(a: dict, ins: list[Shape]) -> Shape:
    c = _spatial(ins, "window_attention")[0]
    if c % a["heads"]:
        raise OpShapeError(f"{a['heads']} heads must divide the {c} channels")
    window = pair(a["window"])
    if window[0] * window[1] > MAX_WINDOW_TOKENS:
        raise OpShapeError(f"a {window[0]}×{window[1]} window holds {window[0] * window[1]:,} "
                           f"tokens, more than archdsl's limit of {MAX_WINDOW_TOKENS:,}",
                           "windows are bounded (archdsl/windows.py): their relative-position "
                           "index grows as the square of the tokens")
    for axis, win, shift in zip(("height", "width"), window, pair(a["shift"]), strict=True):
        if shift >= win:
            raise OpShapeError(f"a shift of {shift} is not smaller than the window's {axis} "
                               f"{win}", "Swin shifts by half the window (shift=window//2)")
    return ins[0]


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
    if position != "none":
        t["relative_position_index"] = (n * n,)
    t["qkv.weight"] = (3 * c, c)
    t.update({"qkv.bias": (3 * c,)} if bias else {})
    t["proj.weight"] = (c, c)
    t.update({"proj.bias": (c,)} if bias else {})
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
    c, h, w = _spatial(ins, "patch_merging")
    return (a["out"], -(-h // 2), -(-w // 2))


def _merge_prepare(a: dict, ins: list[Shape]) -> tuple[str, dict]:
    a = dict(a)
    if a["out"] is None:
        a["out"] = 2 * _spatial(ins, "patch_merging")[0]
    return "patch_merging", a


def _merge_tensors(a: dict, ins: list[Shape], out: Shape) -> dict[str, Shape]:
    """torchvision's PatchMerging(V2): `reduction` (4C → out, no bias), then `norm` over 4C
    features (v1, before the reduction) or over the outputs (v2, after it)."""
    c = ins[0][0]
    n = a["out"] if a["post_norm"] else 4 * c
    return {"reduction.weight": (a["out"], 4 * c), "norm.weight": (n,), "norm.bias": (n,)}


def _token_shape(a: dict, ins: list[Shape]) -> Shape:
    n, d = _sequence(ins, "token")
    if not 0 <= a["index"] < n:
        raise OpShapeError(f"token {a['index']} does not exist: the sequence has {n} tokens")
    return (d,)


def _norm_tensors(a: dict, ins: list[Shape], out: Shape) -> dict[str, Shape]:
    n = features(ins[0])
    return {"weight": (n,), "bias": (n,)}


def _matrix(a: dict, n_in: int) -> dict[str, Shape]:
    return {"weight": (a["out"], n_in), **({"bias": (a["out"],)} if a["bias"] else {})}


# ---------------------------------------------------------------- joins

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


# ---------------------------------------------------------------- channel routing

def _slice_shape(a: dict, ins: list[Shape]) -> Shape:
    n, start, end = features(ins[0]), a["start"], a["end"]
    if not start < end <= n:
        raise OpShapeError(f"channels {start} to {end} (end excluded) are not a part of the "
                           f"{n} of a {fmt_shape(ins[0])} input",
                           f"give 0 <= start < end <= {n}")
    return _with_features(ins[0], end - start)


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
    c = _spatial(ins, "channel_shuffle")[0]
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


def _flatten_shape(a: dict, ins: list[Shape]) -> Shape:
    return (math.prod(ins[0]),)


def _in_features(ins: list[Shape]) -> int:
    return math.prod(ins[0])


def _act(name: str, doc: str, keeps: Keeps = _INPUTS, **attrs: AttrSpec) -> OpDef:
    return OpDef(name, "act", doc, attrs=dict(attrs), positional=tuple(attrs), keeps=keeps)


def _positions(shape: Shape) -> int:
    """Positions a per-position op normalizes over: pixels of a map, tokens, or 1."""
    return math.prod(shape) // features(shape)


def _keeps_dropped(a: dict, ins: list[Shape], out: Shape) -> int:
    # PyTorch's CPU dropout keeps a mask of the activation dtype (CUDA's: 1 byte a value)
    return math.prod(out) if a["p"] > 0 else 0


def _attention_kept(a: dict, ins: list[Shape], out: Shape) -> int:
    """Q, K, V and the heads' output (L·D each) and one log-sum-exp per head and token, as
    PyTorch's fused attention keeps them (without attention dropout)."""
    n, d = ins[0]
    return 4 * n * d + a["heads"] * n


def _prelu_slopes(a: dict, ins: list[Shape]) -> int:
    return ins[0][0] if a["per_channel"] else 1


def _prelu_shape(a: dict, ins: list[Shape]) -> Shape:
    if a["per_channel"] and len(ins[0]) == 2:  # PyTorch's slopes follow dim 1: the tokens
        raise OpShapeError("a slope per channel needs a C×H×W map or a vector, got a sequence "
                           f"{fmt_shape(ins[0])}", "use one slope (per_channel=false)")
    return ins[0]


def _celu_shape(a: dict, ins: list[Shape]) -> Shape:
    if a["alpha"] == 0:
        raise OpShapeError("celu's alpha must not be 0 (it divides by it)")
    return ins[0]


_ALPHA = AttrSpec("float", 1.0, doc="the scale of the negative part")
_INPUT_AND_ONE_MORE = Keeps(("inputs", "extra"), extra=lambda a, ins, out: math.prod(out))

# The activations of torch.nn that classifiers use, each usable as a layer and as `act=`.
# They compute elementwise (softmax and log_softmax over channels), make C·H·W units and have
# no weights, except prelu's learned slopes (one, or one per channel: params).
ACTIVATION_OPS = [
    _act("relu", "rectified linear unit", _OUTPUT),
    _act("relu6", "ReLU capped at 6 (MobileNet)"),
    _act("sigmoid", "logistic sigmoid", _OUTPUT),
    _act("tanh", "hyperbolic tangent", _OUTPUT),
    _act("gelu", "Gaussian error linear unit; approximate=tanh for its tanh form",
         approximate=AttrSpec("choice", "none", choices=("none", "tanh"))),
    _act("swish", "x·sigmoid(x), a.k.a. SiLU"),
    _act("hardswish", "x·relu6(x+3)/6 (MobileNetV3)"),
    _act("hardsigmoid", "relu6(x+3)/6 (MobileNetV3's squeeze-and-excitation gate)"),
    _act("hardtanh", "x clipped to [min_val, max_val]: hardtanh(-1, 1)",
         min_val=AttrSpec("float", -1.0), max_val=AttrSpec("float", 1.0)),
    _act("leakyrelu", "x, or negative_slope·x below 0: leakyrelu(0.2)",
         negative_slope=AttrSpec("float", 0.01)),
    _act("elu", "x, or alpha·(exp(x) − 1) below 0 (Clevert et al. 2016)", alpha=_ALPHA),
    OpDef("celu", "act", "max(0, x) + min(0, alpha·(exp(x/alpha) − 1)) (Barron 2017)",
          attrs={"alpha": AttrSpec("float", 1.0, doc="not 0")}, positional=("alpha",),
          shape=_celu_shape, keeps=_INPUTS),
    _act("selu", "scale·elu(x, alpha) with SNNs' fixed constants (Klambauer et al. 2017)"),
    _act("softplus", "log(1 + exp(beta·x))/beta, x itself where beta·x > threshold",
         beta=AttrSpec("float", 1.0), threshold=AttrSpec("float", 20.0)),
    _act("mish", "x·tanh(softplus(x)) (Misra 2019)"),
    # two tensors each: the input and an intermediate of the output's size (1 + |x|; the
    # buffer of log_sigmoid_forward), as autograd keeps them
    _act("softsign", "x / (1 + |x|)", _INPUT_AND_ONE_MORE),
    _act("logsigmoid", "log(sigmoid(x))", _INPUT_AND_ONE_MORE),
    OpDef("prelu", "act", "x, or a learned slope·x below 0 (He et al. 2015); "
          "per_channel=true learns one slope per channel",
          attrs={"per_channel": AttrSpec("bool", False),
                 "init": AttrSpec("float", 0.25, doc="initial slope")}, shape=_prelu_shape,
          weights=lambda a, ins, out: _prelu_slopes(a, ins),
          tensors=lambda a, ins, out: {"weight": (_prelu_slopes(a, ins),)},
          keeps=Keeps(("inputs",), ("inputs",))),
    _act("softmax", "softmax over channels", _OUTPUT),
    _act("log_softmax", "log of the softmax over channels", _OUTPUT),
]


OPS: dict[str, OpDef] = {op.name: op for op in [
    OpDef("input", "source", "the network's input", attrs={"shape": AttrSpec("shape")},
          arity=(0, 0), in_syntax=False, makes_units=False, shape=lambda a, ins: a["shape"]),
    OpDef("conv", "conv", "2-D convolution: conv3-64, conv7-64/2, conv3-64 groups=32",
          attrs=_CONV_ATTRS, kernel="k", dash="out", slash="stride", attaches=True,
          prepare=_conv_prepare, shape=_conv_shape, weights=_conv_weights,
          biases=lambda a, ins, out: a["out"] if a["bias"] else 0,
          fan_in=lambda a, ins, out: kernel_area(a) * ins[0][0] // a["groups"], weighted=True,
          keeps=_FOR_WEIGHTS, tensors=lambda a, ins, out: {
              "weight": (a["out"], ins[0][0] // a["groups"], *pair(a["k"])),
              **({"bias": (a["out"],)} if a["bias"] else {})}),
    OpDef("dwconv", "conv", "depthwise convolution (groups = input channels): dwconv3/2",
          attrs={**_CONV_ATTRS, "out": AttrSpec("int", None, 1, doc="default: input channels")},
          kernel="k", dash="out", slash="stride", attaches=True, prepare=_dwconv_prepare,
          lowers_to="conv", advice=_dwconv_advice),
    OpDef("fc", "linear", "fully connected layer over the flattened input: FC-4096",
          attrs={"out": AttrSpec("int", REQUIRED, 1), "bias": _CONV_ATTRS["bias"]},
          dash="out", attaches=True, default_attach=("act",), shape=_fc_shape,
          weights=lambda a, ins, out: _in_features(ins) * a["out"],
          biases=lambda a, ins, out: a["out"] if a["bias"] else 0,
          fan_in=lambda a, ins, out: _in_features(ins), weighted=True, keeps=_FOR_WEIGHTS,
          tensors=lambda a, ins, out: _matrix(a, _in_features(ins))),
    OpDef("linear", "linear",
          "fully connected layer at every position: over the channels of each pixel of a "
          "C×H×W map (a 1×1 convolution kept as a matrix), the features of each token of "
          "an L×D sequence, or a vector: linear-384",
          attrs={"out": AttrSpec("int", REQUIRED, 1), "bias": _CONV_ATTRS["bias"]},
          dash="out", attaches=True, default_attach=("act",), shape=_linear_shape,
          weights=lambda a, ins, out: features(ins[0]) * a["out"],
          biases=lambda a, ins, out: a["out"] if a["bias"] else 0,
          fan_in=lambda a, ins, out: features(ins[0]), weighted=True, keeps=_FOR_WEIGHTS,
          tensors=lambda a, ins, out: _matrix(a, features(ins[0]))),
    OpDef("maxpool", "pool", "max pooling: maxpool (2×2/2), maxpool3/2", attrs=_POOL_ATTRS,
          kernel="k", slash="stride", prepare=_pool_prepare("maxpool"), shape=_pool_shape,
          fan_in=lambda a, ins, out: kernel_area(a),
          keeps=Keeps(("inputs", "extra"), extra_bytes=lambda a, ins, out: 8 * math.prod(out))),
    OpDef("avgpool", "pool", "average pooling (padding counted, as in PyTorch): avgpool2/2",
          attrs=_POOL_ATTRS, kernel="k", slash="stride", prepare=_pool_prepare("avgpool"),
          shape=_pool_shape, fan_in=lambda a, ins, out: kernel_area(a), keeps=_INPUTS),
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
          shape=_adaptive_shape, total_connections=_adaptive_connections, keeps=_INPUTS),
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
                      extra=lambda a, ins, out: 2 * _positions(ins[0]))),
    OpDef("layerscale", "scale",
          "a learned scale per feature, initialised to `init` (CaiT, ConvNeXt): layerscale(1e-6)",
          attrs={"init": AttrSpec("float", 1e-6, doc="initial value of every scale")},
          positional=("init",), weights=lambda a, ins, out: features(ins[0]),
          keeps=_FOR_WEIGHTS, tensors=lambda a, ins, out: {"": _scale_shape(ins)}),
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
    *ACTIVATION_OPS,
    *CHANNEL_OPS,
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
          shape=lambda a, ins: _sequence(ins, "pos_embedding"),
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
    OpDef("window_attention", "attention",
          "multi-head self-attention within windows of a C×H×W map (Swin, Liu et al. 2021), "
          "the map zero-padded to whole windows and, with a shift, rolled cyclically and "
          "masked between regions; a learned bias per relative position and head: "
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
    OpDef("grid", "shape",
          "L×D tokens back to a D×H×W map, row by row (the inverse of `tokens`): grid, "
          "grid(14), grid(7, 28)",
          attrs={"h": AttrSpec("int", None, 1, doc="rows; default √L"),
                 "w": AttrSpec("int", None, 1, doc="columns; default L/h")},
          positional=("h", "w"), shape=_grid_shape, makes_units=False),
    OpDef("token", "shape", "one token of an L×D sequence as a D-vector: token(0)",
          attrs={"index": AttrSpec("int", REQUIRED, 0)}, positional=("index",),
          shape=_token_shape, makes_units=False, view=True),
    OpDef("add", "join", "elementwise sum of branches (residual join)", arity=(2, 0),
          in_syntax=False, shape=_add_shape),
    OpDef("mul", "join", "elementwise product with broadcasting (gating)", arity=(2, 0),
          in_syntax=False, shape=_mul_shape, keeps=_INPUTS),
    OpDef("concat", "join", "concatenation along channels", arity=(2, 0), in_syntax=False,
          shape=_concat_shape, makes_units=False),
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


def fmt_shape(shape: Shape | None) -> str:
    return "?" if shape is None else "×".join(str(d) for d in shape)


def fmt_axes(value: int | tuple[int, int], sep: str = "×", collapse: bool = False) -> str:
    """A per-axis attribute for people: 3 → 3×3 (3 with `collapse`), (1, 7) → 1×7 (`sep`
    between the axes)."""
    if collapse and isinstance(value, int):
        return str(value)
    return sep.join(str(v) for v in pair(value))

"""Lowering: a typed archdsl graph → a Relax IRModule (weights as constants).

The graph is lowered straight to Relax with a `BlockBuilder` and `relax.op.*` (no PyTorch on
this path), from a lowering table keyed by op kind, like the PyTorch backend's. Weights are
Relax constants, so an exported library is self-contained.

Weights are keyed like the PyTorch backend's `state_dict` (`C1.weight`, `features.1.running_var`)
and may be numpy arrays or torch tensors; without weights, `random_weights` makes a
deterministic (seeded) set for benchmarking. Batch norm is folded into the convolution or FC
layer that feeds it (in numpy, in float64) and otherwise becomes a per-channel scale and shift.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import tvm
from tvm import relax

from archdsl.backends.tvm.activations import LOWERINGS as ACTIVATIONS
from archdsl.backends.tvm.channel_ops import LOWERINGS as CHANNEL_OPS
from archdsl.backends.tvm.channel_ops import feature_view
from archdsl.backends.tvm.runtime import META_FUNC, _to_numpy
from archdsl.ir import Graph, Node
from archdsl.ops import pair

__all__ = ["LOWERINGS", "UNSUPPORTED", "WeightsError", "build_module", "random_weights",
           "weight_shapes"]


class WeightsError(ValueError):
    """Weights that do not fit the graph: missing, unexpected or wrongly shaped keys."""


# ---------------------------------------------------------------- weights

def _weighted_nodes(graph: Graph):
    """(node, {suffix: shape}) for every node that holds tensors (the op's declaration)."""
    for node in graph.nodes:
        ins = [graph.node(i).shape for i in graph.inputs(node.id)]
        tensors = node.opdef.tensors(node.attrs, ins, node.shape)
        if tensors:
            yield node, tensors


def _key(node: Node, suffix: str) -> str:
    return f"{node.name}.{suffix}" if suffix else node.name


def weight_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Every parameter/buffer the graph needs, with its shape, keyed like the PyTorch backend's
    `state_dict` (less `num_batches_tracked`, which inference does not use)."""
    return {_key(node, suffix): shape for node, params in _weighted_nodes(graph)
            for suffix, shape in params.items()}


# random_weights' ranges for the tensors of normalizations and embeddings; matrices and
# biases are uniform in ±1/sqrt(fan_in)
_NEAR_ONE, _SMALL = (0.5, 1.5), (-0.1, 0.1)
_RANGES = {
    "bn": {"weight": _NEAR_ONE, "bias": _SMALL, "running_mean": _SMALL, "running_var": _NEAR_ONE},
    "layernorm": {"weight": _NEAR_ONE, "bias": _SMALL},
    "layerscale": {"": _NEAR_ONE},
    "class_token": {"": _SMALL},
    "pos_embedding": {"": _SMALL},
    "prelu": {"weight": (0.0, 0.5)},
}


def random_weights(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic set of weights (numpy float32, seeded) for benchmarking and tests.

    Matrices and biases are uniform in ±1/sqrt(fan_in) (PyTorch's default range); norms get
    scales near 1, small shifts and means and variances near 1, so that activations keep a
    sensible range through deep networks; embeddings are small."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for node, params in _weighted_nodes(graph):
        ranges = _RANGES.get(node.op)
        if ranges is None:  # a matrix's bound for all its tensors; vectors only: near 1
            matrix = next((shape for shape in params.values() if len(shape) >= 2), None)
            bound = 1.0 / math.sqrt(math.prod(matrix[1:])) if matrix else None
            ranges = dict.fromkeys(params, (-bound, bound) if bound else _NEAR_ONE)
        for suffix, shape in params.items():
            out[_key(node, suffix)] = rng.uniform(*ranges[suffix], shape).astype(np.float32)
    return out


def _check_weights(graph: Graph, weights: Mapping[str, Any], strict: bool) -> dict[str, np.ndarray]:
    need = weight_shapes(graph)
    got = {k: _to_numpy(v) for k, v in weights.items() if not k.endswith(".num_batches_tracked")}
    missing = sorted(set(need) - set(got))
    unexpected = sorted(set(got) - set(need)) if strict else []
    wrong = sorted(f"{k}: expected {need[k]}, got {tuple(got[k].shape)}"
                   for k in set(need) & set(got) if tuple(got[k].shape) != need[k])
    if missing or unexpected or wrong:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", wrong)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)"
                                                if len(items) > 8 else "")
                parts.append(f"{title}: {shown}")
        raise WeightsError(f"weights do not fit `{graph.name}`: " + "; ".join(parts))
    return {k: got[k] for k in need}


# ---------------------------------------------------------------- lowering

@dataclass
class _Ctx:
    """What a lowering rule sees: the builder, the checked weights, dtype and batch size."""

    bb: relax.BlockBuilder
    weights: dict[str, np.ndarray]
    dtype: str
    batch: int
    # bn nodes folded into their producer: they lower to the identity
    folded: set[int] = field(default_factory=set)
    # conv/fc node id → (scale, shift) of the bn that follows it, to fold into its weights
    fold_into: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def accumulate(self) -> str | None:
        """The dtype convolutions and matrix products accumulate in when it is not the build's
        (`_ACCUMULATE`): their `out_dtype`, the dtype of their bias; None: the build's."""
        return _ACCUMULATE.get(self.dtype)

    def const(self, value: np.ndarray, dtype: str | None = None) -> relax.Expr:
        dtype = dtype or self.dtype
        return relax.const(np.ascontiguousarray(value).astype(dtype), dtype)

    def emit(self, expr: relax.Expr, node: Node) -> relax.Var:
        return self.bb.emit(expr, name_hint=_hint(node.name))


# Builds whose convolutions and matrix products sum in a wider dtype, as PyTorch's do: a float16
# sum over thousands of terms loses digits (a float16 ResNet-18 was 1.1% of the output scale off
# its float32 result, 0.13% now; PyTorch's float16 forward is 0.18% off). The product is cast
# back to the build's dtype after its bias add (`_bias`): one epilogue step of the fused kernel,
# which the CPU schedules take as they take float32 ones. On x86 without native float16
# arithmetic it is also faster: LLVM rounded every float16 FMA (ResNet-18: 370 ms → 70 ms).
_ACCUMULATE = {"float16": "float32"}


# Ops that reduce over many values without a weight matrix: in a build that accumulates wider
# (`_ACCUMULATE`) they run wholly in that dtype, between two casts that fuse into their kernels.
# A float16 softmax over 1,000 classes summed its exponentials in float16: MobileNet v1's
# probabilities were 4.4% (of the largest) off float32, PyTorch's float16 0.05%.
_WIDE_OPS = frozenset({"softmax", "log_softmax", "layernorm", "gap", "avgpool",
                       "adaptive_avgpool", "lrn"})


def _lower(rule: Lowering, ctx: _Ctx, node: Node, xs: list[relax.Expr],
           ins: list[tuple[int, ...]]) -> relax.Expr:
    """The node's Relax expression by its lowering `rule` (in the wide dtype, for `_WIDE_OPS`
    in a build that has one)."""
    if ctx.accumulate is None or node.op not in _WIDE_OPS:
        return rule(ctx, node, xs, ins)
    wide = replace(ctx, dtype=ctx.accumulate)  # its constants are made in the wide dtype
    xs = [ctx.emit(relax.op.astype(x, wide.dtype), node) for x in xs]
    return relax.op.astype(ctx.emit(rule(wide, node, xs, ins), node), ctx.dtype)


def _hint(name: str) -> str:
    """A Relax variable name hint from a node name (`layer1.0.conv1` → `layer1_0_conv1`)."""
    hint = "".join(c if c.isalnum() else "_" for c in name)
    return hint if hint[:1].isalpha() else f"n{hint}"


Lowering = Callable[[_Ctx, Node, list[relax.Expr], list[tuple[int, ...]]], relax.Expr]


def _bn_scale_shift(ctx: _Ctx, node: Node) -> tuple[np.ndarray, np.ndarray]:
    """y = x·scale + shift, computed in float64."""
    w = {s: ctx.weights[f"{node.name}.{s}"].astype(np.float64)
         for s in ("weight", "bias", "running_mean", "running_var")}
    scale = w["weight"] / np.sqrt(w["running_var"] + node.attrs["eps"])
    return scale, w["bias"] - w["running_mean"] * scale


def _affine(ctx: _Ctx, node: Node, weight: np.ndarray, bias: np.ndarray | None):
    """A weight and bias with a following batch norm folded in, if there is one."""
    if node.id in ctx.fold_into:
        scale, shift = ctx.fold_into[node.id]
        weight = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        bias = shift + (bias.astype(np.float64) * scale if bias is not None else 0.0)
    return weight, bias


def _conv(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    a = node.attrs
    weight = ctx.weights[f"{node.name}.weight"]
    bias = ctx.weights.get(f"{node.name}.bias") if a["bias"] else None
    weight, bias = _affine(ctx, node, weight, bias)
    y = relax.op.nn.conv2d(xs[0], ctx.const(weight), strides=a["stride"], padding=a["pad"],
                           dilation=a["dilation"], groups=a["groups"], out_dtype=ctx.accumulate)
    return _bias(ctx, node, y, bias, (1, -1, 1, 1))


def _fc(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    x = xs[0]
    if len(ins[0]) > 1:
        x = ctx.emit(relax.op.reshape(x, (ctx.batch, math.prod(ins[0]))), node)
    weight = ctx.weights[f"{node.name}.weight"]
    bias = ctx.weights.get(f"{node.name}.bias") if node.attrs["bias"] else None
    weight, bias = _affine(ctx, node, weight, bias)
    # pre-transposed: no transpose at run time
    y = relax.op.matmul(x, ctx.const(weight.T), out_dtype=ctx.accumulate)
    return _bias(ctx, node, y, bias, (-1,))


def _bn(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    if node.id in ctx.folded:
        return xs[0]
    scale, shift = _bn_scale_shift(ctx, node)
    view = (1, -1) + (1,) * (len(ins[0]) - 1)
    y = ctx.emit(relax.op.multiply(xs[0], ctx.const(scale.reshape(view))), node)
    return relax.op.add(y, ctx.const(shift.reshape(view)))


def _pool(kind: str) -> Lowering:
    def lower(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
        a = node.attrs
        if kind == "max":
            return relax.op.nn.max_pool2d(xs[0], a["k"], a["stride"], a["pad"],
                                          ceil_mode=a["ceil"])
        # PyTorch's AvgPool2d counts the padding in the divisor (count_include_pad=True);
        # Relax's default excludes it.
        return relax.op.nn.avg_pool2d(xs[0], a["k"], a["stride"], a["pad"], ceil_mode=a["ceil"],
                                      count_include_pad=True)
    return lower


def _lrn(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    """Local response normalization across channels, as PyTorch computes it:
    x / (k + alpha · sum over a window of `size` channels of x²)^beta, the window zero-padded
    by size//2 before and (size-1)//2 after (archdsl's alpha is Krizhevsky's, not divided by
    the window: PyTorch's is alpha·size). The window sum is an average pool over the channel
    axis of x² viewed as N×1×C×(H·W), padding counted."""
    a = node.attrs
    c, h, w = ins[0]
    size = a["size"]
    x = xs[0]
    sq = ctx.emit(relax.op.multiply(x, x), node)
    sq = ctx.emit(relax.op.reshape(sq, (ctx.batch, 1, c, h * w)), node)
    mean = ctx.emit(relax.op.nn.avg_pool2d(
        sq, (size, 1), (1, 1), (size // 2, 0, (size - 1) // 2, 0), count_include_pad=True), node)
    mean = ctx.emit(relax.op.reshape(mean, (ctx.batch, c, h, w)), node)
    denom = ctx.emit(relax.op.add(ctx.const(np.array(a["k"])),
                                  relax.op.multiply(mean, ctx.const(np.array(a["alpha"] * size)))),
                     node)
    denom = ctx.emit(relax.op.power(denom, ctx.const(np.array(a["beta"]))), node)
    return relax.op.divide(x, denom)


def _bias(ctx: _Ctx, node: Node, y: relax.Expr, bias: np.ndarray | None,
          view: tuple[int, ...], cast: bool = True) -> relax.Expr:
    """A convolution's or matrix product's `y` (in `ctx.accumulate` where there is one) plus its
    bias (in the same dtype), cast to the build's dtype unless `cast` is False."""
    if bias is not None:
        y = relax.op.add(ctx.emit(y, node), ctx.const(bias.reshape(view), ctx.accumulate))
    if ctx.accumulate and cast:
        y = relax.op.astype(ctx.emit(y, node), ctx.dtype)
    return y


def _linear(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    weight = ctx.weights[f"{node.name}.weight"]
    bias = ctx.weights.get(f"{node.name}.bias") if node.attrs["bias"] else None
    if len(ins[0]) == 3:  # over the channels of every pixel: a 1×1 convolution
        y = relax.op.nn.conv2d(xs[0], ctx.const(weight.reshape(*weight.shape, 1, 1)),
                               out_dtype=ctx.accumulate)
    else:
        y = relax.op.matmul(xs[0], ctx.const(weight.T), out_dtype=ctx.accumulate)
    return _bias(ctx, node, y, bias, feature_view(ins[0]))


def _layernorm(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    axis = 2 if len(ins[0]) == 2 else 1
    return relax.op.nn.layer_norm(xs[0], ctx.const(ctx.weights[f"{node.name}.weight"]),
                                  ctx.const(ctx.weights[f"{node.name}.bias"]), axes=[axis],
                                  epsilon=node.attrs["eps"])


def _layerscale(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    scale = ctx.weights[node.name].reshape(feature_view(ins[0]))
    return relax.op.multiply(xs[0], ctx.const(scale))


def _tokens(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    c, h, w = ins[0]
    flat = ctx.emit(relax.op.reshape(xs[0], (ctx.batch, c, h * w)), node)
    return relax.op.permute_dims(flat, [0, 2, 1])


def _class_token(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    d = ins[0][1]
    token = ctx.emit(relax.op.broadcast_to(ctx.const(ctx.weights[node.name]), (ctx.batch, 1, d)),
                     node)
    return relax.op.concat([token, xs[0]], axis=1)


def _attention(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    """softmax(Q·Kᵀ/√(D/heads))·V per head between PyTorch's in and out projections
    (nn.MultiheadAttention's `in_proj_weight` stacks the Q, K and V matrices). Where products
    accumulate in a wider dtype, Q, K and V stay in it through the attention (its products
    and softmax), cast back once before the out projection."""
    n, d = ins[0]
    heads = node.attrs["heads"]
    w_in = ctx.weights[f"{node.name}.in_proj_weight"]
    b_in = ctx.weights[f"{node.name}.in_proj_bias"]
    qkv = []
    for i in range(3):
        part = slice(i * d, (i + 1) * d)
        y = relax.op.matmul(xs[0], ctx.const(w_in[part].T), out_dtype=ctx.accumulate)
        y = ctx.emit(_bias(ctx, node, y, b_in[part], (1, 1, -1), cast=False), node)
        qkv.append(ctx.emit(relax.op.reshape(y, (ctx.batch, n, heads, d // heads)), node))
    out = ctx.emit(relax.op.nn.attention(*qkv), node)  # B×L×heads×(D/heads), scaled by √
    out = ctx.emit(relax.op.reshape(out, (ctx.batch, n, d)), node)
    if ctx.accumulate:
        out = ctx.emit(relax.op.astype(out, ctx.dtype), node)
    y = relax.op.matmul(out, ctx.const(ctx.weights[f"{node.name}.out_proj.weight"].T),
                        out_dtype=ctx.accumulate)
    return _bias(ctx, node, y, ctx.weights[f"{node.name}.out_proj.bias"], (1, 1, -1))


def _token(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    i = node.attrs["index"]
    one = ctx.emit(relax.op.strided_slice(xs[0], axes=[1], begin=[i], end=[i + 1]), node)
    return relax.op.reshape(one, (ctx.batch, ins[0][1]))


def _fold(op) -> Lowering:
    def lower(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
        out = xs[0]
        for x in xs[1:-1]:
            out = ctx.emit(op(out, x), node)
        return op(out, xs[-1])
    return lower


LOWERINGS: dict[str, Lowering] = {
    "conv": _conv,
    "fc": _fc,
    "linear": _linear,
    "maxpool": _pool("max"),
    "avgpool": _pool("avg"),
    "gap": lambda ctx, n, xs, ins: relax.op.mean(xs[0], axis=[2, 3], keepdims=True),
    "gmp": lambda ctx, n, xs, ins: relax.op.max(xs[0], axis=[2, 3], keepdims=True),
    "adaptive_avgpool": lambda ctx, n, xs, ins: relax.op.nn.adaptive_avg_pool2d(
        xs[0], pair(n.attrs["size"])),
    "bn": _bn,
    "lrn": _lrn,
    "layernorm": _layernorm,
    "layerscale": _layerscale,
    "dropout": lambda ctx, n, xs, ins: xs[0],
    "droppath": lambda ctx, n, xs, ins: xs[0],  # stochastic depth: the identity at inference
    **ACTIVATIONS,
    **CHANNEL_OPS,
    "flatten": lambda ctx, n, xs, ins: relax.op.reshape(xs[0], (ctx.batch, math.prod(ins[0]))),
    "add": _fold(relax.op.add),
    "mul": _fold(relax.op.multiply),
    "concat": lambda ctx, n, xs, ins: relax.op.concat(xs, axis=1),
    "tokens": _tokens,
    "class_token": _class_token,
    "pos_embedding": lambda ctx, n, xs, ins: relax.op.add(xs[0], ctx.const(ctx.weights[n.name])),
    "attention": _attention,
    "token": _token,
}

_NO_USER_LOWERING = ("a user-defined op registered without one "
                     "(archdsl.plugins.register_op(..., tvm=...))")

# Ops with no Relax lowering here, and why (none today; the coverage test reads this table).
UNSUPPORTED: dict[str, str] = {}


def _bn_folds(graph: Graph, ctx: _Ctx) -> None:
    """Find each bn whose input is a conv/FC feeding nothing else, and plan to fold it."""
    for node in graph.nodes:
        if node.op != "bn":
            continue
        (src,) = graph.inputs(node.id)
        producer = graph.node(src)
        if (producer.op in ("conv", "fc") and graph.g.out_degree(src) == 1
                and src != graph.output_id):
            ctx.fold_into[src] = _bn_scale_shift(ctx, node)
            ctx.folded.add(node.id)


def build_module(graph: Graph, weights: Mapping[str, Any] | None = None, batch: int = 1,
                 dtype: str = "float32", fold_bn: bool = True, strict: bool = True,
                 seed: int = 0) -> tvm.IRModule:
    """The graph as a Relax IRModule: `main(x)`, weights as constants, and `archdsl_meta()`
    (the build's arch name, input/output shapes and dtype, as JSON)."""
    if weights is None:
        weights = random_weights(graph, seed)
    ctx = _Ctx(relax.BlockBuilder(), _check_weights(graph, weights, strict), dtype, batch)
    if fold_bn:
        _bn_folds(graph, ctx)
    bb = ctx.bb
    x = relax.Var("x", relax.TensorType((batch, *graph.input_shape), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            values: dict[int, relax.Expr] = {graph.input_id: x}
            for node in graph.nodes:
                if node.op == "input":
                    continue
                ins = graph.inputs(node.id)
                rule = LOWERINGS.get(node.op) or node.opdef.lowerings.get("tvm")
                if rule is None:
                    raise NotImplementedError(
                        f"{node.name}: op `{node.op}` has no TVM lowering: "
                        f"{UNSUPPORTED.get(node.op, _NO_USER_LOWERING)}")
                expr = _lower(rule, ctx, node, [values[i] for i in ins],
                              [graph.node(i).shape for i in ins])
                values[node.id] = expr if isinstance(expr, relax.Var) else ctx.emit(expr, node)
                got = tuple(int(d) for d in values[node.id].ty.shape)
                if got != (batch, *node.shape):
                    raise AssertionError(f"{node.name}: Relax infers {got}, archdsl "
                                         f"{(batch, *node.shape)}: a bug in the TVM backend")
            out = bb.emit_output(values[graph.output_id])
        bb.emit_func_output(out)
    meta = {"arch": graph.name, "input": [batch, *graph.input_shape],
            "output": [batch, *graph.output_shape], "dtype": dtype}
    with bb.function(META_FUNC, []):
        bb.emit_func_output(tvm.ir.StringImm(json.dumps(meta)))
    return bb.get()

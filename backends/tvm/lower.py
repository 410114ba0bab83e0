"""Lowering: a typed archdsl graph → a Relax IRModule (weights as constants).

The graph is lowered straight to Relax with a `BlockBuilder` and `relax.op.*` (no PyTorch on
this path), from a lowering table keyed by op kind, like the PyTorch backend's. Weights are
Relax constants, so an exported library is self-contained.

Weights are keyed like the PyTorch backend's `state_dict` (`C1.weight`, `features.1.running_var`)
and may be numpy arrays or torch tensors (`weights.py` checks them); without weights,
`random_weights` makes a deterministic (seeded) set for benchmarking. Batch norm is folded into
the convolution or FC layer that feeds it (in numpy, in float64) and otherwise becomes a
per-channel scale and shift. Swin's ops are lowered in `windows.py`.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import tvm
from tvm import relax

from archdsl.backends.tvm import trunk_threads, windows
from archdsl.backends.tvm.activations import LOWERINGS as ACTIVATIONS
from archdsl.backends.tvm.channel_ops import LOWERINGS as CHANNEL_OPS
from archdsl.backends.tvm.context import (
    Lowering,
    _bias,
    _Ctx,
    _feature_view,
    attend,
)
from archdsl.backends.tvm.runtime import META_FUNC
from archdsl.backends.tvm.weights import (
    WeightsError,
    _check_weights,
    random_weights,
    weight_shapes,
)
from archdsl.ir import Graph, Node
from archdsl.ops import pair

__all__ = ["LOWERINGS", "TRUNK_FUNC", "driven", "UNSUPPORTED", "ChunkError", "WeightsError",
           "build_module", "random_weights", "trunk_end", "weight_shapes"]


# ---------------------------------------------------------------- lowering

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




def _linear(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    weight = ctx.weights[f"{node.name}.weight"]
    bias = ctx.weights.get(f"{node.name}.bias") if node.attrs["bias"] else None
    if len(ins[0]) == 3:  # over the channels of every pixel: a 1×1 convolution
        y = relax.op.nn.conv2d(xs[0], ctx.const(weight.reshape(*weight.shape, 1, 1)),
                               out_dtype=ctx.accumulate)
    else:
        y = relax.op.matmul(xs[0], ctx.const(weight.T), out_dtype=ctx.accumulate)
    return _bias(ctx, node, y, bias, _feature_view(ins[0]))


def _layernorm(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    axis = 2 if len(ins[0]) == 2 else 1
    return relax.op.nn.layer_norm(xs[0], ctx.const(ctx.weights[f"{node.name}.weight"]),
                                  ctx.const(ctx.weights[f"{node.name}.bias"]), axes=[axis],
                                  epsilon=node.attrs["eps"])


def _layerscale(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    scale = ctx.weights[node.name].reshape(_feature_view(ins[0]))
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
    (nn.MultiheadAttention's `in_proj_weight` stacks the Q, K and V matrices; the scale is
    folded into Q's, in float64). Where products accumulate in a wider dtype, Q, K and V stay
    in it through the attention (its products and softmax), cast back once before the out
    projection. Lowered as `attend`'s products and softmax: Relax's fused attention op fell
    to the catch-all schedule (ViT-B/16, batch 1, two threads: 31.7 ms a layer)."""
    n, d = ins[0]
    heads = node.attrs["heads"]
    scale = np.where(np.arange(3 * d) < d, (d // heads) ** -0.5, 1.0)
    w_in = ctx.weights[f"{node.name}.in_proj_weight"].astype(np.float64) * scale[:, None]
    b_in = ctx.weights[f"{node.name}.in_proj_bias"].astype(np.float64) * scale
    qkv = []
    for i in range(3):
        part = slice(i * d, (i + 1) * d)
        y = relax.op.matmul(xs[0], ctx.const(w_in[part].T), out_dtype=ctx.accumulate)
        y = ctx.emit(_bias(ctx, node, y, b_in[part], (1, 1, -1), cast=False), node)
        y = ctx.emit(relax.op.reshape(y, (ctx.batch, n, heads, d // heads)), node)
        qkv.append(ctx.emit(relax.op.permute_dims(y, [0, 2, 1, 3]), node))
    out = attend(ctx, node, qkv, (ctx.batch, n, d))
    if ctx.accumulate:
        out = ctx.emit(relax.op.astype(out, ctx.dtype), node)
    y = relax.op.matmul(out, ctx.const(ctx.weights[f"{node.name}.out_proj.weight"].T),
                        out_dtype=ctx.accumulate)
    return _bias(ctx, node, y, ctx.weights[f"{node.name}.out_proj.bias"], (1, 1, -1))


def _token(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    i = node.attrs["index"]
    one = ctx.emit(relax.op.strided_slice(xs[0], axes=[1], begin=[i], end=[i + 1]), node)
    return relax.op.reshape(one, (ctx.batch, ins[0][1]))


def _global(reduce, x: relax.Expr, ins) -> relax.Expr:
    """Global pooling: over the H, W of a map (keeping them, as 1×1), or the tokens of a
    sequence."""
    if len(ins[0]) == 2:
        return reduce(x, axis=[1])
    return reduce(x, axis=[2, 3], keepdims=True)


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
    "gap": lambda ctx, n, xs, ins: _global(relax.op.mean, xs[0], ins),
    "gmp": lambda ctx, n, xs, ins: _global(relax.op.max, xs[0], ins),
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
    "grid": lambda ctx, n, xs, ins: relax.op.reshape(relax.op.permute_dims(xs[0], [0, 2, 1]),
                                                     (ctx.batch, *n.shape)),
    "window_attention": windows.window_attention,
    "patch_merging": windows.patch_merging,
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


TRUNK_FUNC = "archdsl_trunk"


class ChunkError(ValueError):
    """Chunks a build cannot take: not dividing the batch, or a graph without a trunk."""


def trunk_end(graph: Graph) -> int:
    """The index (among the graph's nodes but its input, in order) of the last node of its
    trunk: the last node before its first FC layer (or the last node, without one) that
    everything after it reads through — no node before it is read after it. -1: none."""
    nodes = [n for n in graph.nodes if n.op != "input"]
    position = {n.id: i for i, n in enumerate(nodes)}
    first_fc = next((i for i, n in enumerate(nodes) if n.op == "fc"), len(nodes))
    end, reach = -1, max((position[s] for s in graph.g.successors(graph.input_id)), default=-1)
    for i, node in enumerate(nodes[:first_fc]):
        if reach <= i:  # nothing before node i is read after it
            end = i
        reach = max([reach, *(position[s] for s in graph.g.successors(node.id))])
    # (the output comes at the trunk's end or after it)
    return end if graph.output_id in {n.id for n in nodes[end:]} else -1


def driven(graph: Graph, batch: int, chunk: int, threads: int | None) -> bool:
    """Whether a trunk in chunks of `chunk` images runs them on `threads` at once
    (`trunk_threads`): several threads that share the chunks evenly."""
    return (trunk_end(graph) >= 0 and threads is not None and threads > 1
            and (batch // chunk) % threads == 0)


def _emit_nodes(ctx: _Ctx, graph: Graph, nodes: list[Node],
                values: dict[int, relax.Expr]) -> dict[int, relax.Expr]:
    """Lower `nodes` (in order) from the `values` of the nodes they read, into `values`."""
    for node in nodes:
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
        if got != (ctx.batch, *node.shape):
            raise AssertionError(f"{node.name}: Relax infers {got}, archdsl "
                                 f"{(ctx.batch, *node.shape)}: a bug in the TVM backend")
    return values


def build_module(graph: Graph, weights: Mapping[str, Any] | None = None, batch: int = 1,
                 dtype: str = "float32", fold_bn: bool = True, strict: bool = True,
                 seed: int = 0, chunk: int | None = None,
                 threads: int | None = None) -> tvm.IRModule:
    """The graph as a Relax IRModule: `main(x)`, weights as constants, and `archdsl_meta()`
    (the build's arch name, input/output shapes and dtype, as JSON). With `chunk` (images,
    dividing the batch), the network's trunk (`trunk_end`: up to its first FC layer) is a
    function of its own, `archdsl_trunk`, of `chunk` images, which `main` calls on each
    `chunk` of the batch in turn before the rest of the network takes the whole batch. With
    `threads` (above one, sharing the chunks evenly) the chunks run on that many threads at
    once instead, each thread taking whole chunks (`trunk_threads`: `main` calls a placeholder
    for the trunk, which `trunk_threads.make_driver` replaces once the kernels are
    scheduled)."""
    random = weights is None
    if random:
        weights = random_weights(graph, seed)
    ctx = _Ctx(relax.BlockBuilder(), _check_weights(graph, weights, strict), dtype, batch)
    if fold_bn:
        _bn_folds(graph, ctx)
    bb = ctx.bb
    nodes = [n for n in graph.nodes if n.op != "input"]
    x = relax.Var("x", relax.TensorType((batch, *graph.input_shape), dtype))
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral)):
        raise ChunkError(f"chunk must be a whole number of images, got {chunk!r}")
    if chunk is not None and (chunk < 1 or batch % chunk):
        raise ChunkError(f"chunks of {chunk} images do not divide a batch of {batch}")
    chunked = chunk is not None and chunk < batch
    threaded = False
    if chunked:
        end = trunk_end(graph)
        if end < 0:
            raise ChunkError(f"{graph.name} has no trunk to run in chunks (its first layer is "
                             "an FC, or everything before its first FC feeds what comes "
                             "after it by more than one path)")
        trunk, nodes = nodes[:end + 1], nodes[end + 1:]
        threaded = driven(graph, batch, chunk, threads)
        ctx.batch = chunk
        part = relax.Var("x", relax.TensorType((chunk, *graph.input_shape), dtype))
        # a threaded trunk is public until `make_driver` takes it: nothing calls it till then
        with bb.function(TRUNK_FUNC, [part], private=not threaded,
                         attrs={trunk_threads.THREADS_ATTR: threads} if threaded else None):
            with bb.dataflow():
                made = _emit_nodes(ctx, graph, trunk, {graph.input_id: part})
                out = bb.emit_output(made[trunk[-1].id])
            bb.emit_func_output(out)
        ctx.batch = batch
        called = bb.get().get_global_var(TRUNK_FUNC)
        if threaded:
            out_ty = relax.TensorType((batch, *trunk[-1].shape), made[trunk[-1].id].ty.dtype)
            called = bb.add_func(trunk_threads.placeholder(x.ty, out_ty),
                                 trunk_threads.PLACEHOLDER)
    with bb.function("main", [x]):
        with bb.dataflow():
            values: dict[int, relax.Expr] = {graph.input_id: x}
            if threaded:
                values = {trunk[-1].id: bb.emit(relax.call_tir(called, [x], out_ty))}
            elif chunked:
                parts = [bb.emit(relax.Call(called, [bb.emit(relax.op.strided_slice(
                    x, axes=[0], begin=[i], end=[i + chunk]))]))
                    for i in range(0, batch, chunk)]
                values = {trunk[-1].id: bb.emit(relax.op.concat(parts, axis=0))}
            out = bb.emit_output(_emit_nodes(ctx, graph, nodes, values)[graph.output_id])
        bb.emit_func_output(out)
    meta = {"arch": graph.name, "input": [batch, *graph.input_shape],
            "output": [batch, *graph.output_shape], "dtype": dtype,
            # what `archdsl run` tells its user: probabilities or logits, trained or not
            "output_op": graph.node(graph.output_id).op,
            "weights": f"random (seed {seed})" if random else "given"}
    if chunked:
        meta["chunk"] = chunk  # images per call of the trunk
        if threaded:
            meta["chunk_threads"] = threads  # threads that take the chunks at once
    with bb.function(META_FUNC, []):
        bb.emit_func_output(tvm.ir.StringImm(json.dumps(meta)))
    return bb.get()

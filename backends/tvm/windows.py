"""Swin's ops in Relax: (shifted) window attention and patch merging, on N×C×H×W maps.

The geometry is `archdsl.windows`': zero padding, the cyclic shift and the window partition
are one gather of the map's positions (and the way back one gather of the windows' tokens, which
also crops the padding); the relative position bias and the shift mask depend only on weights and
shapes, so they are computed here once (numpy, float64) and added as constants.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax

from archdsl.backends.tvm.context import _bias, _Ctx, attend
from archdsl.ir import Node
from archdsl.ops.swin import PROJECTIONS
from archdsl.windows import MASKED, WindowPlan, pair


def _plan(node: Node, ins) -> WindowPlan:
    c, h, w = ins[0]
    a = node.attrs
    return WindowPlan((h, w), pair(a["window"]), pair(a["shift"]), a["partition"])


def _gathers(plan: WindowPlan) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the map's H·W positions (H·W itself: a zero of the padding) for every token
    in window order, and for every position, the token that holds it."""
    (h, w), (_, pw) = plan.size, plan.padded
    into = np.empty(plan.windows * plan.tokens, np.int64)
    back = np.empty(h * w, np.int64)
    for t, p in enumerate(plan.positions()):
        r, c = divmod(p, pw)
        inside = r < h and c < w
        into[t] = r * w + c if inside else h * w
        if inside:
            back[r * w + c] = t
    return into, back


def _position_bias(ctx: _Ctx, node: Node, n: int, ins) -> np.ndarray | None:
    """heads × N × N: the relative position bias every window's scores get."""
    a = node.attrs
    if a["position_bias"] == "none":
        return None
    derived = node.opdef.derived(a, ins, node.shape)
    index = np.asarray(derived["relative_position_index"])
    if a["position_bias"] == "table":
        table = ctx.weights[f"{node.name}.relative_position_bias_table"].astype(np.float64)
    else:
        table = _position_mlp(ctx, node, np.asarray(derived["relative_coords_table"]))
    bias = table[index].reshape(n, n, -1).transpose(2, 0, 1)
    return 16.0 / (1.0 + np.exp(-bias)) if a["position_bias"] == "mlp" else bias


def _mask(plan: WindowPlan) -> np.ndarray:
    """windows × 1 × N × N: 0 between tokens of one region of the shifted map, −100 across."""
    regions = np.asarray(plan.regions())
    return np.where(regions[:, None, :] != regions[:, :, None], MASKED, 0.0)[:, None]


def _position_mlp(ctx: _Ctx, node: Node, coords: np.ndarray) -> np.ndarray:
    """Swin v2's continuous position bias: a 2 → hidden → heads MLP (ReLU) over the offsets."""
    w = {k: ctx.weights[f"{node.name}.cpb_mlp.{k}"].astype(np.float64)
         for k in ("0.weight", "0.bias", "2.weight")}
    hidden = np.maximum(coords.reshape(-1, 2) @ w["0.weight"].T + w["0.bias"], 0.0)
    return hidden @ w["2.weight"].T


def window_attention(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    """Partition (one gather), attention per window, reverse (one gather), as `_attention` for
    the products: Q, K, V and the scores stay in the accumulation dtype of a float16 build."""
    plan = _plan(node, ins)
    c, h, w = ins[0]
    b, n = ctx.batch, plan.tokens
    into, back = _gathers(plan)
    x = ctx.emit(relax.op.permute_dims(relax.op.reshape(xs[0], (b, c, h * w)), [0, 2, 1]), node)
    if plan.padded != plan.size:  # the padding is a zero vector after the last position
        x = ctx.emit(relax.op.concat([x, relax.op.zeros((b, 1, c), ctx.dtype)], axis=1), node)
    x = ctx.emit(relax.op.take(x, relax.const(into), axis=1, mode="clip"), node)
    x = ctx.emit(relax.op.reshape(x, (b * plan.windows, n, c)), node)
    y = _attend(ctx, node, x, plan, ins)
    y = ctx.emit(relax.op.reshape(y, (b, plan.windows * n, c)), node)
    y = ctx.emit(relax.op.take(y, relax.const(back), axis=1, mode="clip"), node)
    return relax.op.reshape(relax.op.permute_dims(y, [0, 2, 1]), (b, c, h, w))


def _attend(ctx: _Ctx, node: Node, x: relax.Expr, plan: WindowPlan, ins) -> relax.Expr:
    """Attention within each window of a (batch·windows) × N × C tensor."""
    a, name = node.attrs, node.name
    bw, n, c, heads = ctx.batch * plan.windows, plan.tokens, ins[0][0], a["heads"]
    wide = ctx.accumulate or ctx.dtype
    q, k, v = _qkv(ctx, node, x, (bw, n, c))
    if a["cosine"]:
        q, k = (_unit(ctx, node, t) for t in (q, k))
        scale = np.exp(np.minimum(ctx.weights[f"{name}.logit_scale"].astype(np.float64),
                                  math.log(100.0)))
        q = ctx.emit(relax.op.multiply(q, ctx.const(scale.reshape(1, heads, 1, 1), wide)), node)
    else:
        scale = (c if a["scale"] == "channels" else c // heads) ** -0.5
        q = ctx.emit(relax.op.multiply(q, ctx.const(np.array(scale), wide)), node)
    bias = _position_bias(ctx, node, n, ins)

    def adjust(scores: relax.Expr) -> relax.Expr:
        if bias is not None:
            scores = ctx.emit(relax.op.add(scores, ctx.const(bias[None], wide)), node)
        if plan.shifted:  # the mask differs by window, the bias by head: two constants
            scores = ctx.emit(relax.op.reshape(scores, (ctx.batch, -1, heads, n, n)), node)
            scores = ctx.emit(relax.op.add(scores, ctx.const(_mask(plan), wide)), node)
            scores = ctx.emit(relax.op.reshape(scores, (bw, heads, n, n)), node)
        return scores

    out = attend(ctx, node, [q, k, v], (bw, n, c), adjust)
    if ctx.accumulate:
        out = ctx.emit(relax.op.astype(out, ctx.dtype), node)
    proj = PROJECTIONS[a["keys"]][1]
    y = relax.op.matmul(out, ctx.const(ctx.weights[f"{name}.{proj}.weight"].T),
                        out_dtype=ctx.accumulate)
    proj_bias = ctx.weights.get(f"{name}.{proj}.bias") if a["bias"] else None
    return ctx.emit(_bias(ctx, node, y, proj_bias, (1, 1, -1)), node)


def _qkv(ctx: _Ctx, node: Node, x: relax.Expr, dims: tuple[int, int, int]) -> list[relax.Expr]:
    """Q, K and V, each (batch·windows) × heads × N × C/heads, in the accumulation dtype."""
    bw, n, c = dims
    heads = node.attrs["heads"]
    qkv = f"{node.name}.{PROJECTIONS[node.attrs['keys']][0]}"
    weight = ctx.weights[f"{qkv}.weight"]
    bias = ctx.weights.get(f"{qkv}.bias") if node.attrs["bias"] else None
    if bias is not None and node.attrs["cosine"]:  # Swin v2 has no key bias (torchvision
        bias = np.concatenate([bias[:c], np.zeros(c, bias.dtype), bias[2 * c:]])  # zeroes it)
    out = []
    for i in range(3):
        part = slice(i * c, (i + 1) * c)
        y = relax.op.matmul(x, ctx.const(weight[part].T), out_dtype=ctx.accumulate)
        y = ctx.emit(_bias(ctx, node, y, None if bias is None else bias[part], (1, 1, -1),
                           cast=False), node)
        y = ctx.emit(relax.op.reshape(y, (bw, n, heads, c // heads)), node)
        out.append(ctx.emit(relax.op.permute_dims(y, [0, 2, 1, 3]), node))
    return out


def _unit(ctx: _Ctx, node: Node, t: relax.Expr) -> relax.Expr:
    """t / max(‖t‖, 1e-12) along the last axis (torch.nn.functional.normalize)."""
    norm = relax.op.sqrt(relax.op.sum(relax.op.multiply(t, t), axis=[-1], keepdims=True))
    floor = ctx.const(np.array(1e-12), ctx.accumulate or ctx.dtype)
    return ctx.emit(relax.op.divide(t, relax.op.maximum(ctx.emit(norm, node), floor)), node)


def patch_merging(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    """Rows and columns paired (odd sizes zero-padded), the 2×2 neighbours stacked along the
    channels as (0,0), (1,0), (0,1), (1,1) — a reshape and one transpose — then LayerNorm and
    the reduction as a 1×1 convolution (or the reduction first, in v2)."""
    c, h, w = ins[0]
    ho, wo = -(-h // 2), -(-w // 2)
    x = xs[0]
    if (2 * ho, 2 * wo) != (h, w):
        x = ctx.emit(relax.op.nn.pad(x, [0, 0, 0, 0, 0, 2 * ho - h, 0, 2 * wo - w]), node)
    x = ctx.emit(relax.op.reshape(x, (ctx.batch, c, ho, 2, wo, 2)), node)
    x = ctx.emit(relax.op.permute_dims(x, [0, 5, 3, 1, 2, 4]), node)  # b, dw, dh, c, ho, wo
    x = ctx.emit(relax.op.reshape(x, (ctx.batch, 4 * c, ho, wo)), node)
    if not node.attrs["post_norm"]:
        x = _norm(ctx, node, x)
    weight = ctx.weights[f"{node.name}.reduction.weight"]
    y = relax.op.nn.conv2d(x, ctx.const(weight.reshape(*weight.shape, 1, 1)),
                           out_dtype=ctx.accumulate)
    y = ctx.emit(_bias(ctx, node, y, None, (1, -1, 1, 1)), node)
    return _norm(ctx, node, y) if node.attrs["post_norm"] else y


def _norm(ctx: _Ctx, node: Node, x: relax.Expr) -> relax.Expr:
    """LayerNorm over the channels, in the accumulation dtype where there is one."""
    wide = ctx.accumulate or ctx.dtype
    if ctx.accumulate:
        x = ctx.emit(relax.op.astype(x, wide), node)
    y = ctx.emit(relax.op.nn.layer_norm(
        x, ctx.const(ctx.weights[f"{node.name}.norm.weight"], wide),
        ctx.const(ctx.weights[f"{node.name}.norm.bias"], wide), axes=[1],
        epsilon=node.attrs["eps"]), node)
    return ctx.emit(relax.op.astype(y, ctx.dtype), node) if ctx.accumulate else y

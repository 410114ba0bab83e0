"""Lowerings of the channel-routing ops (archdsl/ops/channels.py's CHANNEL_OPS: slice,
channel_shuffle, affine) to Relax; part of lower.py's LOWERINGS table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from tvm import relax

from archdsl.backends.tvm.context import _feature_view
from archdsl.ir import Node

if TYPE_CHECKING:
    from .context import Lowering, _Ctx


def _feature_axis(shape: tuple[int, ...]) -> int:
    """The batched axis `ops.features` means: a map's channels, a vector's entries (1) or the
    features of each token of a sequence (2)."""
    return 2 if len(shape) == 2 else 1


def _slice(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    a = node.attrs
    return relax.op.strided_slice(xs[0], axes=[_feature_axis(ins[0])], begin=[a["start"]],
                                  end=[a["end"]])


def _channel_shuffle(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    """N×C×H×W viewed as N×G×(C/G)×H×W, the two group axes swapped, viewed back."""
    c, h, w = ins[0]
    g = node.attrs["groups"]
    y = ctx.emit(relax.op.reshape(xs[0], (ctx.batch, g, c // g, h, w)), node)
    y = ctx.emit(relax.op.permute_dims(y, [0, 2, 1, 3, 4]), node)
    return relax.op.reshape(y, (ctx.batch, c, h, w))


def _affine(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    scale, shift = (np.array(node.attrs[k], dtype=np.float64).reshape(
                        _feature_view(ins[0]) if len(node.attrs[k]) > 1 else ())
                    for k in ("scale", "shift"))
    y = ctx.emit(relax.op.multiply(xs[0], ctx.const(scale)), node)
    return relax.op.add(y, ctx.const(shift))


LOWERINGS: dict[str, Lowering] = {
    "slice": _slice,
    "channel_shuffle": _channel_shuffle,
    "affine": _affine,
}

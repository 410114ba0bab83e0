"""Lowerings of the activations (archdsl/ops/activations.py's ACTIVATION_OPS) to Relax, each
computing what its torch.nn module does; part of lower.py's LOWERINGS table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from tvm import relax

from archdsl.ir import Node

if TYPE_CHECKING:
    from .context import Lowering, _Ctx

# nn.SELU's constants (Klambauer et al. 2017, eq. 14)
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _scalar(ctx: _Ctx, value: float) -> relax.Expr:
    return ctx.const(np.array(value))


def _hard_sigmoid(ctx: _Ctx, node: Node, x: relax.Expr) -> relax.Expr:
    """relu6(x + 3) / 6, PyTorch's Hardsigmoid."""
    r6 = ctx.emit(relax.op.clip(relax.op.add(x, _scalar(ctx, 3.0)), 0.0, 6.0), node)
    return relax.op.divide(r6, _scalar(ctx, 6.0))


def _hardsigmoid(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    return _hard_sigmoid(ctx, node, xs[0])


def _hardswish(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    return relax.op.multiply(xs[0], ctx.emit(_hard_sigmoid(ctx, node, xs[0]), node))


def _negative_exp(ctx: _Ctx, node: Node, x: relax.Expr, alpha: float, scale: float = 1.0):
    """where(x > 0, x, alpha·(exp(x/scale) − 1)): ELU's and CELU's negative part. exp is taken
    of min(x, 0) so that large positive inputs never overflow where they are not used."""
    neg = ctx.emit(relax.op.minimum(x, _scalar(ctx, 0.0)), node)
    if scale != 1.0:
        neg = ctx.emit(relax.op.divide(neg, _scalar(ctx, scale)), node)
    e = ctx.emit(relax.op.subtract(relax.op.exp(neg), _scalar(ctx, 1.0)), node)
    e = ctx.emit(relax.op.multiply(e, _scalar(ctx, alpha)), node)
    return relax.op.where(relax.op.greater(x, _scalar(ctx, 0.0)), x, e)


def _elu(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    return _negative_exp(ctx, node, xs[0], node.attrs["alpha"])


def _celu(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    alpha = node.attrs["alpha"]
    return _negative_exp(ctx, node, xs[0], alpha, alpha)


def _selu(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    y = ctx.emit(_negative_exp(ctx, node, xs[0], _SELU_ALPHA), node)
    return relax.op.multiply(y, _scalar(ctx, _SELU_SCALE))


def _softplus(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    return relax.op.nn.softplus(xs[0], node.attrs["beta"], node.attrs["threshold"])


def _mish(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    sp = ctx.emit(relax.op.nn.softplus(xs[0], 1.0, 20.0), node)
    return relax.op.multiply(xs[0], relax.op.tanh(sp))


def _softsign(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    denom = ctx.emit(relax.op.add(relax.op.abs(xs[0]), _scalar(ctx, 1.0)), node)
    return relax.op.divide(xs[0], denom)


def _logsigmoid(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    """log(sigmoid(x)) = −softplus(−x), which stays finite for very negative x."""
    sp = ctx.emit(relax.op.nn.softplus(relax.op.negative(xs[0]), 1.0, 20.0), node)
    return relax.op.negative(sp)


def _shrink(ctx: _Ctx, node: Node, xs, ins, soft: bool) -> relax.Expr:
    """Hardshrink: x where |x| > lambd, else 0; Softshrink: x − lambd·sign(x) there."""
    lambd, x = node.attrs["lambd"], xs[0]
    kept = x
    if soft:
        step = ctx.emit(relax.op.multiply(relax.op.sign(x), _scalar(ctx, lambd)), node)
        kept = ctx.emit(relax.op.subtract(x, step), node)
    outside = ctx.emit(relax.op.greater(relax.op.abs(x), _scalar(ctx, lambd)), node)
    return relax.op.where(outside, kept, relax.op.zeros_like(x))


def _threshold(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    above = relax.op.greater(xs[0], _scalar(ctx, node.attrs["threshold"]))
    value = ctx.emit(relax.op.add(relax.op.zeros_like(xs[0]),
                                  _scalar(ctx, node.attrs["value"])), node)
    return relax.op.where(above, xs[0], value)


def _prelu(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    slopes = ctx.weights[f"{node.name}.weight"]
    if slopes.size == 1:  # one slope: x · (slope where x < 0, else 1)
        scaled = ctx.emit(relax.op.multiply(xs[0], ctx.const(slopes.reshape(()))), node)
        return relax.op.where(relax.op.greater(xs[0], _scalar(ctx, 0.0)), xs[0], scaled)
    return relax.op.nn.prelu(xs[0], ctx.const(slopes), axis=1)


def _gelu(ctx: _Ctx, node: Node, xs, ins) -> relax.Expr:
    if node.attrs["approximate"] == "tanh":
        return relax.op.nn.gelu_tanh(xs[0])
    return relax.op.nn.gelu(xs[0])  # erf form, as nn.GELU()


LOWERINGS: dict[str, Lowering] = {
    "relu": lambda ctx, n, xs, ins: relax.op.nn.relu(xs[0]),
    "relu6": lambda ctx, n, xs, ins: relax.op.clip(xs[0], 0.0, 6.0),
    "sigmoid": lambda ctx, n, xs, ins: relax.op.sigmoid(xs[0]),
    "tanh": lambda ctx, n, xs, ins: relax.op.tanh(xs[0]),
    "gelu": _gelu,
    "swish": lambda ctx, n, xs, ins: relax.op.nn.silu(xs[0]),
    "hardswish": _hardswish,
    "hardsigmoid": _hardsigmoid,
    "hardtanh": lambda ctx, n, xs, ins: relax.op.clip(
        xs[0], n.attrs["min_val"], n.attrs["max_val"]),
    "leakyrelu": lambda ctx, n, xs, ins: relax.op.nn.leakyrelu(xs[0],
                                                              n.attrs["negative_slope"]),
    "elu": _elu,
    "celu": _celu,
    "selu": _selu,
    "softplus": _softplus,
    "mish": _mish,
    "softsign": _softsign,
    "logsigmoid": _logsigmoid,
    "prelu": _prelu,
    "hardshrink": lambda ctx, n, xs, ins: _shrink(ctx, n, xs, ins, soft=False),
    "softshrink": lambda ctx, n, xs, ins: _shrink(ctx, n, xs, ins, soft=True),
    "tanhshrink": lambda ctx, n, xs, ins: relax.op.subtract(xs[0], relax.op.tanh(xs[0])),
    "threshold": _threshold,
    # inference: the mean slope (nn.RReLU in eval mode)
    "rrelu": lambda ctx, n, xs, ins: relax.op.nn.leakyrelu(
        xs[0], (n.attrs["lower"] + n.attrs["upper"]) / 2),
    "softmax": lambda ctx, n, xs, ins: relax.op.nn.softmax(xs[0], axis=1),
    "softmin": lambda ctx, n, xs, ins: relax.op.nn.softmax(relax.op.negative(xs[0]), axis=1),
    "log_softmax": lambda ctx, n, xs, ins: relax.op.nn.log_softmax(xs[0], axis=1),
}

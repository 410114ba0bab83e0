"""What every lowering rule shares: the context it sees (builder, weights, dtype, batch) and the
helpers for biases and per-feature broadcasting. `lower.py` holds the rules of most ops,
`windows.py` Swin's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tvm import relax

from archdsl.ir import Node


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


def _hint(name: str) -> str:
    """A Relax variable name hint from a node name (`layer1.0.conv1` → `layer1_0_conv1`)."""
    hint = "".join(c if c.isalnum() else "_" for c in name)
    return hint if hint[:1].isalpha() else f"n{hint}"


Lowering = Callable[[_Ctx, Node, list[relax.Expr], list[tuple[int, ...]]], relax.Expr]


def _feature_view(shape: tuple[int, ...]) -> tuple[int, ...]:
    """How a per-feature vector broadcasts against a batch of `shape` (archdsl's
    `ops.features`: channels of a map, features of each token, a vector's entries)."""
    return {3: (1, -1, 1, 1), 2: (1, 1, -1), 1: (1, -1)}[len(shape)]


def _bias(ctx: _Ctx, node: Node, y: relax.Expr, bias: np.ndarray | None,
          view: tuple[int, ...], cast: bool = True) -> relax.Expr:
    """A convolution's or matrix product's `y` (in `ctx.accumulate` where there is one) plus its
    bias (in the same dtype), cast to the build's dtype unless `cast` is False."""
    if bias is not None:
        y = relax.op.add(ctx.emit(y, node), ctx.const(bias.reshape(view), ctx.accumulate))
    if ctx.accumulate and cast:
        y = relax.op.astype(ctx.emit(y, node), ctx.dtype)
    return y


# Keys (and values) of an attention are padded with zeros to a multiple of _KEY_BLOCK, their
# scores masked, where that adds at most _MAX_KEY_PAD of their number: the softmax's rows and
# Q·Kᵀ's columns then fill whole vector blocks (two AVX-512 vectors, four AVX2 ones).
_KEY_BLOCK = 32
_MAX_KEY_PAD = 0.15
_MASKED = -1e30  # a padded key's score: its exp is exactly 0 (TOPI's fast exp clamps at -88)


def attend(ctx: _Ctx, node: Node, qkv: list[relax.Expr], dims: tuple[int, int, int],
           adjust: Callable[[relax.Expr], relax.Expr] | None = None) -> relax.Expr:
    """softmax(Q·Kᵀ)·V per head of B×heads×N×d tensors (Q already scaled; `adjust` adds to the
    scores before the softmax), as `dims` B×N×(heads·d): two batched matrix products and a
    softmax, each a kernel of its own that the CPU schedules take (the `batch_matmul` and
    `rows` rules), not one fused op for the catch-all rule. Without `adjust`, the keys and
    values are padded with zeros to whole blocks, the padded keys' scores masked (their
    softmax weights exactly 0: the result is the unpadded one): ViT-B/16's 197 tokens as
    224 keys, its softmax rows and Q·Kᵀ's columns whole vectors — batch 1, one thread, each
    kernel alone, a layer's softmax 1.10 → 0.30 ms, Q·Kᵀ 0.69 → 0.45 (no padded copy and
    crop in the kernel), scores·V 0.41 → 0.53 (27 more keys): 2.41 → 1.52 ms with K's
    transposition. (Swin's windows, with their position bias and mask, are not padded: 49
    tokens would be 64.)"""
    q, k, v = qkv
    b, n, c = dims
    keys, wide = -(-n // _KEY_BLOCK) * _KEY_BLOCK, ctx.accumulate or ctx.dtype
    pad = keys - n if adjust is None and keys - n <= n * _MAX_KEY_PAD else 0
    if pad:
        heads = node.attrs["heads"]
        zeros = ctx.const(np.zeros((b, heads, pad, c // heads)), wide)
        k, v = (ctx.emit(relax.op.concat([t, zeros], axis=2), node) for t in (k, v))
    scores = ctx.emit(relax.op.matmul(q, relax.op.permute_dims(k, [0, 1, 3, 2])), node)
    if pad:
        mask = np.where(np.arange(keys) < n, 0.0, _MASKED).reshape(1, 1, 1, keys)
        scores = ctx.emit(relax.op.add(scores, ctx.const(mask, wide)), node)
    if adjust is not None:
        scores = adjust(scores)
    attn = ctx.emit(relax.op.nn.softmax(scores, axis=-1), node)
    out = ctx.emit(relax.op.matmul(attn, v), node)  # B×heads×N×d
    return ctx.emit(relax.op.reshape(relax.op.permute_dims(out, [0, 2, 1, 3]), dims), node)

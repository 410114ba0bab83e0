"""Channel-blocked activations from convolution to convolution: NCHW → NCHW[b]c once, at the ends.

The layout of NeoCPU (TVM's x86 strategy) and of ONNX Runtime's NCHWc transformer: with the b
channels of a pixel side by side (b = the target's vector width), a convolution keeps whole
vectors of output channels in registers and stores them as they are, its epilogue (bias,
residual, activation) runs on vectors, a depthwise convolution is one vector per pixel at any
width and stride, and pools, gates and residual adds are vector code too. `Blocked` rewrites a
float32 Relax graph before legalization:

- dense and depthwise convolutions with constant weights become the blocked computes of
  `blocked.py` (`call_te`), their weights packed and padded in numpy; a dense one whose input
  is not blocked and has too few channels to fill vectors (an RGB image) reads it as it is; a
  grouped one too when each group's input and output channels are whole blocks, or when a few
  neighbouring groups make whole blocks together (`merge_groups`: block-diagonal weights, at
  most 4× the multiply-adds); others, and channel multipliers, stay NCHW;
- elementwise ops, pools, channel means and channel concatenations of blocked tensors stay
  blocked (their per-channel constants blocked the same way);
- channel routing stays blocked at any channel counts: a channel slice at any offset (a split,
  a chunk), a concatenation of parts that do not fill blocks and a channel shuffle (reshape to
  N·G·C/G·H·W, swap, reshape back) are one `blocked.channel_gather` each, blocked to blocked,
  which fusion merges with its neighbours (a ShuffleNet unit's concat, its shuffle and the
  next unit's split, where nothing else reads them);
- every other use of a blocked tensor gets it back as NCHW (one `layout_transform`, and a
  slice where channels were padded): correct for any op, fast for the ones in `RULES`.

Padded channels hold finite values (activations of zeros): blocked convs multiply them by zero
weights, and nothing that mixes channels sees them. Ops that could make them infinite (exp,
power, a division other than by a non-zero scalar) are not in `RULES`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from archdsl.backends.tvm.schedules import blocked, winograd
from archdsl.backends.tvm.schedules.common import Machine
from archdsl.backends.tvm.schedules.conv_blocked import (
    FLAT_PIXELS,
    LARGE_FLAT_GAIN,
    pixel_tile,
    tail_blocks,
)
from archdsl.backends.tvm.schedules.layout import pad_axis, padded, rewrite_functions

__all__ = ["RULES", "Blocked"]

_Const = tvm.ir.expr.GenericConst


def pack_conv(w: np.ndarray, b: int, ib: int, blocks: int | None = None) -> np.ndarray:
    """OIHW → OCb·⌈I/ib⌉·H·W·ib·b, zero-padded: OCb = ⌈O/b⌉, or `blocks` (more, to make
    whole register tiles)."""
    o, i, kh, kw = w.shape
    w = pad_axis(pad_axis(w, 0, max(padded(o, b), (blocks or 0) * b)), 1, padded(i, ib))
    return w.reshape(-1, b, w.shape[1] // ib, ib, kh, kw).transpose(0, 2, 4, 5, 3, 1)


MAX_MERGED_GROUPS = 4


def merge_groups(weight: np.ndarray, groups: int, b: int, in_width: int,
                 out_width: int) -> tuple[np.ndarray, int] | None:
    """Groups narrower than a block (RegNet's 8 channels on AVX-512's 16 lanes, ResNeXt-50's 4
    on AVX2's 8) as fewer groups of whole blocks: k neighbouring groups become one whose weights
    are zero between different original groups (block-diagonal), the smallest k that makes the
    merged group's input and output widths whole blocks, at most `MAX_MERGED_GROUPS` (the merged
    conv does k times the multiply-adds). Groups are added, all zero, to make a multiple of k
    where the blocked tensors' padding holds them (`in_width`/`out_width`: the padded channel
    counts): RegNetY-400MF's 104 channels are 13 groups of 8, 7 merged groups of 16 in 112.
    The OIHW weights of the merged conv and its group count; None when no k fits."""
    o, gi, kh, kw = weight.shape
    go = o // groups
    for k in range(2, MAX_MERGED_GROUPS + 1):
        count = -(-groups // k)  # merged groups
        if (k * gi) % b or (k * go) % b or count * k * gi > in_width or count * k * go > out_width:
            continue
        parts = np.zeros((count * k, go, gi, kh, kw), weight.dtype)
        parts[:groups] = weight.reshape(groups, go, gi, kh, kw)
        parts = parts.reshape(count, k, go, gi, kh, kw)
        diagonal = np.zeros((count, k, go, k, gi, kh, kw), weight.dtype)
        for j in range(k):
            diagonal[:, j, :, j] = parts[:, j]
        return diagonal.reshape(count * k * go, k * gi, kh, kw), count
    return None


def pack_depthwise(w: np.ndarray, b: int) -> np.ndarray:
    """C·1·H·W → ⌈C/b⌉·H·W·b, zero-padded."""
    c, _, kh, kw = w.shape
    w = pad_axis(w.reshape(c, kh, kw), 0, padded(c, b))
    return w.reshape(-1, b, kh, kw).transpose(0, 2, 3, 1)


@dataclass
class _Value:
    var: relax.Expr  # the blocked tensor, N·⌈C/b⌉·H·W·b
    channels: int


def _shape(expr) -> tuple[int, ...] | None:
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    try:
        return None if shape is None else tuple(int(d) for d in shape)
    except TypeError:  # a symbolic dimension
        return None


def _float32(expr) -> bool:
    return str(getattr(expr.ty, "dtype", "")) == "float32"


@tvm.transform.module_pass(opt_level=0, name="archdsl.Blocked")
class Blocked:
    """Channel-blocked float32 activations between convolutions, on llvm targets
    (`tvm.target.Target.current()`; elsewhere a no-op), in blocks of `block` channels (by
    default the target's vector width); 3×3 convs by Winograd where it pays
    (`winograd.use`), unless `winograd` is False."""

    def __init__(self, block: int | None = None, winograd: bool = True) -> None:
        self.block = block
        self.winograd = winograd

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        def make(m: tvm.IRModule, target: tvm.target.Target) -> _Rewriter:
            machine = Machine.of(target)
            return _Rewriter(m, self.block or machine.lanes, machine, self.winograd)

        return rewrite_functions(mod, make)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, b: int, machine: Machine,
                 by_winograd: bool = True) -> None:
        super().__init__(mod)
        self.b = b
        self.machine = machine
        self.by_winograd = by_winograd
        self.blocked: dict[relax.Var, _Value] = {}
        self.plain: dict[relax.Var, relax.Var] = {}
        self.values: dict[relax.Var, relax.Expr] = {}  # the source's bindings, for patterns

    def visit_var_binding_(self, binding) -> None:
        value = binding.value
        self.values[binding.var] = value
        rule = RULES.get(getattr(getattr(value, "op", None), "name", ""))
        if rule is not None and isinstance(binding.var, relax.DataflowVar):
            made = rule(self, value)
            if made is not None:
                expr, channels = made
                var = self.builder_.emit(expr)
                self.blocked[binding.var] = _Value(var, channels)
                return
        for var in relax.analysis.free_vars(value):
            if var in self.blocked:
                self.set_var_remap(var, self.unblocked(var))
        super().visit_var_binding_(binding)

    # ---- conversions, each made once per tensor

    def unblocked(self, var: relax.Var) -> relax.Var:
        """The NCHW tensor of a blocked one."""
        if var not in self.plain:
            value, b = self.blocked[var], self.b
            n, cb, h, w, _ = _shape(value.var)
            if h == w == 1:  # one pixel (a global pool's): the same bytes, a free reshape
                out = self.builder_.emit(relax.op.reshape(value.var, (n, cb * b, 1, 1)))
            else:
                out = self.builder_.emit(relax.op.layout_transform(
                    value.var, index_map=lambda n, cb, h, w, ci: (n, cb * b + ci, h, w)))
            if value.channels % b:
                out = self.builder_.emit(relax.op.strided_slice(
                    out, axes=[1], begin=[0], end=[value.channels]))
            self.plain[var] = out
        return self.plain[var]

    def block(self, expr) -> relax.Expr | None:
        """The blocked tensor of an NCHW float32 activation (None for anything else)."""
        if isinstance(expr, relax.Var) and expr in self.blocked:
            return self.blocked[expr].var
        shape = _shape(expr)
        if not isinstance(expr, relax.Var) or shape is None or len(shape) != 4 \
                or not _float32(expr):
            return None
        b = self.b
        var = self.builder_.emit(relax.op.layout_transform(
            self.visit_expr(expr), index_map=lambda n, c, h, w: (n, c // b, h, w, c % b),
            pad_value=0.0))
        self.blocked[expr] = _Value(var, shape[1])
        return var

    def is_blocked(self, expr) -> bool:
        return isinstance(expr, relax.Var) and expr in self.blocked

    def channel_const(self, expr, channels: int) -> relax.Expr | None:
        """A per-channel constant (1·C·1·1 or C·1·1) blocked; a scalar one as it is."""
        value = expr.value.numpy()
        if value.size == 1:
            return expr
        if value.size != channels or value.shape[-3:] != (channels, 1, 1) \
                or value.ndim not in (3, 4):
            return None
        b = self.b
        v = pad_axis(value.reshape(channels), 0, padded(channels, b)).reshape(1, -1, 1, 1, b)
        return relax.const(np.ascontiguousarray(v), str(value.dtype))


# ---------------------------------------------------------------- the rules

Made = tuple[relax.Expr, int] | None  # the blocked expression and its real channel count


def _conv(rw: _Rewriter, call: relax.Call) -> Made:
    a = call.attrs
    x, w = call.args
    if not (isinstance(w, _Const) and a.data_layout == "NCHW" and a.kernel_layout == "OIHW"
            and a.out_layout == "NCHW" and _float32(x)
            and str(a.out_dtype) in ("None", "", "void", "float32")):
        return None
    weight = w.value.numpy()
    o, i = weight.shape[:2]
    channels, groups, b = _shape(x)[1], int(a.groups), rw.b
    geometry = dict(strides=[int(s) for s in a.strides], padding=[int(p) for p in a.padding],
                    dilation=[int(d) for d in a.dilation], out_dtype="float32")
    # groups of whole blocks: each output block reads its own group's input blocks
    whole_groups = groups > 1 and (channels // groups) % b == 0 and (o // groups) % b == 0
    merged = None
    if groups > 1 and not whole_groups and not (groups == channels == o and i == 1):
        merged = merge_groups(weight, groups, b, padded(channels, b), padded(o, b))
        if merged is not None:
            weight, groups = merged
    if groups == 1 or whole_groups or merged is not None:
        if rw.is_blocked(x) or channels % b == 0 or merged is not None:
            data, ib = rw.block(x), b
        else:  # too few channels to fill vectors (an image): read as NCHW
            data, ib = rw.visit_expr(x), 1
        ocb = padded(weight.shape[0], b) // b
        icb = padded(channels, b) // b
        out = _shape(call)
        if rw.by_winograd and winograd.use(weight.shape[2:], a.strides, a.dilation, groups,
                                           ib > 1, out[2:]):
            _, _, tiled = winograd.product_tile(ocb, winograd.tiles(out[2:]), rw.machine)
            packed = relax.const(winograd.pack(weight, b))
            return rw.builder_.call_te(winograd.conv2d, data, packed, geometry["padding"],
                                       tiled, primfunc_name_hint="conv2d_winograd"), o
        plane = _flat_plane(call, rw.machine, ocb, icb) if groups == 1 and ib > 1 else None
        # whole register tiles, as the rule will tile them: rows (or a flat plane) of whole
        # tiles of pixels; a dense conv's output blocks padded to whole tiles of vectors
        windowed = weight.shape[2] * weight.shape[3] > 1
        vectors, _, extent = pixel_tile(
            ocb // groups, _shape(call)[3] if plane is None else plane, rw.machine,
            None if plane is None else icb, pad_vectors=groups == 1,
            window=plane is not None and windowed, unblocked=ib == 1, reused=windowed)
        blocks = -(-ocb // vectors) * vectors if groups == 1 else ocb
        array = np.ascontiguousarray(pack_conv(weight, b, ib, blocks))
        packed = relax.const(array)
        if plane is not None:  # tiled as one flat axis
            return rw.builder_.call_te(blocked.flat_conv2d, data, packed, **geometry,
                                       pixels=extent, blocks=ocb,
                                       primfunc_name_hint="conv2d_blocked"), o
        tail = tail_blocks(rw.machine, array.shape, out[2:], extent, groups, ocb)
        return rw.builder_.call_te(blocked.conv2d, data, packed, **geometry, width=extent,
                                   groups=groups, blocks=ocb, tail=tail,
                                   primfunc_name_hint="conv2d_blocked"), o
    if groups == channels == o and i == 1:
        packed = relax.const(np.ascontiguousarray(pack_depthwise(weight, b)))
        return rw.builder_.call_te(blocked.depthwise_conv2d, rw.block(x), packed, **geometry,
                                   primfunc_name_hint="depthwise_conv2d_blocked"), o
    return None


def _flat_plane(call: relax.Call, machine: Machine, ocb: int, icb: int) -> int | None:
    """The output plane's pixels of a dense conv of a blocked input (`ocb` output and `icb`
    input blocks) to tile as one flat axis, or None to tile it by rows. Planes of up to
    `conv_blocked.FLAT_PIXELS` pixels: a 1×1 unpadded, undilated conv's always; another's
    when the flat plane wastes fewer pixels on whole tiles than its rows do (a 7×7 plane's
    rows of 7 are computed 8 wide, its 49 pixels as 25 tiles of 2 only 50). So does a larger
    plane of a 1×1 stride-1 conv's (its tiles' epilogue per tile, `conv_blocked.plan_conv`)."""
    a, out = call.attrs, _shape(call)
    if out is None:
        return None
    plane = out[2] * out[3]
    windowed = tuple(call.args[1].value.shape[2:]) != (1, 1)
    pointwise = (not any(int(p) for p in a.padding) and all(int(d) == 1 for d in a.dilation)
                 and not windowed)
    if plane > FLAT_PIXELS and not (pointwise and all(int(s) == 1 for s in a.strides)):
        return None
    if pointwise and plane <= FLAT_PIXELS:
        return plane
    _, _, row = pixel_tile(ocb, out[3], machine, pad_vectors=True, reused=windowed)
    _, _, flat = pixel_tile(ocb, plane, machine, icb, pad_vectors=True, window=not pointwise,
                            reused=windowed)
    saved = row / out[3] - flat / plane  # the share of pixels the rows would compute in vain
    # (a larger plane only for a clear saving)
    return plane if saved >= LARGE_FLAT_GAIN or plane <= FLAT_PIXELS and saved > 0 else None


def _elementwise(rw: _Rewriter, call: relax.Call) -> Made:
    """An elementwise op with a blocked operand: its other operands blocked too (activations of
    the same channels, per-channel or scalar constants), the op as it is."""
    shape = _shape(call)
    if shape is None or len(shape) != 4 or not any(rw.is_blocked(x) for x in call.args):
        return None
    channels = shape[1]
    args = []
    for x in call.args:
        if isinstance(x, _Const):
            x = rw.channel_const(x, channels)
        elif isinstance(x, relax.Var):
            x = rw.block(x) if (_shape(x) or (0, 0))[1:2] == (channels,) else None
        if x is None:
            return None
        args.append(x)
    return relax.Call(call.op, args, call.attrs), channels


def _divide(rw: _Rewriter, call: relax.Call) -> Made:
    """A division by a finite, non-zero scalar constant (hardswish's and hardsigmoid's / 6):
    elementwise, and finite on padded channels (a per-channel divisor is padded with zeros)."""
    divisor = call.args[1]
    if not isinstance(divisor, _Const):
        return None
    value = divisor.value.numpy()
    if value.size != 1 or not np.isfinite(value).all() or not value.all():
        return None
    return _elementwise(rw, call)


def _pool(make: Callable) -> Callable[[_Rewriter, relax.Call], Made]:
    def rule(rw: _Rewriter, call: relax.Call) -> Made:
        x = call.args[0]
        if not rw.is_blocked(x) or call.attrs.layout != "NCHW":
            return None
        layout = f"NCHW{rw.b}c"
        return make(rw.blocked[x].var, call.attrs, layout), rw.blocked[x].channels
    return rule


def _max_pool(x, a, layout):
    return relax.op.nn.max_pool2d(x, a.pool_size, a.strides, a.padding, a.dilation, a.ceil_mode,
                                  a.count_include_pad, layout, layout)


def _avg_pool(x, a, layout):
    return relax.op.nn.avg_pool2d(x, a.pool_size, a.strides, a.padding, a.dilation, a.ceil_mode,
                                  a.count_include_pad, layout, layout)


def _adaptive_avg_pool(x, a, layout):
    return relax.op.nn.adaptive_avg_pool2d(x, a.output_size, layout, layout)


def _spatial_reduce(rw: _Rewriter, call: relax.Call) -> Made:
    """A mean (or max, sum) over the spatial axes, kept: GAP, and squeeze-and-excitation's."""
    x = call.args[0]
    axes = sorted(int(v) for v in (call.attrs.axis or []))
    if not rw.is_blocked(x) or axes != [2, 3] or not call.attrs.keepdims:
        return None
    return (relax.Call(call.op, [rw.blocked[x].var], call.attrs), rw.blocked[x].channels)


def _concat(rw: _Rewriter, call: relax.Call) -> Made:
    """Along channels: a concat of blocks when every part fills whole blocks (DenseNet,
    Inception), else a gather (ShuffleNet's 58 + 58)."""
    parts = call.args[0].fields if isinstance(call.args[0], relax.Tuple) else None
    if (parts is None or int(call.attrs.axis) != 1 or not any(rw.is_blocked(p) for p in parts)
            or any(len(_shape(p) or ()) != 4 for p in parts)):
        return None
    sizes = [_shape(p)[1] for p in parts]
    if any(size % rw.b for size in sizes):
        starts = np.cumsum([0, *sizes[:-1]]).tolist()

        def route(c, read):  # the last part whose channels start at or before c
            got = read(0, c)
            for p, start in enumerate(starts[1:], 1):
                got = tvm.tirx.if_then_else(c >= start, read(p, c - start), got)
            return got
        return _gather(rw, parts, sum(sizes), route)
    blocked_parts = [rw.block(p) for p in parts]
    if any(p is None for p in blocked_parts):
        return None
    return relax.op.concat(blocked_parts, axis=1), sum(sizes)


def _gather(rw: _Rewriter, parts, out: int, route: blocked.Route) -> Made:
    """`out` channels routed from blocked `parts` (see `blocked.channel_gather`)."""
    blocked_parts = [rw.block(p) for p in parts]
    if any(p is None for p in blocked_parts):
        return None
    # bound here: call_te passes on tensors, numbers and strings only
    gather = functools.partial(blocked.channel_gather, route=route)
    return rw.builder_.call_te(gather, *blocked_parts, channels=[_shape(p)[1] for p in parts],
                               out=out, primfunc_name_hint="channel_gather"), out


def _slice(rw: _Rewriter, call: relax.Call) -> Made:
    """Channels begin..end of a blocked tensor (a split's or chunk's part), at any offset."""
    x, axes, begin, end, *strides = call.args
    shape = _shape(x)
    if not rw.is_blocked(x) or shape is None or [int(a) for a in axes.fields] != [1] \
            or any(int(s) != 1 for s in (strides[0].fields if strides else ())):
        return None
    out = _shape(call)[1]
    first = int(begin.fields[0])
    first = max(0, first + shape[1] if first < 0 else min(first, shape[1]))
    return _gather(rw, [x], out, lambda c, read: read(0, c + first))


def _shuffle(rw: _Rewriter, call: relax.Call) -> Made:
    """reshape(permute_dims(reshape(x, N·G·C/G·H·W), [0, 2, 1, 3, 4]), N·C·H·W) of a blocked
    x: channel c of the result is channel (c % G)·C/G + c // G of x."""
    swapped = rw.values.get(call.args[0])
    grouped = rw.values.get(swapped.args[0]) if _is(swapped, "permute_dims") else None
    if not (_is(grouped, "reshape") and rw.is_blocked(grouped.args[0])
            and [int(a) for a in swapped.attrs.axes] == [0, 2, 1, 3, 4]):
        return None
    x = grouped.args[0]
    n, c, h, w = _shape(x)
    g = (_shape(grouped) or (0, 0))[1]
    if _shape(grouped) != (n, g, c // g, h, w) or _shape(call) != (n, c, h, w):
        return None
    per = c // g
    return _gather(rw, [x], c, lambda o, read: read(0, o % g * per + o // g))


def _is(expr, op: str) -> bool:
    return isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == f"relax.{op}"


_ELEMENTWISE = ("add", "subtract", "multiply", "maximum", "minimum", "clip", "sigmoid", "tanh",
                "negative", "abs", "nn.relu", "nn.leakyrelu", "nn.silu", "nn.gelu",
                "nn.gelu_tanh")

# Relax op → how it is made on blocked tensors (None: it is not, here)
RULES: dict[str, Callable[[_Rewriter, relax.Call], Made]] = {
    "relax.nn.conv2d": _conv,
    **{f"relax.{op}": _elementwise for op in _ELEMENTWISE},
    "relax.divide": _divide,
    "relax.nn.max_pool2d": _pool(_max_pool),
    "relax.nn.avg_pool2d": _pool(_avg_pool),
    "relax.nn.adaptive_avg_pool2d": _pool(_adaptive_avg_pool),
    "relax.mean": _spatial_reduce,
    "relax.max": _spatial_reduce,
    "relax.concat": _concat,
    "relax.strided_slice": _slice,
    "relax.reshape": _shuffle,
}

"""Relax rewrites before fusion that the CPU schedules rely on: whole vectors of output channels.

The conv and dense rules keep a block of output channels — one or two vectors of the target's
width — in registers. A layer whose width the vector does not divide (ResNet's 1000-class FC
on AVX-512's 16 lanes, an 8-channel stem, a 12-channel 1×1) would leave a remainder, and
remainder tiles in TVM cost predicates in the innermost loop. Instead its constant weights get
zero rows up to the next multiple of the vector width, and a slice takes the real channels
back: the slice fuses into the layer's epilogue (bias, residual, activation), so the padded
channels are computed in registers and never stored. The extra work is below one vector per
layer (1000 → 1008 on AVX-512).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from archdsl.backends.tvm.schedules.common import vector_lanes

__all__ = ["PadChannels", "pad_axis", "padded", "rewrite_functions"]

_CONV2D = tvm.ir.Op.get("relax.nn.conv2d")
_MATMUL = tvm.ir.Op.get("relax.matmul")
_Const = tvm.ir.expr.GenericConst  # a Relax constant (relax.const makes one)


def padded(width: int, lanes: int) -> int:
    """The next multiple of `lanes` from `width`."""
    return -(-width // lanes) * lanes


def pad_axis(weight: np.ndarray, axis: int, width: int) -> np.ndarray:
    pads = [(0, 0)] * weight.ndim
    pads[axis] = (0, width - weight.shape[axis])
    return np.pad(weight, pads)


def _channels_axis(call: relax.Call) -> int | None:
    """The weight axis of a layer's output channels, when the layer is one the conv or dense
    rule schedules with its weights constant: a dense (groups = 1) NCHW/OIHW convolution, or
    a matrix product by a constant K×N matrix (the FC lowering's)."""
    if len(call.args) < 2 or not isinstance(call.args[1], _Const):
        return None
    if call.op.same_as(_CONV2D):
        a = call.attrs
        plain = a.data_layout == "NCHW" and a.kernel_layout == "OIHW" and a.out_layout == "NCHW"
        return 0 if plain and int(a.groups) == 1 else None
    if call.op.same_as(_MATMUL) and len(call.args[1].value.shape) == 2:
        return 1
    return None


@tvm.transform.module_pass(opt_level=0, name="archdsl.PadChannels")
class PadChannels:
    """Pad the output channels of convolutions and FC layers to whole vectors of the current
    target (`tvm.target.Target.current()`, an llvm one; elsewhere a no-op)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(mod, lambda m, target: _Rewriter(m, vector_lanes(target)))


def rewrite_functions(mod: tvm.IRModule, make) -> tvm.IRModule:
    """Every Relax function of `mod` through the mutator `make(mod, target)` returns, when the
    current target is an llvm one (the rewrites of this package are the CPU's); else `mod`."""
    target = tvm.target.Target.current(allow_none=True)
    if target is None or target.kind.name != "llvm":
        return mod
    rewriter = make(mod, target)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.get()


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int) -> None:
        super().__init__(mod)
        self.lanes = lanes

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        axis = _channels_axis(call)
        if axis is None:
            return call
        weight = call.args[1].value.numpy()
        width = weight.shape[axis]
        if width % self.lanes == 0:
            return call
        wide = pad_axis(weight, axis, padded(width, self.lanes))
        inner = relax.Call(call.op, [call.args[0], relax.const(wide, str(wide.dtype))],
                           call.attrs)
        out = self.builder_.emit(inner)
        # conv: NCHW channels are axis 1; matmul: the last axis
        out_axis = 1 if axis == 0 else len(call.ty.shape) - 1
        return relax.op.strided_slice(out, axes=[out_axis], begin=[0], end=[width])

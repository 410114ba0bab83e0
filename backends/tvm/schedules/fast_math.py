"""Activations that vectorize on CPUs: exp, sigmoid, SiLU/swish, tanh, erf and GELU through TOPI's
polynomial approximations (`fast_exp`, `fast_tanh`, `fast_erf`), before legalization.

LLVM has no vector `exp`: TVM's `exp` becomes one libm `expf` call per element, so a fused
conv + SiLU kernel of EfficientNet spent more time in its epilogue than in its products (the
16→96 1×1 conv on 112×112: 13 ms, 3 GFLOP/s). The approximations are a few multiply-adds that
vectorize and stay in registers. Their error (TOPI's; fast_exp ~1e-7 relative, fast_tanh and
fast_erf ~1e-6 absolute, measured in tests/backends/test_tvm_schedules.py) is far below what a
float32 network's output shows; float16 tensors keep TVM's exact functions.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, te, topi

from archdsl.backends.tvm.schedules.layout import rewrite_functions

__all__ = ["FastMath"]


def _sigmoid(x: te.Tensor) -> te.Tensor:
    one = tvm.tirx.const(1.0, x.dtype)
    e = topi.fast_exp(topi.negative(x))
    return te.compute(x.shape, lambda *i: one / (one + e(*i)), name="fast_sigmoid")


def _silu(x: te.Tensor) -> te.Tensor:
    return topi.multiply(x, _sigmoid(x))


def _gelu(x: te.Tensor) -> te.Tensor:
    half = tvm.tirx.const(0.5, x.dtype)
    erf = topi.fast_erf(topi.multiply(x, tvm.tirx.const(1 / math.sqrt(2), x.dtype)))
    return te.compute(x.shape, lambda *i: half * x(*i) * (tvm.tirx.const(1.0, x.dtype)
                                                           + erf(*i)), name="fast_gelu")


# Relax op → a TE function of its one tensor argument (float32 only)
_FAST = {
    "relax.exp": topi.fast_exp,
    "relax.tanh": topi.fast_tanh,
    "relax.erf": topi.fast_erf,
    "relax.sigmoid": _sigmoid,
    "relax.nn.silu": _silu,
    "relax.nn.gelu": _gelu,
}


@tvm.transform.module_pass(opt_level=0, name="archdsl.FastMath")
class FastMath:
    """Replace float32 exp, tanh, erf, sigmoid, SiLU, GELU and softmax by TOPI's fast
    approximations on llvm targets (`tvm.target.Target.current()`; elsewhere a no-op)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(mod, lambda m, target: _Rewriter(m))


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        op = getattr(call.op, "name", None)
        if op not in _FAST and op != "relax.nn.softmax":
            return call
        if str(getattr(call.args[0].ty, "dtype", "")) != "float32":
            return call
        if op == "relax.nn.softmax":
            return self.builder_.call_te(topi.nn.fast_softmax, call.args[0],
                                         int(call.attrs.axis))
        return self.builder_.call_te(_FAST[op], call.args[0],
                                     primfunc_name_hint=op.rsplit(".", 1)[1])

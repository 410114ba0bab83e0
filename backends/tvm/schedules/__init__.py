"""archdsl's default CPU schedules: fast kernels without tuning, from what the graph's ops are.

Before fusion (`build._fuse_passes`) the Relax graph is rewritten for the CPU: `blocking.Blocked`
keeps float32 activations channel-blocked (NCHW[b]c, b = the vector width) from convolution to
convolution, converting once at the ends, with the convolutions as the computes of `blocked.py`;
`layout.PadChannels` gives FC layers (and the NCHW convs of float16 builds) whole vectors of
outputs; `fast_math.FastMath` makes activations vectorizable. After legalization and fusion a
CPU build has one PrimFunc per fused group: a blocked (or, in float16, TOPI's NCHW) convolution
with a padding stage and its epilogue (bias, residual add, activation: batch norm is folded into
the weights), matmuls against a pre-transposed weight, pools, reductions and elementwise ops.
Left as they are, every loop runs scalar on one core. `schedule_cpu`, a schedule hook of
`backends/tvm/build.py`, gives each function that tuning did not schedule a schedule by the
first rule in `RULES` that fits:

- Winograd convolution (`winograd.py`): 3×3 stride-1 convs on planes of 14×14 and up by
  F(4×4, 3×3) — per image, the input tiles transformed, a register-tiled product per tile
  position with weights transformed at compile time, the output tiles transformed back with
  the epilogue.
- blocked convolution (`conv_blocked.py`): the direct algorithm of the NeoCPU / oneDNN / ONNX
  Runtime NCHWc kernels — a register tile of output-channel vectors × pixels sized by the
  target's registers (broadcast input × a vector of weights → FMA), the reduction over input
  channel blocks and the window inside, blocked by input channels so that weights and partial
  sums stay in L1, parallel over (batch, channel group, rows), the epilogue on vectors (by
  rows: per register tile, as its last chunk of input channels is summed).
  Blocked depthwise convolutions (`depthwise.py`): one vector of channels per output pixel.
- NCHW convolution (`conv.py`, `depthwise.py`; float16 builds): as above on NCHW activations,
  weights repacked to OIHW{vo}o at compile time (numpy, at the call sites), the epilogue per
  tile; depthwise convs vectorized along output rows.
- dense (FC, and linear layers over a batch of tokens): weights repacked to N/{vo}·K·{vo}, a
  tile of rows × one vector block in registers; with several row tiles, the reduction in
  chunks, each row tile prefetching its share of the next chunk's weights.
- batched products of two activations (attention's Q·Kᵀ and scores·V, `batch_matmul.py`):
  the same register tiles with the right operand read in place, its columns padded to whole
  vectors where they do not fill them.
- pooling, global pooling and other reductions over trailing axes: parallel over the outer
  spatial axes, the padding read in place, vectorized where the input is read at stride 1 (a
  blocked tensor's channels).
- row kernels (softmax, layer norm, `rows.py`): every stage computed per row, parallel over
  the rows, reductions over whole vectors as vectors of partial results.
- column kernels (a layer norm over an NCHW map's channels, `rows.py`): every stage per row
  of pixels, parallel over the rows, the reductions over the channels as vectors of the
  row's pixels.
- elementwise (and reshape, concat, layout transforms): inlined into one loop nest, vectorized
  and parallel.
- the rest: its outer loops parallel where they have several iterations.
  (dlight's CPU reduction rule made a 1000-class softmax 3.4 ms instead of 4 µs: not used.)

Each function scheduled here carries the attribute `MARK` (the rule's name) besides
"tirx.is_scheduled", and runs its parallel loops in one launch of the thread pool where that is
safe (`launch.py`: a conv's padding stage and rows, a batch's images). `compile(...,
schedules=False)` turns the rules off (TVM's naive loops on the same rewritten graph). Measured
effects are in the README's Performance section and in the rules' docstrings.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx

from archdsl.backends.tvm import trunk_threads
from archdsl.backends.tvm.schedules.batch_matmul import batch_matmul
from archdsl.backends.tvm.schedules.common import Kernel, Plan, Rule
from archdsl.backends.tvm.schedules.conv import conv2d
from archdsl.backends.tvm.schedules.conv_blocked import conv2d_blocked
from archdsl.backends.tvm.schedules.dense import dense
from archdsl.backends.tvm.schedules.depthwise import depthwise_blocked, depthwise_conv2d
from archdsl.backends.tvm.schedules.elementwise import fallback_parallel, injective
from archdsl.backends.tvm.schedules.launch import one_launch
from archdsl.backends.tvm.schedules.pool import pool
from archdsl.backends.tvm.schedules.rows import columns, rows
from archdsl.backends.tvm.schedules.winograd import conv2d_winograd

__all__ = ["MARK", "RULES", "default_schedule", "schedule_cpu", "scheduled_by"]

MARK = "archdsl.schedule"
# Attributes that say "already scheduled": TVM 0.27 spells it tirx.*, older code tir.*
_SCHEDULED = ("tirx.is_scheduled", "tir.is_scheduled")
_Const = tvm.ir.expr.GenericConst  # a Relax constant (relax.const makes one)

# The rules, tried in order on each function; the first that returns a plan schedules it.
RULES: dict[str, Rule] = {
    "conv2d_winograd": conv2d_winograd,
    "conv2d_blocked": conv2d_blocked,
    "depthwise_blocked": depthwise_blocked,
    "conv2d": conv2d,
    "depthwise_conv2d": depthwise_conv2d,
    "dense": dense,
    "batch_matmul": batch_matmul,
    "pool": pool,
    "rows": rows,
    "columns": columns,
    "injective": injective,
    "parallel": fallback_parallel,
}


def scheduled_by(func) -> str | None:
    """The name of the archdsl rule that scheduled `func`, if one did."""
    attrs = getattr(func, "attrs", None)
    return str(attrs[MARK]) if attrs is not None and MARK in attrs else None


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return func.attrs is not None and any(bool(func.attrs.get(k, False)) for k in _SCHEDULED)


# ---------------------------------------------------------------- the hook

def schedule_cpu(mod: tvm.IRModule, target: tvm.target.Target,
                 options: dict) -> tvm.IRModule:
    """Schedule every PrimFunc of a fused CPU module that is not scheduled yet (a schedule hook:
    `build.SCHEDULE_HOOKS`). `options["schedules"] = False` leaves the module alone."""
    if target.kind.name != "llvm" or not options.get("schedules", True):
        return mod
    sites = _call_sites(mod)
    # a trunk whose chunks run on several threads at once calls its kernels from each thread
    # (`trunk_threads`): they are planned for one
    alone = trunk_threads.trunk_kernels(mod)
    single = tvm.target.Target({**target.export(), "num-cores": 1}) if alone else target
    plans: dict[tvm.ir.GlobalVar, Plan] = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
            continue
        constant = frozenset(i for i in range(len(func.params))
                             if all(isinstance(args[i], _Const)
                                    for args in sites.get(gv, [()]) if len(args) > i)
                             and gv in sites)
        plan = default_schedule(func, single if gv in alone else target, constant)
        if plan is not None:
            plans[gv] = plan
    return _install(mod, plans)


def default_schedule(func: tirx.PrimFunc, target: tvm.target.Target,
                     constant_params: frozenset[int] = frozenset()) -> Plan | None:
    """One function's plan by the first rule in `RULES` that fits (None if none does), marked
    scheduled and with the rule's name under `MARK`. `constant_params`: the indices of the
    params that are constants at every call site, whose layout the plan may change. (The
    tuning hook measures these plans against its tuned schedules.)"""
    kernel = Kernel(func, target, constant_params)
    for name, rule in RULES.items():
        plan = _try(rule, kernel)
        if plan is not None:
            plan.func = one_launch(plan.func).with_attrs({"tirx.is_scheduled": True, MARK: name})
            return plan
    return None


def _try(rule: Rule, kernel: Kernel) -> Plan | None:
    """A rule's plan, or None when the rule does not fit (or a schedule primitive refuses)."""
    try:
        return rule(kernel)
    except (RuntimeError, ValueError, IndexError):  # TVM's errors are RuntimeErrors
        return None


def _call_sites(mod: tvm.IRModule) -> dict[tvm.ir.GlobalVar, list[tuple]]:
    """The arguments of every `call_tir` in the module's Relax functions, by callee."""
    sites: dict[tvm.ir.GlobalVar, list[tuple]] = {}
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            for call in trunk_threads.call_tirs(func):
                if isinstance(call.args[1], relax.Tuple):
                    sites.setdefault(call.args[0], []).append(tuple(call.args[1].fields))
    return sites


def _install(mod: tvm.IRModule, plans: dict[tvm.ir.GlobalVar, Plan]) -> tvm.IRModule:
    """Put the scheduled functions into (a copy of) the module. A function whose constants
    change layout changes type, so it gets a new GlobalVar (typed by the BlockBuilder) and its
    call sites get the new callee and the repacked constants."""
    mod = mod.clone()
    for gv, plan in plans.items():
        if plan.packs:
            del mod[gv]
        else:
            mod[gv] = plan.func
    bb = relax.BlockBuilder(mod)
    renamed = {gv: (bb.add_func(plan.func, gv.name_hint), plan.packs)
               for gv, plan in plans.items() if plan.packs}
    mod = bb.get()
    if not renamed:
        return mod
    call_tir = tvm.ir.Op.get("relax.call_tir")

    @relax.expr_functor.mutator
    class Repack(relax.PyExprMutator):
        def visit_call_(self, call):
            if not (call.op.same_as(call_tir) and call.args[0] in renamed):
                return super().visit_call_(call)
            callee, packs = renamed[call.args[0]]
            args = list(call.args[1].fields)
            for i, pack in packs.items():
                value = np.ascontiguousarray(pack(args[i].value.numpy()))
                args[i] = relax.const(value, str(value.dtype))
            return relax.Call(call.op, [callee, relax.Tuple(args)], call.attrs, call.ty_args)

    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = Repack(mod).visit_expr(func)
    return mod

"""Kernels that write their output over an operand that dies with them (a residual add's).

A fused conv whose epilogue adds a tensor of its output's shape (ResNet's shortcut) reads that
tensor and writes a fresh one of the same size: at batch 32 both stream through memory, the
fresh one read for ownership before it is written. When the added tensor has no reader after
the kernel, the kernel writes its output over it instead, as ONNX Runtime's fused Conv + Add
accumulates into the shortcut's buffer: `R.call_tir_inplace`, the operand passed again as the
output argument (the kernel itself is unchanged).

Safe only when (each checked, else the call is left alone):
- the operand is a tensor the function made itself (a `call_tir` result, not a parameter, a
  constant or a reshape, which the VM turns into a view of another tensor), passed once, with
  no use after this call and not the function's result;
- it has the output's shape and dtype, every block of the kernel that reads it is spatial
  (no reduction, which would read an element again after writing it) and writes the output
  at exactly the elements it reads (an elementwise epilogue), and no block reads the output:
  each element is read, then overwritten, and never read again, so the kernel's `noalias`
  parameters still hold for every access that may be reordered.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm_ffi import structural_equal

from archdsl.backends.tvm.schedules.common import top_blocks

__all__ = ["WriteOverDeadOperands", "overwritable"]


def _same_region(a, b) -> bool:
    return len(a.region) == len(b.region) and all(
        structural_equal(x.min, y.min) and structural_equal(x.extent, y.extent)
        for x, y in zip(a.region, b.region, strict=True))


def overwritable(func: tirx.PrimFunc, index: int) -> bool:
    """Whether `func` may write its output (its last parameter) over its parameter `index`:
    same shape and dtype, read only by blocks that write the output at the elements they
    read, the output never read."""
    params = list(func.params)
    if not 0 <= index < len(params) - 1:
        return False
    source, out = params[index], params[-1]  # a block's regions name the parameters
    if (source.ty.dtype != out.ty.dtype or len(source.ty.shape) != len(out.ty.shape)
            or not all(structural_equal(a, b)
                       for a, b in zip(source.ty.shape, out.ty.shape, strict=True))):
        return False
    if not isinstance(func.body, s_tir.SBlockRealize):
        return False  # not in blocks (the trunk driver): nothing to read here
    sch = s_tir.Schedule(func)
    readers = 0
    for block in (sch.get(b) for b in top_blocks(sch)):
        if any(r.source.same_as(out) for r in block.reads):
            return False
        reads = [r for r in block.reads if r.source.same_as(source)]
        if not reads:
            continue
        writes = [w for w in block.writes if w.source.same_as(out)]
        # a reduction would read the operand again after writing the element: only blocks
        # whose every axis is spatial, each instance reading then writing its element once
        spatial = block.init is None and all(
            int(iv.iter_type) == tirx.IterVar.DataPar for iv in block.iter_vars)
        if (not spatial or len(reads) != 1 or len(writes) != 1
                or not _same_region(reads[0], writes[0])):
            return False
        readers += 1
    return readers > 0


@tvm.transform.module_pass(opt_level=0, name="archdsl.WriteOverDeadOperands")
class WriteOverDeadOperands:
    """Turn the `call_tir`s whose kernel may write over an operand that dies with the call
    into `call_tir_inplace` (see the module's docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates = {gv: _rewrite(mod, func) for gv, func in mod.functions.items()
                   if isinstance(func, relax.Function)}
        for gv, func in updates.items():
            if func is not None:
                mod[gv] = func
        return mod


def _is_call_tir(value) -> bool:
    return isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.call_tir"))


def _rewrite(mod: tvm.IRModule, func: relax.Function) -> relax.Function | None:
    if not isinstance(func.body, relax.SeqExpr):
        return None
    bindings = [b for block in func.body.blocks for b in block.bindings]
    last_use, made_by = {}, {}
    for n, b in enumerate(bindings):
        for var in relax.analysis.free_vars(b.value):
            last_use[var] = n
        made_by[b.var] = b.value
    for var in relax.analysis.free_vars(func.body.body):
        last_use[var] = len(bindings)  # the function's result

    over = {}  # binding var → the argument its call writes over
    for n, b in enumerate(bindings):
        if (not _is_call_tir(b.value) or len(b.value.args) != 2  # no symbolic-shape args
                or not isinstance(b.value.args[1], relax.Tuple)):
            continue
        kernel = mod[b.value.args[0]]
        args = list(b.value.args[1].fields)
        if not isinstance(kernel, tirx.PrimFunc) or len(kernel.params) != len(args) + 1:
            continue
        for index, arg in enumerate(args):
            if (isinstance(arg, relax.Var) and last_use.get(arg) == n
                    and sum(a.same_as(arg) for a in args) == 1
                    and _fresh(mod, made_by.get(arg)) and overwritable(kernel, index)):
                over[b.var] = index
                break
    if not over:
        return None

    @relax.expr_functor.mutator
    class Calls(relax.PyExprMutator):
        def visit_var_binding_(self, binding):
            if binding.var not in over:
                return super().visit_var_binding_(binding)
            call = binding.value
            args = [self.visit_expr(a) for a in call.args[1].fields]
            index = over[binding.var]
            # the kernel's output parameter gets the operand too: it writes where it reads
            new = relax.call_tir_inplace(call.args[0], relax.Tuple([*args, args[index]]),
                                         len(args), call.ty_args[0])
            new = self.builder_.normalize(new)
            self.builder_.emit_normalized(relax.VarBinding(binding.var, new))

    return Calls(mod).visit_expr(func)


def _fresh(mod: tvm.IRModule, value) -> bool:
    """Whether `value` (what a var is bound to) makes a tensor of its own: a `call_tir` of a
    kernel that is not a reshape (the VM makes those views of their input)."""
    if not _is_call_tir(value):
        return False
    kernel = mod[value.args[0]]
    # (a kernel not in blocks, the trunk's driver of `trunk_threads`, reshapes nothing)
    return isinstance(kernel, tirx.PrimFunc) and not (
        isinstance(kernel.body, s_tir.SBlockRealize)
        and relax.analysis.has_reshape_pattern(kernel))

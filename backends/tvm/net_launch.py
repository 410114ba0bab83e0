"""The network's kernels in one launch of the thread pool: a run of CPU kernels that `main`
calls one after another, each a launch of the pool (`schedules/launch.py` makes each kernel
one), becomes one PrimFunc that launches it once and runs the kernels' parallel loops in turn,
a barrier after each:

    launch:                                    # every thread runs this, once
        for t in parallel(threads):            # one iteration a thread
            conv_1_stage0(t, x, w1, a, ...)    # the thread's share of conv_1's rows
        barrier
        for t in parallel(threads):
            conv_2_stage0(t, a, w2, b, ...)
        barrier
        ...

Where idle threads sleep (`TVM_THREAD_POOL_SPIN_COUNT=0`, as `bench_tvm.py` runs every
runtime), each launch wakes the workers and waits for them; a barrier between threads already
awake costs far less (`launch.py`: 46 µs against 5.5 µs for two loops). MobileNet v1 at batch
one on two threads calls 31 kernels, most of them a launch: with the workers spinning it had
taken 4.27 ms, sleeping 4.72–4.94.

Each kernel is cut at its parallel loops (`_Runs._stages`): each loop becomes a *stage*, a
PrimFunc of (thread, the kernel's buffers, the serial loops around it) that runs the thread's
share of the loop's iterations (the shares TVM gives a parallel loop's threads), its body as
the kernel's schedule made it and compiled once however often the run calls it. A buffer of
the kernel's that one stage alone uses stays in that stage, where TVM places it as in the
kernel (a row's padding in the row's iteration: with the kernels' buffers whole-image ones
passed in, MobileNet v1 at batch one took 0.95× the time of its kernels one launch each, as
against 0.90×); one that several stages share, and the tensors
between the run's kernels, are the run's, in one allocation (`trunk_threads.arena`) where a
tensor takes the place of one no longer read (`trunk_threads._slots`). A kernel whose every
statement outside its parallel loops is a serial loop around them can be cut so
(`launch.launches`); one without a parallel loop (a reshape, a softmax at batch one) is called
whole by one thread while the others wait at its barrier. Any other kernel, one long enough
that a launch of its own costs it little (`_MAX_WORK`), a binding that is not a `call_tir` of
one tensor of static shape, ends a run, as does reading more than
`_MAX_INPUTS` tensors (each a checked parameter of the run's PrimFunc, and LLVM's time grows
faster than a function's size); a run of fewer than two kernels with parallel loops is left
as it was, and so are the serial kernels at its ends. Nothing is done for one thread."""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import ir, relax, s_tir, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from archdsl.backends.tvm.inplace import overwritable
from archdsl.backends.tvm.schedules.common import found_nodes
from archdsl.backends.tvm.schedules.launch import BARRIER, LAUNCH, launches
from archdsl.backends.tvm.trunk_threads import (
    _slots,
    address,
    arena,
    call_tirs,
    in_arena,
    last_uses,
    tensor,
)

__all__ = ["NET", "OneLaunch", "cut_points"]

NET = "archdsl_launch"  # a run's PrimFunc (archdsl_launch1, ... after the first)
# tensors a run reads at most (its weights, mostly): each is a parameter of the run's PrimFunc,
# checked on entry, and LLVM takes time superlinear in the size of one function
_MAX_INPUTS = 32
# a kernel longer than this many buffer stores (`_work`: a conv's multiply-adds; about a
# millisecond on two cores) keeps a launch of its own: the launch's waking of the threads is
# a few percent of its time at most, and between a run's kernels the threads wait at barriers
# spinning, not asleep — on a host that lends its cores by quota a spinning thread spends
# the time its peer needs (ResNet-50 at batch 32, every kernel 0.45–1.4 G stores, in launches
# took 1.08–1.17× the time of one launch a kernel by medians, 0.1–0.2 s more system time a
# run spent yielding at the barriers)
_MAX_WORK = 1 << 28


def _parallel_loops(stmt) -> int:
    return len(found_nodes(stmt, tirx.For, lambda loop: loop.kind == tirx.ForKind.PARALLEL))


def _serial_ones(stmt):
    """`stmt` with its parallel loops of one iteration serial (as lowering takes them)."""
    def serial(loop):
        if loop.kind != tirx.ForKind.PARALLEL or not isinstance(loop.extent, tirx.IntImm) \
                or int(loop.extent) != 1:
            return loop
        return tirx.For(loop.loop_var, loop.min, loop.extent, tirx.ForKind.SERIAL, loop.body,
                        loop.thread_binding, loop.annotations, loop.step)

    return tvm_ffi.structural_map(stmt, [(tirx.For, serial)])


def cut_points(func: tirx.PrimFunc) -> tirx.Stmt | None | bool:
    """How `func` runs in a launch: its loop nest of serial loops around parallel ones (each
    to be cut out as a stage), None when it has no parallel loop (one thread runs it whole),
    False when it cannot (see the module's docstring)."""
    realize = func.body
    if not isinstance(realize, s_tir.SBlockRealize):
        return False
    root = realize.block
    if root.iter_vars or root.match_buffers or root.init is not None \
            or any(_shape(b.ty) is None for b in root.alloc_buffers):
        return False
    stmt = root.body
    if isinstance(stmt, tirx.For) and LAUNCH in stmt.annotations:
        return stmt.body  # its loops in one launch already
    stmt = _serial_ones(stmt)
    if launches(stmt):
        return stmt
    # work outside its parallel loops would run on every thread
    return False if _parallel_loops(stmt) else None


@tvm.transform.module_pass(opt_level=0, name="archdsl.OneLaunch")
class OneLaunch:
    """Each run of kernels that a Relax function calls in turn, in one launch of a pool of
    `threads` (see the module's docstring); nothing for one thread."""

    def __init__(self, threads: int):
        self.threads = threads

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if self.threads < 2:
            return mod
        bb = relax.BlockBuilder(mod)
        runs = _Runs(bb, mod, self.threads)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function) and isinstance(func.body, relax.SeqExpr):
                new = runs.rewrite(func)
                if new is not None:
                    bb.update_func(gv, new)
        mod = bb.get()
        called = {call.args[0] for func in mod.functions.values()
                  if isinstance(func, relax.Function) for call in call_tirs(func)}
        for gv in runs.merged - called - runs.whole:  # kernels now only a run's stages
            del mod[gv]
        return mod


def _shape(ty) -> tuple[int, ...] | None:
    shape = getattr(ty, "shape", None)
    if shape is None or not all(isinstance(d, tirx.IntImm) for d in shape):
        return None
    return tuple(int(d) for d in shape)


class _Member:
    """A binding of a run, `var = call_tir(kernel, args)`, and the kernel's `cut_points`."""

    def __init__(self, binding, kernel_gv, kernel, args, nest):
        self.binding, self.gv, self.kernel, self.args = binding, kernel_gv, kernel, args
        self.nest, self.parallel = nest, nest is not None


def _inputs(run: list[_Member]) -> list:
    """What `run`'s kernels read that they do not make, in order, once each."""
    made = {m.binding.var for m in run}
    inputs: list = []
    for m in run:
        for arg in m.args:
            if arg not in made and not any(arg.same_as(i) for i in inputs):
                inputs.append(arg)
    return inputs


class _Runs:
    def __init__(self, bb: relax.BlockBuilder, mod: tvm.IRModule, threads: int):
        self.bb, self.mod, self.threads = bb, mod, threads
        self.merged: set = set()  # kernels a run took
        self.whole: set = set()  # kernels a run calls whole (no parallel loop)
        self.cut: dict = {}  # kernel → its loop nest with stages

    def rewrite(self, func: relax.Function) -> relax.Function | None:
        bindings = [b for block in func.body.blocks for b in block.bindings]
        self.position = {b.var: n for n, b in enumerate(bindings)}
        self.last_use: dict = {}
        for n, b in enumerate(bindings):
            for var in relax.analysis.free_vars(b.value):
                self.last_use[var] = n
        for var in relax.analysis.free_vars(func.body.body):
            self.last_use[var] = len(bindings)  # the function's result
        self.changed = False
        blocks = [self._block(block) for block in func.body.blocks]
        if not self.changed:
            return None
        return relax.Function(func.params, relax.SeqExpr(blocks, func.body.body), func.ret_ty,
                              func.is_pure, func.attrs)

    def _block(self, block):
        out, run = [], []
        dataflow = isinstance(block, relax.DataflowBlock)
        for binding in block.bindings:
            member = self._member(binding)
            if member is None:
                out.extend(self._flush(run, dataflow))
                run = []
                out.append(binding)
            else:
                if len(_inputs([*run, member])) > _MAX_INPUTS:  # a launch's size: below
                    out.extend(self._flush(run, dataflow))
                    run = []
                run.append(member)
        out.extend(self._flush(run, dataflow))
        return type(block)(out)

    def _member(self, binding) -> _Member | None:
        call = binding.value
        if not (isinstance(binding, relax.VarBinding) and isinstance(call, relax.Call)
                and call.op.same_as(tvm.ir.Op.get("relax.call_tir")) and len(call.args) == 2
                and isinstance(call.args[1], relax.Tuple)
                and isinstance(call.ty, relax.TensorType) and _shape(call.ty) is not None):
            return None
        kernel = self.mod[call.args[0]]
        args = list(call.args[1].fields)
        if not isinstance(kernel, tirx.PrimFunc) or len(kernel.params) != len(args) + 1:
            return None
        for arg, param in zip([*args, binding.var], kernel.params, strict=True):
            if not isinstance(arg, relax.Var | tvm.ir.expr.GenericConst) \
                    or _shape(arg.ty) != _shape(param.ty) \
                    or str(arg.ty.dtype) != str(param.ty.dtype):
                return None
        nest = cut_points(kernel)
        if nest is False or _work(kernel.body) > _MAX_WORK:
            return None
        return _Member(binding, call.args[0], kernel, args, nest)

    def _flush(self, run: list[_Member], dataflow: bool) -> list:
        """The bindings of `run`: as they were, or its kernels in one launch (from its first
        kernel with parallel loops to its last)."""
        first = next((i for i, m in enumerate(run) if m.parallel), len(run))
        last = max((i + 1 for i, m in enumerate(run) if m.parallel), default=first)
        if sum(m.parallel for m in run[first:last]) < 2:
            return [m.binding for m in run]
        inner = run[first:last]
        end = self.position[inner[-1].binding.var]
        outputs = [m.binding.var for m in inner if self.last_use.get(m.binding.var, -1) > end]
        if not outputs:
            return [m.binding for m in run]
        if len({str(m.binding.var.ty.dtype) for m in inner}
               | {str(b.ty.dtype) for m in inner for b in m.kernel.body.block.alloc_buffers}) > 1:
            return [m.binding for m in run]  # its buffers share one allocation (`arena`)
        inputs = _inputs(inner)
        gv = self._add(inner, inputs, outputs)
        self.changed = True
        self.merged.update(m.gv for m in inner)
        types = [v.ty for v in outputs]
        call = relax.call_tir(gv, relax.Tuple(inputs), types if len(types) > 1 else types[0])
        call = self.bb.normalize(call)
        if len(outputs) == 1:
            bindings = [relax.VarBinding(outputs[0], call)]
        else:
            both = (relax.DataflowVar if dataflow else relax.Var)("launch", call.ty)
            bindings = [relax.VarBinding(both, call)] + [
                relax.VarBinding(v, self.bb.normalize(relax.TupleGetItem(both, i)))
                for i, v in enumerate(outputs)]
        return [m.binding for m in run[:first]] + bindings + [m.binding for m in run[last:]]

    def _add(self, run: list[_Member], inputs: list, outputs: list) -> tvm.ir.GlobalVar:
        """The run's PrimFunc (inputs..., outputs...) in the module: see the module's
        docstring."""
        keys: list = []  # [(relax value or kernel buffer, key)]

        def key_of(value):
            for known, key in keys:
                if known.same_as(value):
                    return key
            raise KeyError(value)

        keys += [(a, ("in", i)) for i, a in enumerate(inputs)]
        keys += [(v, ("out", i)) for i, v in enumerate(outputs)]
        temps: list[tuple[tuple[int, ...], str]] = []
        steps = []
        for m in run:
            outs = []
            if not any(m.binding.var.same_as(v) for v in outputs):
                temps.append((_shape(m.binding.var.ty), str(m.binding.var.ty.dtype)))
                keys.append((m.binding.var, ("tmp", len(temps) - 1)))
            outs.append(key_of(m.binding.var))
            for buf in self._stages(m)[2]:  # buffers its stages share
                temps.append((_shape(buf.ty), str(buf.ty.dtype)))
                outs.append(("tmp", len(temps) - 1))
            steps.append((m.gv, [key_of(a) for a in m.args], outs))
        over = _overwrites(run, steps)
        stages = [self._stages(m) for m in run]
        slot_of, slots = _slots(steps, temps, range(len(temps)), over)
        with IRBuilder() as ib:
            with T.prim_func():
                T.func_name(NET)
                tensors = {("in", i): T.arg(f"in{i}", T.Buffer(_shape(a.ty), str(a.ty.dtype)))
                           for i, a in enumerate(inputs)}
                tensors.update({("out", i): T.arg(f"out{i}", T.Buffer(_shape(v.ty),
                                                                      str(v.ty.dtype)))
                                for i, v in enumerate(outputs)})
                T.func_attr({"tirx.is_scheduled": True})
                raw = arena(slots)
                tensors.update({("tmp", i): in_arena(raw[slot_of[i]], shape, dtype)
                                for i, (shape, dtype) in enumerate(temps)})
                with T.serial(0, 1, annotations={LAUNCH: 1}):
                    for n, ((tree, symbol, _), (_, args, outs)) in enumerate(
                            zip(stages, steps, strict=True)):
                        bufs = [tensors[k] for k in args + outs]
                        _emit(tree, symbol, bufs, self.threads, last=n == len(run) - 1)
        func = ib.get()
        # in a root block, as a kernel's body is: Relax passes look into a call_tir's function
        # for blocks (a run of one input and one output of the same size might be a reshape:
        # RewriteDataflowReshape's check fails on a body of no block)
        func = func.with_body(s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root",
                                                                          func.body)))
        gv = self.bb.add_func(func, NET)
        self.bb.update_func(gv, func.with_attr("global_symbol", gv.name_hint))
        return gv

    def _stages(self, m: _Member):
        """The kernel of `m` cut into its parallel loops: (its loop nest, with a stage's
        symbol where each parallel loop was; the kernel's symbol when it has none; the
        kernel's buffers that more than one stage uses). A stage is a PrimFunc of its own of
        (thread, the kernel's parameters, those buffers, the serial loops around it) that
        runs the thread's share of the loop's iterations, and holds the kernel's buffers that
        only it uses (where TVM places them as in the kernel: a row's padding in the row's
        iteration, not the whole image's); a kernel without parallel loops is called whole,
        by one thread."""
        if m.gv in self.cut:
            return self.cut[m.gv]
        if not m.parallel:
            self.whole.add(m.gv)
            self.cut[m.gv] = (None, m.gv.name_hint, [])
            return self.cut[m.gv]
        kernel = m.kernel
        allocs = list(kernel.body.block.alloc_buffers)
        loops = []

        def parallel_loops(stmt):
            if isinstance(stmt, tirx.SeqStmt):
                for part in stmt.seq:
                    parallel_loops(part)
            elif stmt.kind == tirx.ForKind.PARALLEL:
                loops.append(stmt)
            else:
                parallel_loops(stmt.body)

        parallel_loops(m.nest)
        users = {i: [n for n, loop in enumerate(loops) if _uses(loop, buf)]
                 for i, buf in enumerate(allocs)}
        shared = [buf for i, buf in enumerate(allocs) if len(users[i]) > 1]
        made = []

        def cut(stmt, around):
            if isinstance(stmt, tirx.SeqStmt):
                return ("seq", [cut(s, around) for s in stmt.seq])
            if stmt.kind != tirx.ForKind.PARALLEL:
                return ("for", stmt.loop_var, int(stmt.min), int(stmt.extent),
                        cut(stmt.body, [*around, stmt.loop_var]))
            n = len(made)
            own = [buf for i, buf in enumerate(allocs) if users[i] == [n]]
            func = _stage(stmt, [*kernel.params, *shared], own, around, self.threads)
            gv = self.bb.add_func(func, f"{m.gv.name_hint}_stage{n}")
            self.bb.update_func(gv, func.with_attr("global_symbol", gv.name_hint))
            made.append(gv)
            return ("stage", gv.name_hint, around)

        self.cut[m.gv] = (cut(m.nest, []), None, shared)
        return self.cut[m.gv]


def _uses(stmt, buf) -> bool:
    return bool(found_nodes(stmt, ir.expr.Var, lambda v: v.same_as(buf)))


def _overwrites(run: list[_Member], steps: list) -> dict[int, int]:
    """{output: argument} (intermediates of the run) where a kernel may write its output
    over an argument that dies with it (`inplace.overwritable`: a residual add's)."""
    last = last_uses(steps)
    over = {}
    for n, (m, (_, args, outs)) in enumerate(zip(run, steps, strict=True)):
        if outs[0][0] != "tmp":
            continue
        for index, key in enumerate(args):
            if key[0] == "tmp" and last[key] == n and args.count(key) == 1 \
                    and overwritable(m.kernel, index):
                over[outs[0][1]] = key[1]
                break
    return over


def _stage(loop: tirx.For, buffers: list, own: list, loops: list,
           threads: int) -> tirx.PrimFunc:
    """The parallel `loop` of a kernel as a PrimFunc of (thread, `buffers`..., the serial
    `loops` around it...) that runs thread `t`'s share of its iterations: `threads` runs of
    the same number of them, one after another, as TVM shares a parallel loop's."""
    t = tirx.Var("t", "int32")
    share = -(-int(loop.extent) // threads)
    start = loop.min + t * share
    stop = tirx.min(loop.min + loop.extent, start + share)
    annotations = {k: v for k, v in loop.annotations.items() if k not in (LAUNCH, BARRIER)}
    # the whole range with the thread's share picked out, not a range of its own: the
    # kernel's body is simplified knowing its loop variable's bounds, as in a parallel loop
    i = loop.loop_var
    mine = tirx.For(i, loop.min, loop.extent, tirx.ForKind.SERIAL,
                    tirx.IfThenElse(tirx.all(start <= i, i < stop), loop.body, None),
                    annotations=annotations)
    # the buffers come as pointers, but the first (a packed call's tensors would be built and
    # checked, a dozen of each kernel's stages, on every thread): one tensor tells TVM the
    # device, which the stage's own buffers are allocated on
    handles = [tirx.Var(f"p{i}", ir.PointerType(ir.PrimType(str(b.ty.dtype))))
               for i, b in enumerate(buffers[1:])]
    declared = [tirx.DeclBuffer(b, data=h) for b, h in zip(buffers[1:], handles, strict=True)]
    body = tirx.SeqStmt([*declared, mine]) if declared else mine  # (a fill: its output alone)
    body = s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", body,
                                                      alloc_buffers=own))
    func = tirx.PrimFunc([t, buffers[0], *handles, *loops], body)
    return s_tir.renew_defs(func.with_attrs({"tirx.is_scheduled": True, "tirx.noalias": True}))


def _emit(tree, symbol, bufs: list, threads: int, last: bool, loops=()) -> None:
    """The launch's statements for one kernel (its `tree` from `_Runs._stages`) on `bufs`
    (its parameters, then its stages' buffers), each stage in a parallel loop of one
    iteration a thread that ends in a barrier (but the run's last)."""
    barrier = {} if last else {BARRIER: 1}
    if tree is None:  # no parallel loop: one thread runs the kernel, the others wait
        with T.parallel(0, threads, annotations=barrier) as t:
            with T.If(t == 0):
                with T.Then():
                    T.evaluate(T.call_cpacked(symbol, *map(tensor, bufs)))
        return
    kind = tree[0]
    if kind == "seq":
        for i, part in enumerate(tree[1]):
            _emit(part, None, bufs, threads, last and i == len(tree[1]) - 1, loops)
    elif kind == "for":
        _, _, start, extent, inner = tree
        with T.serial(start, start + extent) as var:
            _emit(inner, None, bufs, threads, last and extent == 1, (*loops, var))
    else:
        _, name, around = tree
        with T.parallel(0, threads, annotations=barrier) as t:
            T.evaluate(T.call_cpacked(name, t, tensor(bufs[0]), *map(address, bufs[1:]),
                                      *loops))


def _work(stmt, times: int = 1) -> int:
    """How many buffer stores `stmt` runs (`times` over): loops of static extent multiply
    (others count once), a reduction's init runs once per reduction (a matmul's m·n·k stores
    and m·n inits)."""
    if isinstance(stmt, tirx.BufferStore):
        return times
    if isinstance(stmt, tirx.For):
        extent = int(stmt.extent) if isinstance(stmt.extent, tirx.IntImm) else 1
        return _work(stmt.body, times * extent)
    if isinstance(stmt, tirx.SeqStmt):
        return sum(_work(part, times) for part in stmt.seq)
    if isinstance(stmt, tirx.IfThenElse):
        return _work(stmt.then_case, times) + (_work(stmt.else_case, times)
                                               if stmt.else_case is not None else 0)
    if isinstance(stmt, s_tir.SBlockRealize):
        return _work(stmt.block, times)
    if isinstance(stmt, s_tir.SBlock):
        reduced = math.prod(int(v.dom.extent) for v in stmt.iter_vars
                            if v.iter_type == tirx.IterVar.CommReduce
                            and isinstance(v.dom.extent, tirx.IntImm))
        init = _work(stmt.init, max(1, times // reduced)) if stmt.init is not None else 0
        return init + _work(stmt.body, times)
    body = getattr(stmt, "body", None)  # LetStmt, AttrStmt, DeclBuffer, ...
    return _work(body, times) if isinstance(body, tirx.Stmt) else 0

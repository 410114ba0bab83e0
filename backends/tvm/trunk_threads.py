"""A batch's chunks across the threads: the trunk of a build in chunks (`lower.build_module`'s
`chunk`) for several threads runs as one parallel loop over the chunks, each thread taking
whole chunks through the trunk's kernels compiled for one thread — where `main` would call
the trunk chunk after chunk, each kernel a launch of the thread pool with the threads sharing
its work.

`lower.build_module(..., threads=T)` puts a placeholder (`PLACEHOLDER`, a PrimFunc that does
nothing) where `main` runs the trunk on the whole batch, and makes the trunk a public Relax
function (`TRUNK_FUNC`, of `chunk` images, marked `THREADS_ATTR`) that nothing calls. The
schedule hooks plan the trunk's kernels for one thread (`trunk_kernels`); then `make_driver`
turns the trunk's calls into a PrimFunc of its own (`DRIVER`):

    for t in parallel(T):                  # each thread: buffers of its own
        for j in range(chunks / T):         # and its share of the chunks, in turn
            kernel_1(x[chunk t·(chunks/T) + j], weights..., a)
            kernel_2(a, weights..., b)
            ...
            kernel_n(..., out[that chunk])

each call a direct call of the kernel's packed function (`call_cpacked`) on views of the
batch's input and output and on the thread's buffers, which the intermediates share where
they are not live together (`_slots`: what one kernel writes goes where an earlier one's
output, now read, was — still in the core's L2); the kernels' parallel loops are made serial
(`one_thread`), and `main` calls the driver in the placeholder's place. The thread pool is
launched once for the whole trunk, no thread waits for another until its last chunk is done,
and each image's layers hand it on in the core's own L2: what a build for one thread in
chunks does, on every core at once (measured in `chunks.py`).

A thread's buffers are one allocation (`arena`: TVM's storage planning, seeing no access
through the pointers handed to the kernels, gave two allocations of their own the same memory),
never one that TVM would put on the stack: those are aligned to 16 bytes, and the kernels
assume 64 (their AVX-512 loads of a misaligned squeeze-excitation vector faulted). A chunk
of the batch's input or output that starts off 64 bytes (three
5×5 planes of floats an image) is copied into a buffer of the thread's (or out of one)."""

from __future__ import annotations

import math

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from archdsl.backends.tvm.schedules.launch import BARRIER, LAUNCH

__all__ = ["DRIVER", "PLACEHOLDER", "THREADS_ATTR", "TrunkError", "address", "arena",
           "call_tirs", "in_arena", "last_uses", "make_driver", "one_thread", "tensor",
           "trunk_kernels"]

PLACEHOLDER = "archdsl_trunk_chunks"  # stands where main runs the trunk, until `make_driver`
DRIVER = "archdsl_trunk_driver"
THREADS_ATTR = "archdsl.chunk_threads"  # on the trunk function: the threads of its driver
_Const = tvm.ir.expr.GenericConst  # a Relax constant
_ALIGN = 64  # bytes: a kernel's buffers are assumed aligned so (TVM's storage_alignment)
_HEAP = 4096  # bytes: buffers this big (above TVM's kMaxStackAlloca, 1 KB) come from the heap


class TrunkError(RuntimeError):
    """A trunk that `make_driver` cannot run from one PrimFunc (a binding it does not know)."""


def _aligned(elements: int, itemsize: int) -> bool:
    """Whether a chunk of `elements` elements starts every later chunk on a kernel's
    alignment (the views the driver hands the kernels must be)."""
    return elements * itemsize % _ALIGN == 0


def placeholder(x: relax.TensorType, out: relax.TensorType) -> tirx.PrimFunc:
    """A PrimFunc of `x` into `out` that does nothing: it stands where `main` runs the trunk
    on the whole batch until `make_driver` puts the driver there."""
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name(PLACEHOLDER)
            T.arg("x", T.Buffer(_shape(x), x.dtype))
            T.arg("out", T.Buffer(_shape(out), out.dtype))
            # opaque: fused with nothing (FuseOps), scheduled by no rule
            T.func_attr({"tirx.is_scheduled": True, "op_pattern": 8})
            T.evaluate(0)
    return ib.get()


def _trunk(mod: tvm.IRModule) -> tuple[tvm.ir.GlobalVar, relax.Function] | None:
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function) and func.attrs is not None \
                and THREADS_ATTR in func.attrs:
            return gv, func
    return None


def trunk_kernels(mod: tvm.IRModule) -> set[tvm.ir.GlobalVar]:
    """The PrimFuncs that only the trunk of a driver-run build calls (to be scheduled for one
    thread); empty without one."""
    found = _trunk(mod)
    if found is None:
        return set()
    called: dict[tvm.ir.GlobalVar, set[tvm.ir.GlobalVar]] = {}
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            for callee in {call.args[0] for call in call_tirs(func)}:
                called.setdefault(callee, set()).add(gv)
    return {callee for callee, callers in called.items() if callers == {found[0]}}


def call_tirs(func: relax.Function) -> list[relax.Call]:
    """The `call_tir`s in a Relax function."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(
        e, relax.Call) and e.op.same_as(call_tir) else None)
    return found


def one_thread(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` with its parallel loops serial and no launch of the thread pool: a kernel that
    the driver calls from inside its own parallel loop."""
    def strip(stmt):
        annotations = {k: v for k, v in stmt.annotations.items() if k not in (LAUNCH, BARRIER)}
        kind = tirx.ForKind.SERIAL if stmt.kind == tirx.ForKind.PARALLEL else stmt.kind
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, kind, stmt.body,
                        stmt.thread_binding, annotations, stmt.step)

    return func.with_body(tvm_ffi.structural_map(func.body, [(tirx.For, strip)]))


def make_driver(mod: tvm.IRModule) -> tvm.IRModule:
    """The module with its trunk run by a driver (see the module's docstring); the module
    itself when it has no trunk to drive. A `TrunkError` when the trunk holds a binding the
    driver cannot make."""
    found = _trunk(mod)
    if found is None:
        return mod
    trunk_gv, trunk = found
    threads = int(trunk.attrs[THREADS_ATTR])
    placeholder = mod.get_global_var(PLACEHOLDER)
    call = _placeholder_call(mod, placeholder)
    steps, consts, temps = _steps(trunk)
    chunk = _shape(trunk.params[0].ty)[0]
    batch_in, batch_out = _shape(call.args[1].fields[0].ty), _shape(call.ty)
    chunks = batch_in[0] // chunk
    if chunks % threads:
        raise TrunkError(f"{chunks} chunks do not share evenly among {threads} threads")
    alone = trunk_kernels(mod)
    bb = relax.BlockBuilder(mod.clone())
    symbols: dict[tvm.ir.GlobalVar, str] = {}
    for gv, _, _ in steps:
        if gv in symbols:
            continue
        func = one_thread(mod[gv])
        if gv not in alone:  # main calls it too: the driver calls a copy for one thread
            copy = bb.add_func(func, gv.name_hint + "_chunk")
            symbols[gv] = copy.name_hint
            bb.update_func(copy, func.with_attr("global_symbol", copy.name_hint))
        else:
            symbols[gv] = gv.name_hint
            bb.update_func(gv, func.with_attr("global_symbol", gv.name_hint))
    driver = _driver(steps, consts, temps, symbols, chunk, chunks // threads, threads,
                     batch_in, batch_out, str(trunk.params[0].ty.dtype))
    driver_gv = bb.add_func(driver, DRIVER)
    mod = bb.get()
    call_tir = tvm.ir.Op.get("relax.call_tir")

    @relax.expr_functor.mutator
    class Swap(relax.PyExprMutator):
        def visit_call_(self, call):
            if call.op.same_as(call_tir) and call.args[0].same_as(placeholder):
                args = relax.Tuple([*call.args[1].fields, *consts])
                return relax.Call(call.op, [driver_gv, args], call.attrs, call.ty_args)
            return super().visit_call_(call)

    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function) and gv != trunk_gv:
            mod[gv] = Swap(mod).visit_expr(func)
    del mod[trunk_gv]
    del mod[placeholder]
    return mod


def _shape(ty) -> tuple[int, ...]:
    return tuple(int(d) for d in ty.shape)


def _placeholder_call(mod: tvm.IRModule, placeholder: tvm.ir.GlobalVar) -> relax.Call:
    calls = [call for func in mod.functions.values() if isinstance(func, relax.Function)
             for call in call_tirs(func) if call.args[0].same_as(placeholder)]
    if len(calls) != 1:
        raise TrunkError(f"the trunk's placeholder is called {len(calls)} times")
    return calls[0]


# a tensor of the trunk: ("in",) its input, ("const", i), ("tmp", i) (the last: its output)
_Key = tuple


def _steps(trunk: relax.Function):
    """The trunk's kernel calls in order, [(kernel, argument keys, output keys)], its
    constants (the driver's parameters after the input) and its intermediate tensors
    [(shape, dtype)], the last of which is its output."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    keys: dict = {trunk.params[0]: ("in",)}
    consts: list = []
    temps: list[tuple[tuple[int, ...], str]] = []
    steps = []

    def key_of(arg) -> _Key:
        if isinstance(arg, _Const):
            for i, c in enumerate(consts):
                if c.same_as(arg):
                    return ("const", i)
            consts.append(arg)
            return ("const", len(consts) - 1)
        key = keys.get(arg)
        if key is None or isinstance(key, list):
            raise TrunkError(f"the trunk passes a kernel {type(arg).__name__} {arg}")
        return key

    body = trunk.body
    for block in body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op.same_as(call_tir) \
                    and len(value.args) == 2 and isinstance(value.args[1], relax.Tuple):
                args = [key_of(a) for a in value.args[1].fields]
                types = list(value.ty.fields) if isinstance(value.ty, relax.TupleType) \
                    else [value.ty]
                outs = []
                for ty in types:
                    temps.append((_shape(ty), str(ty.dtype)))
                    outs.append(("tmp", len(temps) - 1))
                steps.append((value.args[0], args, outs))
                keys[binding.var] = outs if isinstance(value.ty, relax.TupleType) else outs[0]
            elif isinstance(value, relax.TupleGetItem) \
                    and isinstance(keys.get(value.tuple_value), list):
                keys[binding.var] = keys[value.tuple_value][value.index]
            elif isinstance(value, relax.Var) and value in keys:
                keys[binding.var] = keys[value]
            else:
                raise TrunkError(f"the trunk binds a {type(value).__name__}: {value}")
    out = keys.get(body.body)
    if out != ("tmp", len(temps) - 1) or not steps:
        raise TrunkError("the trunk's output is not its last kernel's")
    return steps, consts, temps


def _driver(steps, consts, temps, symbols, chunk: int, per_thread: int, threads: int,
            batch_in: tuple[int, ...], batch_out: tuple[int, ...], dtype: str) -> tirx.PrimFunc:
    """The driver's PrimFunc: (input, constants..., output), see the module's docstring."""
    out_dtype = temps[-1][1]
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name(DRIVER)
            x = T.arg("x", T.Buffer(batch_in, dtype))
            weights = [T.arg(f"w{i}", T.Buffer(_shape(c.ty), c.ty.dtype))
                       for i, c in enumerate(consts)]
            out = T.arg("out", T.Buffer(batch_out, out_dtype))
            T.func_attr({"tirx.is_scheduled": True})
            # the thread's own buffers, for all its chunks: an intermediate takes one that an
            # earlier one is done with (`_slots`), still in the core's caches
            slot_of, slots = _slots(steps, temps)
            with T.parallel(0, threads) as t:
                raw = arena(slots)
                own = [in_arena(raw[slot_of[i]], shape, kind)
                       for i, (shape, kind) in enumerate(temps[:-1])]
                # a chunk of the input (or output) that starts off the kernels' alignment is
                # copied into (or out of) a buffer of the thread's
                staged = {key: T.decl_buffer((chunk, *batch[1:]), kind,
                                             data=_own(chunk * math.prod(batch[1:]), kind).data)
                          for key, batch, kind in ((("in",), batch_in, dtype),
                                                   (("out",), batch_out, out_dtype))
                          if not _aligned(chunk * math.prod(batch[1:]), np.dtype(kind).itemsize)}
                with T.serial(0, per_thread) as j:
                    first = (t * per_thread + j) * chunk
                    if ("in",) in staged:
                        _copy(x, first, staged[("in",)], to_batch=False)
                    tensors = {**{("const", i): w for i, w in enumerate(weights)},
                               **{("tmp", i): b for i, b in enumerate(own)},
                               ("in",): staged[("in",)] if ("in",) in staged
                               else _view(x, first, chunk),
                               ("tmp", len(temps) - 1): staged[("out",)] if ("out",) in staged
                               else _view(out, first, chunk)}
                    for gv, args, outs in steps:
                        T.evaluate(T.call_cpacked(symbols[gv],
                                                  *(tensor(tensors[k]) for k in args + outs)))
                    if ("out",) in staged:
                        _copy(out, first, staged[("out",)], to_batch=True)
    return ib.get()


def _slots(steps, temps, planned=None, over=None) -> tuple[dict[int, int],
                                                         list[tuple[int, str]]]:
    """Buffers for the intermediates `planned` (indices into `temps`; by default all but the
    last, the trunk's output), reused: {intermediate: its slot}, [(elements, dtype) of each
    slot]. Each kernel's outputs take free slots of their dtype (the smallest that holds it,
    else the largest, grown), and its arguments' slots are freed after it when nothing later
    reads them — never the slot of one of its own arguments, but where `over` ({output:
    argument}) says the kernel writes its output over that argument, which dies with it
    (`inplace.overwritable`: a residual add's)."""
    if planned is None:
        planned = range(len(temps) - 1)
    planned = set(planned)
    over = over or {}
    last = last_uses(steps)
    slot_of: dict[int, int] = {}
    slots: list[list] = []  # [elements, dtype]
    free: set[int] = set()
    taken: set[int] = set()  # arguments whose slot an output took
    for n, (_, args, outs) in enumerate(steps):
        for key in outs:
            if key[0] != "tmp" or key[1] not in planned:
                continue  # a buffer of the caller's
            elements, dtype = math.prod(temps[key[1]][0]), temps[key[1]][1]
            fits = [s for s in free if slots[s][1] == dtype]
            if over.get(key[1]) in slot_of:  # where the argument it overwrites is
                slot_of[key[1]] = slot_of[over[key[1]]]
                taken.add(over[key[1]])
                continue
            if fits:
                big = [s for s in fits if slots[s][0] >= elements]
                slot = min(big, key=lambda s: slots[s][0]) if big \
                    else max(fits, key=lambda s: slots[s][0])
                free.discard(slot)
                slots[slot][0] = max(slots[slot][0], elements)
            else:
                slots.append([elements, dtype])
                slot = len(slots) - 1
            slot_of[key[1]] = slot
        for key in {*args, *outs}:
            if key[0] == "tmp" and last[key] == n and key[1] in slot_of \
                    and key[1] not in taken:
                free.add(slot_of[key[1]])
    return slot_of, [tuple(s) for s in slots]


def last_uses(steps) -> dict:
    """{tensor key: the index of the last step that reads or writes it}."""
    last = {}
    for n, (_, args, outs) in enumerate(steps):
        for key in args + outs:
            last[key] = n
    return last


def arena(slots: list[tuple[int, str]]) -> list[tuple]:
    """The `slots` ([(elements, dtype)], one dtype) in one buffer (`_own`), each 64-byte
    aligned: [(the buffer, the slot's first element)]. TVM's storage planning sees no access
    through a pointer handed to a kernel, and would give two buffers of their own the same
    memory."""
    if len({dtype for _, dtype in slots}) > 1:
        raise TrunkError(f"intermediates of several dtypes: {sorted({d for _, d in slots})}")
    if not slots:
        return []
    dtype = slots[0][1]
    step = _ALIGN // np.dtype(dtype).itemsize
    starts = [0]
    for elements, _ in slots:
        starts.append(starts[-1] + -(-elements // step) * step)
    whole = _own(starts[-1], dtype)
    return [(whole, start) for start in starts[:-1]]


def in_arena(place: tuple, shape, dtype: str):
    """A buffer of `shape` at `place` (one of `arena`'s)."""
    whole, start = place
    return T.decl_buffer(shape, dtype, data=whole.data, elem_offset=start)


def address(buf):
    """Where `buf`'s first element is (its data, but for a buffer at an offset of another)."""
    return T.address_of(buf[(0,) * len(buf.shape)])


def tensor(buf):
    """`buf` as a kernel's tensor argument: its first element's address, no offset (a
    kernel's parameters take none)."""
    return T.tvm_stack_make_array(address(buf), T.tvm_stack_make_shape(*buf.shape), 0,
                                  len(buf.shape), tirx.const(0, buf.dtype), 0)


def _own(elements: int, dtype: str):
    """A flat buffer of the thread's own: never one of fewer than `_HEAP` bytes, which TVM
    would put on the stack aligned to 16 bytes only, where the kernels assume their buffers'
    64 (a misaligned AVX-512 load faults); bigger ones come from TVM's workspace, aligned."""
    return T.alloc_buffer((max(elements, -(-_HEAP // np.dtype(dtype).itemsize)),), dtype)


def _copy(batch, first, own, to_batch: bool) -> None:
    """Copy the chunk of `batch` from image `first` on into `own` (or back, `to_batch`)."""
    n = math.prod(own.shape)
    flat = T.decl_buffer((math.prod(batch.shape),), batch.dtype, data=batch.data)
    mine = T.decl_buffer((n,), own.dtype, data=own.data)
    start = first * (n // int(own.shape[0]))
    with T.serial(0, n) as i:
        if to_batch:
            T.buffer_store(flat, mine[i], [start + i])
        else:
            T.buffer_store(mine, flat[start + i], [i])


def _view(buf, first, chunk: int):
    """`chunk` images of `buf` from image `first` on, as a buffer of their own."""
    shape = [chunk, *buf.shape[1:]]
    data = T.bind(T.address_of(buf[(first, *([0] * (len(shape) - 1)))]))
    return T.decl_buffer(shape, buf.dtype, data=data)

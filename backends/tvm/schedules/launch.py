"""One fork/join per kernel: a scheduled function whose parallel loops would each be a launch
of TVM's thread pool (a conv's padding stage, then its rows; a batch's images one after
another, each stage in parallel within) runs them all in one launch, with a barrier between
loops that depend on each other.

Each launch wakes the pool's workers and waits for them all to finish. With workers that sleep
when idle (`TVM_THREAD_POOL_SPIN_COUNT=0`, as `bench_tvm.py` runs every runtime unless
`--spin`), two launches of a trivial loop cost 46 µs, one launch of both with a barrier between
5.5 µs (two threads on an idle two-core Xeon; with spinning workers 3.9 and 2.7 µs). A conv
with a padding stage made two launches at batch 1, and 64 at batch 32.

TVM's LLVM codegen does it (`pragma_parallel_launch_point` on a loop: its body is run by every
thread of one launch; each parallel loop inside is split between them; a loop marked
`pragma_parallel_barrier_when_finish` ends in a barrier). The rewrite is refused — the
function left as it is — unless every statement outside the parallel loops is a serial loop
around them: anything else there would be run by every thread. Buffers stay allocated where
the schedule put them, at the function's root block, outside the launch (so they are shared)."""

from __future__ import annotations

from tvm import s_tir, tirx

__all__ = ["BARRIER", "LAUNCH", "launches", "one_launch"]

LAUNCH = "pragma_parallel_launch_point"
BARRIER = "pragma_parallel_barrier_when_finish"


def launches(stmt) -> int | None:
    """How many launches of the thread pool `stmt` makes when run: parallel loops, counted
    once per iteration of the serial loops around them. None when `stmt` has work outside
    its parallel loops (a parallel loop of one iteration counts as such), or a loop whose trip
    count is not a constant."""
    if isinstance(stmt, tirx.SeqStmt):
        counts = [launches(s) for s in stmt.seq]
        return None if any(c is None for c in counts) else sum(counts)
    if not isinstance(stmt, tirx.For) or stmt.thread_binding is not None:
        return None
    if not isinstance(stmt.extent, tirx.IntImm):
        return None  # a trip count unknown
    if stmt.kind == tirx.ForKind.PARALLEL:
        # lowering drops a loop of one iteration: its body would run on every thread
        return 1 if int(stmt.extent) > 1 else None
    if stmt.kind not in (tirx.ForKind.SERIAL, tirx.ForKind.UNROLLED):
        return None
    inner = launches(stmt.body)
    return int(stmt.extent) * inner if inner else None  # else serial work outside


def one_launch(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` with its parallel loops in one launch of the thread pool, when it made more than
    one and nothing outside them would run on every thread; else `func` itself."""
    realize = func.body
    if not isinstance(realize, s_tir.SBlockRealize):
        return func
    root = realize.block
    count = launches(root.body)
    if count is None or count < 2:
        return func
    body = tirx.For(tirx.Var("launch", "int32"), 0, 1, tirx.ForKind.SERIAL,
                    _barriers(root.body, last=True), annotations={LAUNCH: 1})
    block = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body,
                         root.init, root.alloc_buffers, root.match_buffers, root.annotations)
    return func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, block))


def _barriers(stmt, last: bool):
    """`stmt` with a barrier after each of its parallel loops, but the one that ends the launch
    (`last`: nothing runs after `stmt`)."""
    if isinstance(stmt, tirx.SeqStmt):
        end = len(stmt.seq) - 1
        return tirx.SeqStmt([_barriers(s, last and i == end) for i, s in enumerate(stmt.seq)])
    annotations = dict(stmt.annotations)
    if stmt.kind == tirx.ForKind.PARALLEL:
        if last:
            return stmt
        annotations[BARRIER] = 1
        body = stmt.body
    else:  # a serial loop: its parallel loops run again after the last, unless it runs once
        body = _barriers(stmt.body, last and int(stmt.extent) == 1)
    return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body,
                    stmt.thread_binding, annotations, stmt.step)

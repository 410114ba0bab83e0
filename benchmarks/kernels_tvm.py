"""Per-kernel CPU time of archdsl's TVM build: each scheduled PrimFunc of a network, timed alone.

    python benchmarks/kernels_tvm.py mobilenet_v2 --batch 32 [--top 25] [--runs 5] [--only NAME,...]

Builds the network as `bench_tvm.py` does (default schedules, this CPU), takes the module the
schedule hooks made, compiles every PrimFunc by itself and times it on random inputs of its
parameters' shapes: the median CPU time of `--runs` calls (one thread: TVM_NUM_THREADS=1),
times the calls the network makes. Prints the heaviest kernels first, with the rule that
scheduled each and its parameters' shapes (activations NCHW[b]c, packed weights)."""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

os.environ["TVM_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tvm import MODELS, ROOT  # noqa: E402


def _scheduled_module(model: str, batch: int):
    import archdsl
    from archdsl.backends import tvm as backend
    from archdsl.backends.tvm import build
    spec, arch_name = MODELS[model]
    arch = archdsl.load(ROOT / "specs" / spec, **({"arch": arch_name} if arch_name else {}))
    seen = []

    def keep(mod, target, options):
        seen.append((mod, target))
        return mod

    build.SCHEDULE_HOOKS.append(keep)  # after archdsl's own hook: the scheduled module
    try:
        backend.compile(arch.graph, target="llvm", batch=batch)
    finally:
        build.SCHEDULE_HOOKS.remove(keep)
    return seen[-1]


def _calls(mod) -> collections.Counter:
    import tvm
    from tvm import relax
    call_tir, uses = tvm.ir.Op.get("relax.call_tir"), collections.Counter()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            uses[expr.args[0].name_hint] += 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return uses


def _cpu_ms(func, target, runs: int) -> float:
    import tvm
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      target=target)
    rng, dev = np.random.default_rng(0), tvm.cpu()
    args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.ty.shape])
                               .astype(str(p.ty.dtype)), dev) for p in func.params]
    main = lib.mod["main"]
    main(*args)
    times = []
    for _ in range(runs):
        started = time.process_time()
        main(*args)
        times.append(time.process_time() - started)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--top", type=int, default=25, help="kernels shown")
    ap.add_argument("--runs", type=int, default=5, help="timed calls per kernel")
    ap.add_argument("--only", help="comma-separated substrings of the kernels' names to time")
    args = ap.parse_args()
    from tvm import tirx

    from archdsl.backends.tvm.schedules import scheduled_by
    mod, target = _scheduled_module(args.model, args.batch)
    uses, rows = _calls(mod), []
    for gv, func in mod.functions_items():
        name = gv.name_hint
        if not isinstance(func, tirx.PrimFunc) or (
                args.only and not any(s in name for s in args.only.split(","))):
            continue
        ms = _cpu_ms(func, target, args.runs)
        shapes = [tuple(int(d) for d in p.ty.shape) for p in func.params]
        rows.append((ms * uses[name], ms, uses[name], name, scheduled_by(func), shapes))
    rows.sort(key=lambda r: -r[0])
    print(f"{args.model} batch {args.batch}: {sum(r[0] for r in rows):.1f} ms CPU time in all")
    print(f"{'total ms':>9} {'ms':>7} {'calls':>5}  kernel, rule, parameter shapes")
    for total, ms, calls, name, rule, shapes in rows[:args.top]:
        print(f"{total:9.2f} {ms:7.2f} {calls:5}  {name} {rule} {shapes}")


if __name__ == "__main__":
    main()

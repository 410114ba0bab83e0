"""Per-kernel CPU time of archdsl's TVM build: each scheduled PrimFunc of a network, timed alone.

    python benchmarks/kernels_tvm.py mobilenet_v2 --batch 32 [--top 25] [--runs 5] [--only NAME,...]
    python benchmarks/kernels_tvm.py resnet50 --ort    # each conv next to ONNX Runtime's
    python benchmarks/kernels_tvm.py resnet50 --network --ort   # timed within the network
    python benchmarks/kernels_tvm.py resnet50 --batch 32 --network --ort --threads 2

Builds the network as `bench_tvm.py` does (default schedules, this CPU), takes the module the
schedule hooks made, compiles every PrimFunc by itself and times it on random inputs of its
parameters' shapes: the median CPU time of `--runs` calls (one thread unless `--threads`),
times the calls the network makes (with `--network`: each kernel's time within the network's
own runs instead, where its weights and inputs are as cold as a real run leaves them — built
with each kernel launched by itself, not in runs of kernels in one launch, which the VM would
time as one call; `--cold`
evicts the caches before each run, as another runtime's run in between does). `--threads N`
runs both runtimes on N threads and times wall clock instead of CPU time. Prints
the heaviest kernels first, with the rule that scheduled each and its parameters' shapes
(activations NCHW[b]c, packed weights), and a conv's GFLOP/s (its padded channels counted; a
Winograd conv's as the direct conv's FLOPs). With `--ort`, ONNX Runtime runs the archdsl ONNX export
of the same network (CPU provider, as many threads, its own profiler: the median wall time of each
node over `--runs` calls) and each conv is shown next to the ONNX Runtime nodes of the same
shape (channel blocks, input and output plane, window; depthwise convs with depthwise
ones): their mean time per call, and the ratio of archdsl's to it. ORT's `Conv` nodes carry
its fused epilogue (bias, activation, the residual add); its layout reorders and pools are
listed apart. The sums of both runtimes' kernels are printed next to the median time of
their whole runs (with `--network`; ORT's unprofiled), which says how much of a run the
per-kernel times leave out."""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

os.environ["TVM_NUM_THREADS"] = "1"  # `--threads` may change it: main(), before TVM's pool starts
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")  # idle threads sleep, as in bench_tvm

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tvm import MODELS, load_model  # noqa: E402


def _clock() -> float:
    """One thread: its CPU time (steadier); more: wall time, which the threads share."""
    one = os.environ["TVM_NUM_THREADS"] == "1"
    return time.process_time() if one else time.perf_counter()


def _scheduled_module(model: str, batch: int, one_launch: bool = True):
    from archdsl.backends import tvm as backend
    from archdsl.backends.tvm import build
    arch = load_model(model)
    seen = []

    def keep(mod, target, options):
        seen.append((mod, target))
        return mod

    build.SCHEDULE_HOOKS.append(keep)  # after archdsl's own hook: the scheduled module
    try:
        # the batch whole (not in chunks, `chunks.py`): each kernel as it runs at `batch`
        # (`one_launch=False` for `--network`: a run of kernels in one launch of the thread
        # pool, `net_launch.py`, is one call the VM sees, its kernels not timed apart)
        compiled = backend.compile(arch.graph, target="llvm", batch=batch, chunk=batch,
                                   one_launch=one_launch)
    finally:
        build.SCHEDULE_HOOKS.remove(keep)
    return (*seen[-1], compiled, (batch, *arch.graph.input_shape))


def _evict(megabytes: int = 256) -> None:
    """Write over more memory than the caches hold: the next run finds nothing of its own in
    them (as in `bench_tvm.py`, where the runtimes' runs are interleaved)."""
    np.ones(megabytes << 18, np.float32).sum()


def _network_ms(compiled, shape, runs: int,
                between=lambda: None) -> tuple[dict[str, float], float]:
    """Each kernel's CPU time in the network's own runs (the VM calls a hook around each
    call): the median over `runs` runs of its time summed over the run's calls; and the
    median run's (hook included). Its weights and inputs come from wherever the previous
    layers left them, as in a real run."""
    import tvm
    from tvm.runtime.vm import VirtualMachine
    vm, spent, started = VirtualMachine(compiled.module, tvm.cpu()), [], [0.0]

    def hook(func, symbol, before, ret, *args) -> int:
        now = _clock()
        if before:
            started[0] = now
        else:
            spent.append((symbol, now - started[0]))
        return 0  # VMInstrumentReturnKind.NO_OP

    vm.set_instrument(hook)
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape, np.float32))
    vm["main"](x)
    per_run, whole = collections.defaultdict(list), []
    for _ in range(runs):
        between()
        spent.clear()
        begun = _clock()
        vm["main"](x)
        whole.append((_clock() - begun) * 1e3)
        total = collections.Counter()
        for symbol, seconds in spent:
            total[symbol] += seconds * 1e3
        for symbol, ms in total.items():
            per_run[symbol].append(ms)
    return {k: _median(v) for k, v in per_run.items()}, _median(whole)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _calls(mod) -> collections.Counter:
    """How many times the network calls each kernel (`call_tir`, and `call_tir_inplace`: a
    conv that accumulates into its residual's buffer)."""
    import tvm
    from tvm import relax
    ops = [tvm.ir.Op.get(f"relax.{name}") for name in ("call_tir", "call_tir_inplace")]
    uses = collections.Counter()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and any(expr.op.same_as(op) for op in ops):
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
        started = _clock()
        main(*args)
        times.append(_clock() - started)
    return _median(times) * 1e3


def _conv_key(data, weight, out, lanes: int, packed: bool):
    """(batch, input blocks per group, H, W, output blocks, KH, KW, OH, OW) of a conv from its
    data (blocked or plain NCHW), weight (archdsl's packed OCb×ICb×KH×KW×ib×ob, or OIHW) and
    output shapes (a blocked output's blocks, not the weights' padded to whole register
    tiles); a depthwise conv's (archdsl's Cb×KH×KW×b weights, or ONNX's C×1×KH×KW on C
    channels) has "depthwise" for its input blocks. None for other weights."""
    if packed and len(weight) == 4:
        return (data[0], "depthwise", data[2], data[3], weight[0], weight[1], weight[2],
                out[2], out[3])
    if len(weight) != (6 if packed else 4):
        return None
    if not packed and weight[1] == 1 and weight[0] == data[1] > 1:
        return (data[0], "depthwise", data[2], data[3], -(-weight[0] // lanes), weight[2],
                weight[3], out[2], out[3])
    ic, oc = (weight[1] * weight[4], weight[0] * weight[5]) if packed else weight[1::-1]
    if packed and len(out) == 5:
        oc = out[1] * out[4]
    return (data[0], -(-ic // lanes), data[2], data[3], -(-oc // lanes), weight[2], weight[3],
            out[2], out[3])


def _conv_gflop(shapes) -> float:
    """A conv's GFLOP, its padded channels counted (a depthwise conv's: its window's)."""
    weight, out = shapes[1], shapes[-1]
    window = np.prod(weight[1:3]) if len(weight) == 4 else np.prod(weight[1:5])
    macs = np.prod(out[:4]) * (out[4] if len(out) == 5 else 1) * window
    return 2 * float(macs) / 1e9


def _ort_nodes(model: str, batch: int, runs: int,
               between) -> tuple[dict[str, list[tuple]], float]:
    """ONNX Runtime's nodes on this network, by op: (shapes, median ms per call) each; and
    the median time of a run without its profiler, timed after the profiled ones."""
    import json
    import tempfile

    import onnxruntime as ort

    from archdsl.backends.pytorch.export import export
    arch = load_model(model)
    folder = Path(tempfile.mkdtemp(prefix="archdsl-kernels-"))
    export(arch.to_torch().eval(), arch.graph.input_shape, "onnx", folder / "m.onnx",
           batch=batch)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ["TVM_NUM_THREADS"])
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling, opts.profile_file_prefix = True, str(folder / "profile")
    session = ort.InferenceSession(str(folder / "m.onnx"), opts,
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, *arch.graph.input_shape), np.float32)
    session.run(None, {"input": x})  # the first call allocates: left out below
    for _ in range(runs):
        between()
        session.run(None, {"input": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    whole = []
    for _ in range(runs):
        between()
        begun = _clock()
        session.run(None, {"input": x})
        whole.append((_clock() - begun) * 1e3)
    durations, info = collections.defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            durations[e["name"]].append(e["dur"] / 1e3)
            shapes = [tuple(next(iter(t.values()))) for t in e["args"]["input_type_shape"]]
            out = [tuple(next(iter(t.values()))) for t in e["args"]["output_type_shape"]]
            info[e["name"]] = (e["args"].get("op_name", "?"), shapes + out)
    nodes = collections.defaultdict(list)
    for name, times in durations.items():
        op, shapes = info[name]
        nodes[op].append((shapes, _median(times[-runs:])))
    return nodes, _median(whole)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--top", type=int, default=25, help="kernels shown")
    ap.add_argument("--runs", type=int, default=5, help="timed calls per kernel")
    ap.add_argument("--only", help="comma-separated substrings of the kernels' names to time")
    ap.add_argument("--network", action="store_true",
                    help="time each kernel within the network's runs, not alone")
    ap.add_argument("--cold", action="store_true",
                    help="with --network and --ort: evict the caches before each run")
    ap.add_argument("--ort", action="store_true",
                    help="each conv next to ONNX Runtime's nodes of its shape")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads of both runtimes (wall time when more than one)")
    args = ap.parse_args()
    # read when the target is made (its num-cores) and when TVM's pool starts, both below
    os.environ["TVM_NUM_THREADS"] = str(max(args.threads, 1))
    from tvm import tirx

    from archdsl.backends.tvm.schedules import scheduled_by
    from archdsl.backends.tvm.schedules.common import Machine
    mod, target, compiled, shape = _scheduled_module(args.model, args.batch,
                                                     one_launch=not args.network)
    uses, rows = _calls(mod), []
    between = _evict if args.cold else (lambda: None)
    network, run_ms = (_network_ms(compiled, shape, args.runs, between) if args.network
                       else (None, None))
    for gv, func in mod.functions_items():
        name = gv.name_hint
        if not isinstance(func, tirx.PrimFunc) or (
                args.only and not any(s in name for s in args.only.split(","))):
            continue
        total = network.get(name, 0.0) if network else _cpu_ms(func, target, args.runs) * uses[name]
        shapes = [tuple(int(d) for d in p.ty.shape) for p in func.params]
        rows.append((total, total / max(uses[name], 1), uses[name], name, scheduled_by(func),
                     shapes))
    rows.sort(key=lambda r: -r[0])
    where = ("in the network's runs, each kernel launched by itself" if network
             else "each kernel alone")
    run = f"; a run {run_ms:.1f} ms" if run_ms is not None else ""
    print(f"{args.model} batch {args.batch}: {sum(r[0] for r in rows):.1f} ms in all "
          f"({where}{run})")
    lanes = Machine.of(target).lanes
    ort = _ort_by_key(args.model, args.batch, args.runs, lanes, between) if args.ort else None
    _report(rows[:args.top], ort, lanes)


def _report(rows: list, ort: dict | None, lanes: int) -> None:
    print(f"{'total ms':>9} {'ms':>7} {'calls':>5} {'GF/s':>5}"
          + (f" {'ORT ms':>7} {'ratio':>5}" if ort is not None else "")
          + "  kernel, rule, parameter shapes")
    matched = [0.0, 0.0]
    for total, ms, calls, name, rule, shapes in rows:
        if rule == "conv2d_winograd":  # as the direct conv's weights: its GFLOP/s, its peer
            w = shapes[1]
            shapes = [shapes[0], (w[2], w[3], 3, 3, w[4], w[5]), *shapes[2:]]
        # a conv rule's kernel: (data, weight, ..., output); others' 4-D params are no conv's
        key = _conv_key(shapes[0], shapes[1], shapes[-1], lanes, True) \
            if rule.startswith(("conv", "depthwise")) else None
        flops = f"{_conv_gflop(shapes) / ms * 1e3:5.0f}" if key and ms else " " * 5
        peer = ""
        if ort is not None:
            theirs = ort.get(key) if key else None
            peer = f" {theirs:7.2f} {ms / theirs:5.2f}" if theirs else " " * 14
            if theirs:
                matched[0], matched[1] = matched[0] + total, matched[1] + theirs * calls
        print(f"{total:9.2f} {ms:7.2f} {calls:5} {flops}{peer}  {name} {rule} {shapes}")
    if ort is not None:
        print(f"matched convs: archdsl {matched[0]:.1f} ms, ONNX Runtime {matched[1]:.1f} ms "
              f"({matched[0] / max(matched[1], 1e-9):.2f}×); ONNX Runtime's other nodes:")
        for op, ms in sorted(ort.items(), key=lambda kv: -kv[1]):
            if not isinstance(op, tuple):
                print(f"{ms:9.2f}  {op}")


def _ort_by_key(model: str, batch: int, runs: int, lanes: int, between) -> dict:
    """ONNX Runtime's conv time per call by conv shape (`_conv_key`: the mean over the nodes
    of that shape), and its other nodes' total time by op. Prints the nodes' sum next to a
    run's time, which its profiler's node times need not add up to (on two threads within
    3% either way: ResNet-18 and ResNet-50 at batch 1, VGG-16 at batch 32; archdsl's kernels
    0.1–6% under its runs, the hook's own time included). Whole networks: `bench_tvm.py`."""
    (nodes, run_ms), by_key, rest = (_ort_nodes(model, batch, runs, between),
                                     collections.defaultdict(list), {})
    print(f"ONNX Runtime: its nodes {sum(ms for found in nodes.values() for _, ms in found):.1f}"
          f" ms in all; a run {run_ms:.1f} ms (unprofiled)")
    for op, found in nodes.items():
        for shapes, ms in found:
            key = _conv_key(shapes[0], shapes[1], shapes[-1], lanes, False) if op in (
                "Conv", "FusedConv") else None
            if key:
                by_key[key].append(ms)
            else:
                rest[op] = rest.get(op, 0.0) + ms
    return {**{k: sum(v) / len(v) for k, v in by_key.items()}, **rest}


if __name__ == "__main__":
    main()

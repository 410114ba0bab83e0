"""Inference speed of archdsl-compiled TVM against what people run instead, in one process.

For each model and batch size, on the same input and with the same weights (the archdsl PyTorch
module's state_dict), it times:

- archdsl TVM: `archdsl.backends.tvm.compile`, with archdsl's default schedules;
- archdsl TVM, tuned: the same with a MetaSchedule database (`--tuning-db DIR`), when given;
- archdsl TVM, naive: `schedules=False` — TVM's unscheduled loops, what a build had before;
- archdsl TVM, batch whole: `chunk=batch` — the trunk not in chunks (`chunks.py`), whatever
  the build would choose;
- PyTorch eager (eval, no_grad), and torch.compile (inductor, default mode);
- ONNX Runtime: the archdsl ONNX export (backends/pytorch/export.py), CPU (or CUDA) provider;
- TVM from_exported_program: TVM's own importer on `torch.export` of the same module, built
  with TVM's default pipeline.

Every peer's output is checked against PyTorch eager before it is timed. Runs are interleaved
(each round runs every peer once, starting with a different one) so that load from other
processes hits them alike; each cell reports the median and the fastest run, the throughput,
the ratios to PyTorch eager and to ONNX Runtime, and the compile (or export + build) time. A
peer whose runs are slow gets fewer of them (`--budget` seconds per cell); one that cannot run
says why. `--clock cpu` (one thread only) times each run by the CPU time of the thread that runs
it (every runtime computes in the caller's thread then), so that other processes' load on a
shared machine does not count.

    python benchmarks/bench_tvm.py                                  # every model, batch 1 and 32
    python benchmarks/bench_tvm.py --models mobilenet_v2,efficientnet_b0,regnet_y_400mf \
        --peers archdsl,eager,ort --threads 1 --clock cpu           # README's CPU table
    python benchmarks/bench_tvm.py --models resnet18 --batch 1 --runs 30
    python benchmarks/bench_tvm.py --models resnet18 --tuning-db /work/tuning/resnet18-llvm
    python benchmarks/bench_tvm.py --peers archdsl,eager,ort --targets llvm,cuda
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# name → (spec file, arch in it)
MODELS = {
    "resnet18": ("resnet18.arch", None),
    "resnet50": ("resnet50.arch", None),
    "vgg16": ("vgg_d.arch", "vgg_d"),
    "mobilenet_v1": ("mobilenet_v1.arch", None),
    "mobilenet_v2": ("mobilenet_v2.arch", None),
    "efficientnet_b0": ("efficientnet.arch", "efficientnet_b0"),
    # not looked at while the CPU schedules were written: how they fare on networks unseen
    "regnet_y_400mf": ("regnet.arch", "regnet_y_400mf"),
    "shufflenet_v2": ("shufflenet_v2.arch", "shufflenet_v2_x1_0"),
    "mobilenet_v3": ("mobilenet_v3.arch", "mobilenet_v3_large"),
    # held out again, after the rules above were shaped on those: first measured as they stood
    "densenet121": ("densenet.arch", "densenet121"),
    "resnext50": ("resnext.arch", "resnext50_32x4d"),
    "mnasnet1_0": ("mnasnet.arch", "mnasnet1_0"),
    "squeezenet1_1": ("squeezenet.arch", "squeezenet1_1"),
    # held out from the Winograd rule (shaped on ResNet-18's 3×3 convs): first measured as it
    # stood
    "googlenet": ("googlenet.arch", "googlenet_torchvision"),
    "inception_v3": ("inception_v3.arch", "inception_v3"),
    # transformers, held out from every rule: ViT-B/16 first measured 49 s a run at batch 1 on
    # two threads (its linear layers over 197 tokens fell to the catch-all rule, serial)
    "vit_b_16": ("vit.arch", "vit_b_16"),
    "swin_t": ("swin.arch", "swin_t"),
    "convnext_tiny": ("convnext.arch", "convnext_tiny"),
    # held out from every rule until an AVX-512 Zen 4 host of 6 December: first measured as
    # they stood
    "efficientnet_v2_s": ("efficientnet_v2.arch", "efficientnet_v2_s"),
    "swin_v2_t": ("swin_v2.arch", "swin_v2_t"),
    "maxvit_t": ("maxvit.arch", "maxvit_t"),
}
PEERS = ("archdsl", "tuned", "naive", "eager", "compile", "ort", "tvm-import")
TOLERANCE = 1e-3  # max |diff| against eager, relative to the largest |output|


class Skip(Exception):
    """A peer that cannot run here; the message is the reason shown in the table."""


@dataclass
class Peer:
    name: str
    run: Callable[[], Any]  # one forward on the bound input, finished (synchronized)
    output: Callable[[], Any]  # one forward, as a numpy array
    compile_s: float | None = None
    times: list[float] = field(default_factory=list)
    note: str = ""


@dataclass
class Cell:
    """What every peer of one model × batch × target needs."""

    model: str
    batch: int
    target: str
    arch: Any
    module: Any  # the archdsl PyTorch module, eval mode, on the target's device
    state: dict
    x: Any  # numpy input
    args: argparse.Namespace

    @property
    def cuda(self) -> bool:
        return self.target == "cuda"


# ---------------------------------------------------------------- the peers

def _archdsl(cell: Cell, name: str, **options) -> Peer:
    import tvm

    from archdsl.backends import tvm as backend
    compiled = backend.compile(cell.arch.graph, target=cell.target, weights=cell.state,
                               batch=cell.batch, **options)
    dev = compiled.device
    xt = tvm.runtime.tensor(cell.x, dev)
    main = compiled.vm["main"]

    def run():
        out = main(xt)
        dev.sync()
        return out

    return Peer(name, run, lambda: run().numpy(), compiled.compile_seconds)


def _archdsl_tuned(cell: Cell) -> Peer:
    if not cell.args.tuning_db:
        raise Skip("no --tuning-db given")
    try:
        import archdsl.backends.tvm.tune  # noqa: F401
    except ImportError as exc:
        raise Skip(f"compile() takes no tuning database here ({exc})") from exc
    if not Path(cell.args.tuning_db).is_dir():
        raise Skip(f"{cell.args.tuning_db}: no such folder")
    peer = _archdsl(cell, "archdsl TVM, tuned", tuning_db=cell.args.tuning_db)
    peer.note = f"db {cell.args.tuning_db}"
    return peer


def _torch_peer(cell: Cell, name: str, model) -> tuple[Peer, float]:
    import torch
    x = torch.from_numpy(cell.x).to("cuda" if cell.cuda else "cpu")

    def run():
        with torch.no_grad():
            out = model(x)
        if cell.cuda:
            torch.cuda.synchronize()
        return out

    started = time.perf_counter()
    run()  # torch.compile compiles on the first call
    first = time.perf_counter() - started
    return Peer(name, run, lambda: run().float().cpu().numpy()), first


def _eager(cell: Cell) -> Peer:
    return _torch_peer(cell, "PyTorch eager", cell.module)[0]


def _torch_compile(cell: Cell) -> Peer:
    import torch
    try:
        peer, first = _torch_peer(cell, "torch.compile", torch.compile(cell.module))
    except Exception as exc:  # inductor needs a C++ compiler and more; say what failed
        raise Skip(f"torch.compile failed: {type(exc).__name__}: {str(exc)[:80]}") from exc
    peer.compile_s = first
    return peer


def _cpu_module(cell: Cell):
    """The PyTorch module on the CPU, for exporting: on a GPU target a copy, so that the
    module the torch peers run (torch.compile's guards included) stays where it is."""
    return copy.deepcopy(cell.module).cpu() if cell.cuda else cell.module


def _onnxruntime(cell: Cell) -> Peer:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise Skip("onnxruntime is not installed") from exc
    from archdsl.backends.pytorch.export import export
    provider = "CUDAExecutionProvider" if cell.cuda else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise Skip(f"onnxruntime has no {provider}")
    started = time.perf_counter()
    path = Path(tempfile.mkdtemp(prefix="archdsl-bench-")) / f"{cell.model}.onnx"
    export(_cpu_module(cell), cell.arch.graph.input_shape, "onnx", path, batch=cell.batch)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cell.args.threads
    if not cell.args.spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=[provider])
    seconds = time.perf_counter() - started

    def run():
        return session.run(None, {"input": cell.x})[0]

    return Peer("ONNX Runtime", run, run, seconds, note="archdsl ONNX export")


def _tvm_importer(cell: Cell) -> Peer:
    import torch
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from archdsl.backends import tvm as backend
    started = time.perf_counter()
    with torch.no_grad():
        program = torch.export.export(_cpu_module(cell), (torch.from_numpy(cell.x),))
    mod = from_exported_program(program, keep_params_as_input=False)
    tgt = backend.make_target(cell.target)
    executable = tvm.compile(mod, target=tgt)  # TVM's default pipeline for the target
    seconds = time.perf_counter() - started
    dev = tvm.device(cell.target if cell.cuda else "cpu", 0)
    vm = relax.VirtualMachine(executable, dev)
    xt = tvm.runtime.tensor(cell.x, dev)

    def run():
        out = vm["main"](xt)
        dev.sync()
        return out

    def output():
        out = run()
        return (out[0] if not hasattr(out, "numpy") else out).numpy()

    return Peer("TVM from_exported_program", run, output, seconds, note="TVM default pipeline")


BUILDERS: dict[str, Callable[[Cell], Peer]] = {
    "archdsl": lambda cell: _archdsl(cell, "archdsl TVM"),
    "tuned": _archdsl_tuned,
    "naive": lambda cell: _archdsl(cell, "archdsl TVM, naive", schedules=False),
    "whole": lambda cell: _archdsl(cell, "archdsl TVM, batch whole", chunk=cell.batch),
    "eager": _eager,
    "compile": _torch_compile,
    "ort": _onnxruntime,
    "tvm-import": _tvm_importer,
}
NAMES = {"archdsl": "archdsl TVM", "tuned": "archdsl TVM, tuned", "naive": "archdsl TVM, naive",
         "whole": "archdsl TVM, batch whole",
         "eager": "PyTorch eager", "compile": "torch.compile", "ort": "ONNX Runtime",
         "tvm-import": "TVM from_exported_program"}


# ---------------------------------------------------------------- measuring

def load_model(model: str):
    """The `MODELS` entry's architecture."""
    import archdsl
    spec, arch_name = MODELS[model]
    return archdsl.load(ROOT / "specs" / spec, **({"arch": arch_name} if arch_name else {}))


def _make_cell(model: str, batch: int, target: str, args) -> Cell:
    import numpy as np
    import torch

    arch = load_model(model)
    torch.manual_seed(0)
    module = arch.to_torch().eval()
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    if target == "cuda":
        module = module.cuda()
    x = np.random.default_rng(0).standard_normal((batch, *arch.graph.input_shape), np.float32)
    return Cell(model, batch, target, arch, module, state, x, args)


def _build_peers(cell: Cell, wanted: list[str]) -> tuple[list[Peer], list[tuple[str, str]]]:
    """The peers that run, checked against eager; (name, reason) for those that do not."""
    import numpy as np
    peers, skipped = [], []
    reference = None
    for key in ["eager"] + [k for k in wanted if k != "eager"]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                peer = BUILDERS[key](cell)
            got = np.asarray(peer.output())
            if reference is None:
                reference = got
            diff = float(np.abs(got - reference).max()) / max(float(np.abs(reference).max()),
                                                               1e-12)
            if not diff <= TOLERANCE:
                raise Skip(f"output differs from eager: max |diff| {diff:.2g} × scale")
            if key in wanted:
                peers.append(peer)
        except Skip as exc:
            skipped.append((NAMES[key], str(exc)))
        except Exception as exc:  # a peer's own failure is a row, not the end of the run
            skipped.append((NAMES[key], f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"))
        _progress(f"  {cell.model} b{cell.batch} {cell.target}: {NAMES[key]} ready")
    return peers, skipped


def _time(peers: list[Peer], runs: int, warmup: int, budget: float,
          clock: Callable[[], float] = time.perf_counter) -> None:
    """Interleaved rounds; a peer leaves the rounds once its runs have used `budget` seconds
    (after at least one timed run). A first run longer than half the budget is kept as the
    only measurement (TVM's naive builds of VGG-16 take minutes per batch of 32)."""
    for peer in peers:
        for _ in range(warmup):
            started = clock()
            peer.run()
            seconds = clock() - started
            if seconds > budget / 2:
                peer.times.append(seconds)
                break
    for r in range(runs):
        active = [p for p in peers if not p.times or sum(p.times) < budget]
        if not active:
            break
        shift = r % len(active)
        for peer in active[shift:] + active[:shift]:
            started = clock()
            peer.run()
            peer.times.append(clock() - started)


# ---------------------------------------------------------------- reporting

def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        flags = fields.get("Flags", "")
        isa = ("AVX-512" if "avx512f" in flags else "AVX2+FMA" if "avx2" in flags
               else "SSE/NEON")
        return f"{fields.get('Model name', '?').strip()} ({isa})"
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()


def _header(args) -> str:
    import onnxruntime
    import torch
    import tvm
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    idle = ("spin" if args.spin
            else "sleep (OMP_WAIT_POLICY=PASSIVE, no spinning in TVM and ORT)")
    return (f"{_cpu_model()}, {os.cpu_count()} CPU(s), {args.threads} thread(s) per runtime, "
            f"load average {load:.2f} at start\n"
            f"torch {torch.__version__}, TVM {tvm.__version__}, onnxruntime "
            f"{onnxruntime.__version__}, Python {platform.python_version()}\n"
            f"median (and fastest) {'CPU' if args.clock == 'cpu' else 'wall'} time of up to "
            f"{args.runs} interleaved runs after {args.warmup} "
            f"warm-up, at most ~{args.budget:.0f} s of runs per peer and cell; idle threads "
            f"{idle}")


def _rows(cell: Cell, peers: list[Peer], skipped: list[tuple[str, str]]) -> list[str]:
    medians = {p.name: statistics.median(p.times) for p in peers}
    eager, ort = medians.get("PyTorch eager"), medians.get("ONNX Runtime")
    rows = []
    for peer in peers:
        med, best = medians[peer.name], min(peer.times)
        ratios = " ".join(f"{med / of:>6.2f}" if of else f"{'-':>6}" for of in (eager, ort))
        comp = f"{peer.compile_s:>8.1f}" if peer.compile_s is not None else f"{'-':>8}"
        rows.append(f"{cell.model:<15} {cell.target:<5} {cell.batch:>5}  {peer.name:<26} "
                    f"{med * 1e3:>10.1f} {best * 1e3:>9.1f} {cell.batch / med:>8.1f} {ratios} "
                    f"{comp} {len(peer.times):>4}  {peer.note}")
    for name, reason in skipped:
        rows.append(f"{cell.model:<15} {cell.target:<5} {cell.batch:>5}  {name:<26} "
                    f"{'skipped: ' + reason}")
    return rows


TABLE_HEAD = (f"{'model':<15} {'target':<5} {'batch':>5}  {'runtime':<26} {'median ms':>10} "
              f"{'best ms':>9} {'img/s':>8} {'×eager':>6} {'×ORT':>6} {'build s':>8} "
              f"{'runs':>4}  note")


def _targets(requested: list[str]) -> tuple[list[str], list[str]]:
    import torch
    import tvm
    ok, notes = [], []
    for t in requested:
        if t == "cuda" and not (torch.cuda.is_available() and tvm.cuda(0).exist):
            notes.append("cuda: skipped (no CUDA GPU visible to both torch and TVM)")
        else:
            ok.append(t)
    return ok, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    ap.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    ap.add_argument("--targets", default="llvm,cuda", help="llvm (this CPU) and/or cuda")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help=f"from {', '.join(BUILDERS)} (default: {', '.join(PEERS)})")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per peer (at most)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--budget", type=float, default=30.0,
                    help="seconds of timed runs per peer and cell (a slow peer runs less)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for every runtime (torch, TVM, ONNX Runtime)")
    ap.add_argument("--tuning-db", help="a MetaSchedule database folder for the tuned row")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time; cpu (with --threads 1): the running thread's CPU "
                         "time, which other processes' load does not inflate")
    ap.add_argument("--spin", action="store_true",
                    help="let idle worker threads spin (each runtime's default); without it "
                         "they sleep, so that one runtime's spinning threads do not take the "
                         "cores from the next one's")
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts
    if not args.spin:  # before torch (OpenMP) and TVM start their threads
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
    import torch
    torch.set_num_threads(args.threads)

    wanted = [p for p in args.peers.split(",") if p]
    unknown = [p for p in wanted if p not in BUILDERS] + [
        m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        ap.error(f"unknown: {', '.join(unknown)}")
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu measures the calling thread: use it with --threads 1")
    if args.clock == "cpu" and "cuda" in args.targets.split(","):
        ap.error("--clock cpu times CPU work: use it with --targets llvm")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    if "tuned" in wanted and not args.tuning_db:
        wanted.remove("tuned")
    targets, notes = _targets(args.targets.split(","))
    print(_header(args))
    for note in notes:
        print(note)
    print("\n" + TABLE_HEAD + "\n" + "-" * len(TABLE_HEAD), flush=True)
    for target in targets:
        for model in args.models.split(","):
            for batch in (int(b) for b in args.batch.split(",")):
                cell = _make_cell(model, batch, target, args)
                peers, skipped = _build_peers(cell, wanted)
                _time(peers, args.runs, args.warmup, args.budget, clock)
                print("\n".join(_rows(cell, peers, skipped)), flush=True)
    print("(×eager, ×ORT: median latency over PyTorch eager's, ONNX Runtime's, same run; "
          "build s: archdsl/TVM "
          "compile, torch.compile's first call, ONNX export + session, torch.export + TVM "
          "import + build)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

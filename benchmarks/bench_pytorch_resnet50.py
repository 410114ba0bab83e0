"""Eager CPU inference speed: the archdsl-built ResNet-50 against torchvision's resnet50.

Both models run in one process, in eval mode under no_grad, on the same input, with the same
weights (torchvision's state_dict is loaded into ours, and the outputs are checked equal).
Runs are interleaved (A B B A A B ...) so drift (thermal, other load) hits both alike; after a
warm-up, the median of N runs per model is reported with the ratio archdsl / torchvision.
Target: ratio <= 1.05. The script always exits 0; it prints whether the target was met.

    python benchmarks/bench_pytorch_resnet50.py [--batch 1,8] [--runs 15] [--threads 2]
    python benchmarks/bench_pytorch_resnet50.py --profile     # also: where archdsl's time goes
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

import archdsl

try:
    import resource
except ImportError:  # not on Windows: no page-fault counts
    resource = None

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.05


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


def timed(model, x) -> tuple[float, float, int]:
    """Wall time, CPU time of this process (all its threads) and minor page faults."""
    f0, c0, t0 = _faults(), time.process_time(), time.perf_counter()
    model(x)
    return time.perf_counter() - t0, time.process_time() - c0, _faults() - f0


def compare(ours, theirs, x, runs: int, warmup: int):
    for _ in range(warmup):
        ours(x)
        theirs(x)
    a: list[tuple[float, float, int]] = []
    b: list[tuple[float, float, int]] = []
    for i in range(runs):
        if i % 2 == 0:  # A B, then B A: neither always goes first
            a.append(timed(ours, x))
            b.append(timed(theirs, x))
        else:
            b.append(timed(theirs, x))
            a.append(timed(ours, x))
    return a, b


def median(runs, field: int) -> float:
    return statistics.median(r[field] for r in runs)


def python_overhead(ours, theirs, runs: int) -> tuple[float, float]:
    """Fastest forward on a 1x3x8x8 input with one thread: the convolutions do almost no
    arithmetic (what remains is reading the weights), so a difference is per-layer dispatch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.randn(1, 3, 8, 8)
        a, b = compare(ours, theirs, x, runs, warmup=5)
    finally:
        torch.set_num_threads(threads)
    return min(r[0] for r in a), min(r[0] for r in b)


def profile(ours, theirs, x) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, model in (("archdsl", ours), ("torchvision", theirs)):
        model(x)
        with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            for _ in range(3):
                model(x)
        print(f"\n--- torch.profiler, {name}, batch {x.shape[0]}, 3 forwards "
              f"(sorted by self CPU time) ---")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12,
                                        max_name_column_width=40))

    import cProfile
    import pstats
    pr = cProfile.Profile()
    x1 = torch.randn(1, 3, 8, 8)  # small: the Python side, not the kernels, shows up
    pr.enable()
    for _ in range(50):
        ours(x1)
    pr.disable()
    print("\n--- cProfile, archdsl, 50 forwards on 1x3x8x8 (tottime) ---")
    pstats.Stats(pr).sort_stats("tottime").print_stats(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--runs", type=int, default=15, help="timed runs per model and batch size")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--profile", action="store_true", help="profile both models afterwards")
    args = ap.parse_args()
    batches = [int(b) for b in args.batch.split(",")]

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    theirs = torchvision.models.resnet50().eval()
    ours = archdsl.load(ROOT / "specs" / "resnet50.arch").to_torch().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{args.threads} thread(s), {os.cpu_count()} CPU(s), load average {load:.2f}")
    print(f"ResNet-50, eval + no_grad, {args.size}x{args.size}, median of {args.runs} "
          f"interleaved runs after {args.warmup} warm-up\n")
    header = (f"{'batch':>5}  {'archdsl ms':>10}  {'tv ms':>8}  {'ratio':>6}  "
              f"{'CPU ratio':>9}  {'archdsl faults':>14}  {'tv faults':>9}  {'max |diff|':>10}")
    print(header)
    print("-" * len(header))
    ratios = []
    with torch.no_grad():
        for batch in batches:
            x = torch.randn(batch, 3, args.size, args.size)
            diff = (ours(x) - theirs(x)).abs().max().item()
            assert diff < 1e-4, f"outputs differ: max abs diff {diff}"
            a, b = compare(ours, theirs, x, args.runs, args.warmup)
            ratio = median(a, 0) / median(b, 0)
            ratios.append(ratio)
            print(f"{batch:>5}  {median(a, 0) * 1e3:>10.1f}  {median(b, 0) * 1e3:>8.1f}  "
                  f"{ratio:>6.3f}  {median(a, 1) / median(b, 1):>9.3f}  "
                  f"{median(a, 2):>14.0f}  {median(b, 2):>9.0f}  {diff:>10.1e}", flush=True)
        print("(medians per forward; CPU = this process's CPU time, steadier than wall time on a "
              "busy machine; faults = minor page faults)")

        oa, ob = python_overhead(ours, theirs, max(args.runs, 30))
        print(f"\ndispatch (1x3x8x8, 1 thread, fastest run): archdsl {oa * 1e3:.2f} ms, "
              f"torchvision {ob * 1e3:.2f} ms, difference {(oa - ob) * 1e3:+.2f} ms per forward")

        worst = max(ratios)
        verdict = "MET" if worst <= TARGET else "NOT MET"
        print(f"\ntarget archdsl/torchvision <= {TARGET:.2f}: {verdict} (worst ratio {worst:.3f})")

        if args.profile:
            profile(ours, theirs, torch.randn(batches[0], 3, args.size, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())

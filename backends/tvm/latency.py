"""Measured latency of a compiled network: one point of `archdsl stats --latency`.

A point is built once (archdsl's default schedules, seeded random weights: latency does not
depend on their values) and kept in the build cache (build_cache.py); later runs load it from
there. It is then run on one random input: `warmup` runs, then the median of `runs` timed
calls of the VM's `main` (more for a fast network: archdsl.latency.MIN_SECONDS), each ended by
a device sync. Threads are the runtime's default (every
physical core, unless TVM_NUM_THREADS or OMP_NUM_THREADS says otherwise)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import tvm

from archdsl import interrupt
from archdsl.backends.tvm import build
from archdsl.backends.tvm.build_cache import BuildCache, cache_key
from archdsl.backends.tvm.runtime import Compiled
from archdsl.ir import Graph
from archdsl.latency import MAX_RUNS, MIN_SECONDS, Latency

__all__ = ["measure_point", "missing_device", "time_compiled"]


def measure_point(graph: Graph, target: tvm.target.Target, batch: int, dtype: str,
                  cache: BuildCache, runs: int, warmup: int,
                  stage: Callable[[str], None] = lambda what: None) -> Latency:
    """Build (or load from `cache`) and time `graph` on `target`. A build that fails raises
    what `build.compile` raised; the caller says which point it was."""
    key = cache_key(graph, target, batch, dtype)
    path = cache.path(graph.name, key)
    found = cache.load(path, key)
    if found is not None:
        compiled, manifest = found
        compile_seconds = manifest.get("compile_seconds")
        stage("measuring (cached build)")
    else:
        stage("compiling")
        compiled = build.compile(graph, target, None, batch, dtype)
        compile_seconds = round(compiled.compile_seconds or 0.0, 2)
        interrupt.checkpoint()
        stage("caching the build")
        cache.store(path, key, compiled, {"settings": graph.settings,
                                          "compile_seconds": compile_seconds})
        stage("measuring")
    times = time_compiled(compiled, runs, warmup)
    return Latency(ms=1e3 * statistics.median(times), min_ms=1e3 * min(times),
                   runs=len(times), min_runs=runs, warmup=warmup, batch=batch, dtype=dtype,
                   target=describe(target), threads=_threads(), cached=found is not None,
                   compile_seconds=compile_seconds, library=str(path))


def missing_device(target: tvm.target.Target) -> str | None:
    """Why `target`'s code cannot run here (no such device), or None: said before anything
    is compiled for it (a CUDA build compiles on a machine without a GPU, and only fails when
    it runs)."""
    kind = "cpu" if target.kind.name == "llvm" else target.kind.name
    if tvm.device(kind, 0).exist:
        return None
    return f"this machine has no {target.kind.name} device to run on"


def time_compiled(compiled: Compiled, runs: int, warmup: int, seed: int = 0) -> list[float]:
    """Seconds per call of `compiled` on one random input (normal, `seed`), after `warmup`
    calls: `runs` calls, or more until they add up to MIN_SECONDS (at most MAX_RUNS); each
    call waits for the device."""
    x = np.random.default_rng(seed).standard_normal(compiled.input_shape).astype(compiled.dtype)
    dev = compiled.device
    main = compiled.vm["main"]
    xt = tvm.runtime.tensor(x, dev)
    for _ in range(warmup):
        main(xt)
        dev.sync()
        interrupt.checkpoint()
    times: list[float] = []
    while len(times) < runs or (sum(times) < MIN_SECONDS and len(times) < MAX_RUNS):
        started = time.perf_counter()
        main(xt)
        dev.sync()
        times.append(time.perf_counter() - started)
        interrupt.checkpoint()
    return times


def describe(target: tvm.target.Target) -> str:
    """`llvm -mcpu=znver3`, `cuda -arch=sm_90`: the kind and the CPU or GPU it is for."""
    flags = [f"-{k}={target.attrs[k]}" for k in ("mcpu", "arch") if target.attrs.get(k)]
    return " ".join([target.kind.name, *flags])


def _threads() -> int | None:
    """The CPU threads TVM's pool runs (as `Compiled.vm` set them up)."""
    for name in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None

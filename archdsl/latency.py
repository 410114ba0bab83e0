"""Measured latency, beside the counted cost: `archdsl stats --latency TARGET` compiles each
architecture (each `--set` point) with the TVM backend and times it — the MobileNet paper's
Tables 6 and 7 (width multiplier × resolution), with milliseconds measured here, not
Mult-Adds alone.

This module is the core's half: what a measurement is (`Latency`, kept in
`Stats.extra["latency"]`, shown by the `latency_ms` column and written to JSON and CSV), and
`measure_all`, which loads the backend's half (archdsl.backends.tvm.latency) only when called:
`import archdsl` never imports TVM. Builds are cached (backends/tvm/build_cache.py) in
`default_cache_dir()` or `--cache-dir`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import interrupt, progress
from .analysis import Stats
from .errors import ArchError, ArchErrors, UsageError, last_line

RUNS = 20
WARMUP = 3
# a fast network is timed for more than RUNS calls, until its calls add up to MIN_SECONDS
# (a 0.4 ms network: 500 calls), so that one hiccup of a busy machine moves its median less
MIN_SECONDS = 0.2
MAX_RUNS = 10_000


@dataclass
class Latency:
    """One point's measurement: the median and fastest of `runs` timed calls (ms: at least
    `min_runs`, more for a fast network, see MIN_SECONDS) after `warmup`; or why it could not
    be measured (`error`, and no times)."""

    ms: float | None
    min_ms: float | None = None
    runs: int = 0
    min_runs: int = 0
    warmup: int = 0
    batch: int = 1
    dtype: str = "float32"
    target: str = ""
    threads: int | None = None  # TVM's CPU threads; None: TVM's own default
    cached: bool = False  # loaded from the build cache (not compiled by this run)
    compile_seconds: float | None = None  # the build's, whenever it was made
    library: str | None = None  # the cached build
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (docs/json-schema.md: `latency`)."""
        out = asdict(self)
        for key in ("ms", "min_ms"):
            if out[key] is not None:
                out[key] = round(out[key], 4)
        return out


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/archdsl/builds, else ~/.cache/archdsl/builds."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "archdsl" / "builds"


def measure_all(archs: Sequence[Any], all_stats: Sequence[Stats], target: Any, label: str,
                batch: int = 1, dtype: str = "float32", runs: int = RUNS,
                warmup: int = WARMUP, cache_dir: str | os.PathLike | None = None,
                show: bool = False) -> list[UsageError]:
    """Measure each architecture (`archs`, `Architecture`s) on `target` (a checked TVM target;
    `label` is how the user wrote it) into its `Stats.extra["latency"]`. A point that fails
    to build gets a `Latency` with its `error`, and the others are still measured: returns
    the failures, as errors to report. `show`: a progress display on stderr (progress.py)."""
    backend, cache = _backend(cache_dir, target)
    failures: list[UsageError] = []
    display = progress.display(f"measuring latency on {label}") if show else None
    with display if display is not None else contextlib.nullcontext():
        for i, (a, stats) in enumerate(zip(archs, all_stats, strict=True)):
            def stage(what: str, i: int = i, name: str = _point(stats)) -> None:
                if display is not None:
                    display.step(i, len(archs), f"{name}: {what}")
            try:
                stats.extra["latency"] = backend.measure_point(
                    a.graph, target, batch, dtype, cache, runs, warmup, stage)
            except (ArchError, ArchErrors) as exc:  # too big for this machine's memory, say
                errors = exc.errors if isinstance(exc, ArchErrors) else [exc]
                failures.append(_failed(stats, label, errors[0].message, len(archs)))
            except Exception as exc:  # TVM's, raised while compiling this point
                interrupt.checkpoint()  # a Ctrl-C that TVM turned into an error stops it all
                failures.append(_failed(stats, label, last_line(exc)[:500], len(archs)))
        if display is not None:
            display.step(len(archs), len(archs), "done")
    return failures


def measure(arch: Any, target: Any = "llvm", batch: int = 1, dtype: str = "float32",
            runs: int = RUNS, warmup: int = WARMUP,
            cache_dir: str | os.PathLike | None = None) -> Latency:
    """One `Architecture`'s latency, measured as `stats --latency` measures it (the build
    cached the same way); `target` as `archdsl.backends.tvm.compile` takes it. A build that
    fails raises what the TVM backend raised."""
    from .backends import load_backend
    target = load_backend("tvm.build").make_target(target)
    backend, cache = _backend(cache_dir, target)
    return backend.measure_point(arch.graph, target, batch, dtype, cache, runs, warmup)


def _backend(cache_dir: str | os.PathLike | None, target: Any) -> tuple[Any, Any]:
    """The TVM half (backends/tvm/latency.py) and the build cache, checked before anything
    is compiled: a cache that cannot be trusted, or a target with no device here to run on,
    is an error now, not after the first build."""
    from .backends import load_backend
    backend = load_backend("tvm.latency")
    why = backend.missing_device(target)
    if why is not None:
        raise UsageError(f"cannot measure on {backend.describe(target)}: {why}", None,
                         "measure on the machine the code is for; `archdsl compile` builds "
                         "for a target without running it")
    cache = load_backend("tvm.build_cache").BuildCache(cache_dir or default_cache_dir())
    cache.secret()
    return backend, cache


def _point(stats: Stats) -> str:
    from .writers import settings_text
    return stats.name + (f" ({settings_text(stats.given)})" if stats.given else "")


def _failed(stats: Stats, label: str, why: str, points: int) -> UsageError:
    stats.extra["latency"] = Latency(None, target=label, error=why)
    return UsageError(f"cannot measure {_point(stats)} on {label}: {why}", None,
                      "its latency shows as —" + (", the other points' were measured"
                                                  if points > 1 else ""))


def of(stats: Stats) -> float | None:
    """The median latency in ms, if measured."""
    lat = stats.extra.get("latency")
    return None if lat is None else lat.ms


def definition(all_stats: Sequence[Stats]) -> str:
    """What the latency column measures, for the table's caption."""
    lat = next((s.extra["latency"] for s in all_stats
                if "latency" in s.extra and s.extra["latency"].ms is not None), None)
    if lat is None:
        return "Latency ms: not measured"
    threads = f"{lat.threads} threads" if lat.threads else "TVM's default threads"
    return (f"Latency ms: median of at least {lat.min_runs} timed runs (of a fast network, "
            f"as many as fill {MIN_SECONDS:g} s) after {lat.warmup} warm-up runs, batch "
            f"{lat.batch}, {lat.dtype}, random weights, compiled with TVM (archdsl's default "
            f"schedules) for {lat.target}, {threads}")

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

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import interrupt
from .analysis import Stats
from .errors import ArchError, ArchErrors, UsageError, last_line

RUNS = 20
WARMUP = 3


@dataclass
class Latency:
    """One point's measurement: the median and fastest of `runs` timed calls (ms) after
    `warmup`; or why it could not be measured (`error`, and no times)."""

    ms: float | None
    min_ms: float | None = None
    runs: int = 0
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
                display: Any = None) -> list[UsageError]:
    """Measure each architecture (`archs`, `Architecture`s) on `target` (a checked TVM target;
    `label` is how the user wrote it) into its `Stats.extra["latency"]`. A point that fails
    to build gets a `Latency` with its `error`, and the others are still measured: returns
    the failures, as errors to report. `display`: a progress display (archdsl.progress)."""
    backend, cache = _backend(cache_dir)
    failures: list[UsageError] = []
    for i, (a, stats) in enumerate(zip(archs, all_stats, strict=True)):
        name = _point(stats)

        def stage(what: str, i: int = i, name: str = name) -> None:
            if display is not None:
                display.step(i, len(archs), f"{name}: {what}")
        try:
            stats.extra["latency"] = backend.measure_point(
                a.graph, target, batch, dtype, cache, runs, warmup, stage)
        except (ArchError, ArchErrors) as exc:  # too big for this machine's memory, say
            errors = exc.errors if isinstance(exc, ArchErrors) else [exc]
            failures.append(_failed(stats, label, errors[0].message))
        except Exception as exc:  # TVM's, raised while compiling this point
            interrupt.checkpoint()  # a Ctrl-C that TVM turned into an error stops it all
            failures.append(_failed(stats, label, last_line(exc)[:500]))
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
    backend, cache = _backend(cache_dir)
    target = load_backend("tvm.build").make_target(target)
    return backend.measure_point(arch.graph, target, batch, dtype, cache, runs, warmup)


def _backend(cache_dir: str | os.PathLike | None) -> tuple[Any, Any]:
    """The TVM half (backends/tvm/latency.py) and the build cache, checked before anything
    is compiled (a cache that cannot be trusted is an error now, not after the first build)."""
    from .backends import load_backend
    backend = load_backend("tvm.latency")
    cache = load_backend("tvm.build_cache").BuildCache(cache_dir or default_cache_dir())
    cache.secret()
    return backend, cache


def _point(stats: Stats) -> str:
    from .writers import settings_text
    return stats.name + (f" ({settings_text(stats.given)})" if stats.given else "")


def _failed(stats: Stats, label: str, why: str) -> UsageError:
    stats.extra["latency"] = Latency(None, target=label, error=why)
    return UsageError(f"cannot measure {_point(stats)} on {label}: {why}", None,
                      "the other points were measured; this one shows —")


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
    return (f"Latency ms: median of {lat.runs} runs after {lat.warmup} warm-up runs, batch "
            f"{lat.batch}, {lat.dtype}, random weights, compiled with TVM (archdsl's default "
            f"schedules) for {lat.target}, {threads}")

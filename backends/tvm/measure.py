"""MetaSchedule's plumbing for `tune`: build and measurement workers, logs, Ctrl-C, and the
tensor intrinsics that MetaSchedule imports. Nothing here knows about archdsl's networks."""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import importlib.util
import logging
import os
import platform
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import tvm

from archdsl import interrupt
from archdsl.backends.tvm import runtime

BUILD_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 30.0
_LOGGER = "tvm.s_tir.meta_schedule"
_INTRIN = "tvm.s_tir.tensor_intrin"


# ---------------------------------------------------------------- workers

_WORKERS: list[Any] = []


def workers() -> tuple[Any, Any]:
    """The builder and runner: their worker processes start once per process (each spends
    seconds importing TVM) and serve later tuning runs too."""
    if not _WORKERS:
        from tvm.s_tir import meta_schedule as ms
        cores = ms.utils.cpu_count(logical=False)
        # the pools' threads, and the processes they start (now and when they restart one),
        # inherit a blocked SIGINT: the terminal's Ctrl-C reaches the whole process group, and
        # a worker still importing TVM would die of it ("Subprocess terminated")
        with interrupt.blocked():
            builder = _builder_class()(cores)
            started = [builder.pool.submit(_worker_ready) for _ in range(cores)]
            runner = ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, initializer=_worker_init)
            for future in started:
                future.result()
        _WORKERS[:] = [builder, runner]
        atexit.register(drop_workers)
    return _WORKERS[0], _WORKERS[1]


def drop_workers() -> None:
    if _WORKERS:
        builder, runner = _WORKERS
        _WORKERS.clear()
        builder.pool.shutdown()
        runner.pool.shutdown()


@functools.cache
def _builder_class():
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class Builder(PyBuilder):
        """MetaSchedule's LocalBuilder with worker processes that live across batches
        (LocalBuilder starts new ones per batch: seconds of `import tvm` each time)."""

        def __init__(self, workers: int) -> None:
            super().__init__()
            self.pool = PopenPoolExecutor(max_workers=workers, timeout=BUILD_TIMEOUT_S,
                                          initializer=_worker_init, maximum_process_uses=256)

        def build(self, build_inputs):
            check_interrupted()
            results = []
            for done in self.pool.map_with_error_catching(
                    lambda x: _build(*x), [(b.mod, b.target) for b in build_inputs]):
                if done.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(done.value, None))
                else:
                    why = ("timed out" if done.status == StatusKind.TIMEOUT
                           else f"failed: {done.value}")
                    results.append(BuilderResult(None, f"archdsl builder: {why}"))
            return results
    return Builder


def time_functions(funcs: list[Any], target: tvm.target.Target) -> list[float | None]:
    """Mean run time in seconds of each PrimFunc (on random inputs), measured as MetaSchedule
    measures its trials: built by the same workers, timed by the same runner, so the times
    compare with the database's. None for one that failed to build or run."""
    import shutil

    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput
    builder, runner = workers()
    mods = [tvm.IRModule({"main": f.with_attr("global_symbol", "main")}) for f in funcs]
    built = builder.build([BuilderInput(m, target) for m in mods])
    check_interrupted()
    device = "cpu" if target.kind.name == "llvm" else target.kind.name
    inputs = [(i, RunnerInput(b.artifact_path, device, ArgInfo.from_prim_func(f)))
              for i, (b, f) in enumerate(zip(built, funcs, strict=True)) if b.error_msg is None]
    times: list[float | None] = [None] * len(funcs)
    try:
        for (i, _), future in zip(inputs, runner.run([r for _, r in inputs]), strict=True):
            result = future.result()
            secs = [float(s) for s in result.run_secs or []]
            if result.error_msg is None and secs:
                times[i] = sum(secs) / len(secs)
    finally:
        for b in built:
            if b.error_msg is None:
                shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
    return times


def measured(on_batch: Callable[[int, list[Any]], None]):
    """A MetaSchedule measure callback that hands each batch's runner results to `on_batch`
    (with the task's index in the scheduler), after the database has them."""
    return _measured_class()(on_batch)


@functools.cache
def _measured_class():
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Measured(PyMeasureCallback):
        def __init__(self, on_batch: Callable[[int, list[Any]], None]) -> None:
            super().__init__()
            self.on_batch = on_batch

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
                  runner_results) -> None:
            self.on_batch(task_id, list(runner_results))
            check_interrupted()  # the batch is in the database: a safe place to stop
    return Measured


def _worker_init() -> None:
    """Build and measurement workers: all cores, the cheap intrinsics package (what they get is
    scheduled already), and Ctrl-C is the tuning process's to handle (a dying worker would make its
    batch look like failed trials)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime.use_physical_cores()  # trials are measured on as many threads as the build will run
    _light_intrinsics()


def _worker_ready() -> None:
    """Nothing: starting a worker (importing TVM) is the point."""


def _build(mod: tvm.IRModule, target: tvm.target.Target) -> str:
    """Build one candidate in a worker process. Exported as a shared library, linked here in
    parallel, where MetaSchedule's default (a tar) has its one runner link each candidate."""
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build
    path = os.path.join(tempfile.mkdtemp(prefix="archdsl-tune-"), "candidate.so")
    default_build(mod, target, None).export_library(path)
    return path  # its folder goes when it is measured (MetaSchedule's RemoveBuildArtifact)


# ---------------------------------------------------------------- logs and Ctrl-C

@contextlib.contextmanager
def log_to(file: Path) -> Iterator[logging.Logger]:
    """MetaSchedule's loggers (scheduler, search, cost model) and whatever TVM's C++ code and
    the workers write to fd 2 (warnings such as "Unknown schedule rule") go to `file`, not the
    terminal. Yields a logger for the tasks."""
    file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(file, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
    ms_logger = logging.getLogger(_LOGGER)
    saved = (ms_logger.handlers[:], ms_logger.level, ms_logger.propagate)
    ms_logger.handlers[:] = [handler]
    ms_logger.setLevel(logging.INFO)
    ms_logger.propagate = False
    sys.stderr.flush()
    saved_fd = os.dup(2)
    os.dup2(handler.stream.fileno(), 2)
    try:
        yield logging.getLogger(_LOGGER + ".archdsl")
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        ms_logger.handlers[:], level, ms_logger.propagate = saved
        ms_logger.setLevel(level)
        handler.close()


class Interrupted(Exception):
    """Raised at a safe point of tuning (a batch boundary, in Python) after a Ctrl-C."""


def stopping() -> bool:
    """Whether Ctrl-C was pressed (archdsl.interrupt)."""
    return interrupt.pressed()


def check_interrupted() -> None:
    """Stop here if Ctrl-C was pressed: called where MetaSchedule calls Python (the builder,
    the measure callback) and between archdsl's own measurements. An exception raised there
    comes out of MetaSchedule's C++ loop as any error of a callback does."""
    if interrupt.pressed():
        raise Interrupted("interrupted")


def interrupts(on_first: Callable[[], None] | None = None):
    """Ctrl-C while tuning only sets a flag (archdsl.interrupt.deferred), checked at the batch
    boundaries (`check_interrupted`): a KeyboardInterrupt raised wherever the signal landed
    was swallowed as a failed build, or crashed MetaSchedule."""
    return interrupt.deferred(on_first)


# ---------------------------------------------------------------- tensor intrinsics

def _light_intrinsics() -> None:
    """Make `import tvm.s_tir.tensor_intrin` cheap. MetaSchedule imports it (in the tuning
    process and in every build worker), and the package registers every tensor intrinsic TVM
    has — CUDA, ROCm, ARM, Hexagon, x86 — by parsing TVMScript: over a minute on a 2-core
    machine. An empty package stands in; `load_intrinsics` adds the target's own."""
    if _INTRIN in sys.modules:
        return
    spec = importlib.util.find_spec(_INTRIN)
    if spec is None:  # pragma: no cover - a TVM without it
        return
    package = importlib.util.module_from_spec(spec)  # its __init__ is not run
    sys.modules[_INTRIN] = package
    import tvm.s_tir
    tvm.s_tir.tensor_intrin = package  # type: ignore[attr-defined]


def load_intrinsics(target: tvm.target.Target) -> None:
    """The tensor intrinsics the target's schedule rules may use (and records may replay)."""
    _light_intrinsics()
    if target.kind.name == "llvm":
        subs = ["arm_cpu"] if platform.machine().lower() in ("arm64", "aarch64") else ["x86"]
    else:
        subs = [target.kind.name] if target.kind.name in ("cuda", "rocm", "metal") else []
    for sub in subs:
        importlib.import_module(f"{_INTRIN}.{sub}")

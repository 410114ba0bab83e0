"""MetaSchedule tuning for the TVM backend: a persistent, resumable database of schedules.

`schedule_hook` is the first of `build.SCHEDULE_HOOKS`. It sees the fused module
(one PrimFunc per fused kernel) and takes three options of `compile()`:

- `tune=N`: give every kernel (MetaSchedule *task*) of the network N measured trials in all,
  then build with the best schedule found for each (or the default one, where faster). The
  database remembers every trial under its workload (the kernel's TIR, compared structurally,
  as MetaSchedule's JSONDatabase keys it), so a kernel that repeats in a network is one task,
  a kernel another network shares is already tuned, and a run tunes only what is missing: an
  interrupted run resumes where it stopped, the same `tune=N` again tunes nothing, `tune=2N`
  adds N trials to every kernel (its search starts from the best schedules recorded). A
  kernel whose search runs out of new schedules before N (a tiny space: a reshape has one) is
  noted and not tried again. On CPUs a tuned kernel may choose the layout of its weights,
  made at compile time.
- `tuning_db`: the database folder (default: `default_database(target)`, a per-user cache
  folder per target). With `tune=0` the database is only applied.
- `progress`: a callable that receives a `TuneEvent` after each measured batch (and notes);
  without it the library prints nothing. MetaSchedule's own log goes to `logs/tuning.log`
  in the database folder.

Tuned schedules compete with archdsl's default ones (`schedules.default_schedule`): after
its trials, a tuning run measures the default schedule of every tuned kernel with the same
workers (`_compare_defaults`, times noted in `archdsl_defaults.json` beside the database), and
the build takes, per kernel, whichever measured faster (`KernelChoice`). With `schedules=False`
there is no default to compare with and every tuned schedule is taken.

Measuring needs the target's hardware. A GPU target on a machine without that GPU is not
tuned: the build takes what the database holds and a note says so.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tvm
from tvm import relax

from archdsl.backends.tvm import database, measure
from archdsl.backends.tvm.database import TuningError
from archdsl.errors import last_line

__all__ = ["KernelChoice", "TuneEvent", "TuningError", "default_database", "schedule_hook",
           "target_key"]


# MetaSchedule's search settings. TVM's defaults, except trials per round: small enough that
# a kernel's budget spans a few rounds (the cost model learns between them), and a Ctrl-C
# loses at most one round. Tests shrink the population to keep the search quick.
SEARCH: dict[str, Any] = {"population_size": 512, "init_min_unmeasured": 50}
TRIALS_PER_ROUND = 32


@dataclass(frozen=True)
class KernelChoice:
    """A tuned kernel of the build: its best time in the database, its default schedule's
    time (None where not measured), and the schedule it is built with: the faster one."""

    kernel: str
    uses: int
    tuned_s: float
    default_s: float | None

    @property
    def built_with(self) -> str:
        """"default" or "tuned"."""
        return ("default" if self.default_s is not None and self.default_s <= self.tuned_s
                else "tuned")


@dataclass(frozen=True)
class TuneEvent:
    """Where a tuning run stands. `kind`: "start" (tasks counted, tuning begins), "trials" (a
    batch of one task measured), "note" (something the user should know, in `message`),
    "compare" (archdsl's default schedules of the tuned kernels being measured) or
    "applied" (the database applied: `applied` of the network's `tasks` kernels scheduled from
    it, `defaults` more left to archdsl's default schedule, which measured faster)."""

    kind: str
    database: Path
    tasks: int = 0            # distinct kernels (tasks) in the network
    tasks_to_tune: int = 0    # those below the trial budget, tuned in this run
    tasks_done: int = 0       # of those, the ones that reached it
    trials: int = 0           # trials measured in this run so far
    trials_total: int = 0     # trials this run plans
    task: str = ""            # the kernel just measured
    best_ms: float | None = None  # estimated network time: Σ uses × best kernel time
    elapsed: float = 0.0
    applied: int = 0          # kernels built with the database's schedule
    defaults: int = 0         # tuned kernels built with archdsl's default schedule: faster
    kernels: tuple[KernelChoice, ...] = ()  # with "applied": each tuned kernel's choice
    message: str = ""


def target_key(target: tvm.target.Target) -> str:
    """A folder name for a target's database: kind and CPU or GPU architecture."""
    arch = target.attrs.get("mcpu") or target.attrs.get("arch") or ""
    return "-".join(str(p) for p in (target.kind.name, arch) if str(p))


def default_database(target: tvm.target.Target) -> Path:
    """$XDG_CACHE_HOME/archdsl/tuning/TARGET-KEY (~/.cache/... without XDG_CACHE_HOME)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "archdsl" / "tuning" / target_key(target)


# ---------------------------------------------------------------- the hook

def schedule_hook(mod: tvm.IRModule, target: tvm.target.Target,
                  options: dict[str, Any]) -> tvm.IRModule:
    """Tune (options `tune`, `tuning_db`, `progress`) and apply the database; see the module
    docstring. Functions the database schedules are marked "tirx.is_scheduled"."""
    trials = options.get("tune") or 0
    if not isinstance(trials, int) or trials < 0:
        raise ValueError(f"tune must be a number of trials (0 or more), got {trials!r}")
    if not trials and options.get("tuning_db") is None:
        return mod
    path = Path(options.get("tuning_db") or default_database(target)).expanduser()
    if not trials and not database.present(path):
        raise TuningError(f"no tuning database at {path} (tune with --tune N to make one)")
    report = _Reporter(options.get("progress"), path)
    mod = _layout_free(mod, target)
    tasks = _tasks(mod, target)
    if trials and tasks:
        if _can_measure(target):
            _tune(tasks, target, path, trials, report)
        else:
            report.note(f"tuning needs the {target.kind.name} GPU to measure on, and this "
                        f"machine has none: building with the schedules {path} already "
                        "holds (tune on the GPU machine, then copy the folder)")
    scheduled, choices = mod, ()
    if database.present(path):
        measure.load_intrinsics(target)  # records may replay tensorization
        with database.applying(path, _json_database) as db:  # a private copy: never written
            _count_trials(db, tasks)
        times = _default_times(tasks, target, path) if options.get("schedules", True) else {}
        tuned = [t for t in tasks if t.best is not None]
        choices = tuple(KernelChoice(t.name, t.uses, t.best, times.get(t.key)) for t in tuned)
        kept = [t for t, c in zip(tuned, choices, strict=True) if c.built_with == "tuned"]
        with target, _best_records(kept):
            scheduled = relax.transform.MetaScheduleApplyDatabase()(mod)
    applied = sum(1 for gv, f in scheduled.functions.items()
                  if _is_scheduled(f) and not _is_scheduled(mod[gv]))
    report.send("applied", tasks=len(tasks), applied=applied, kernels=choices,
                defaults=sum(c.built_with == "default" for c in choices))
    return _rewrite_layouts(scheduled, applied > 0)


# ---------------------------------------------------------------- against the default schedules

def _default_schedule(task: _Task, target: tvm.target.Target):
    """archdsl's default schedule of the task's kernel (a PrimFunc), None where it has none
    (made once per task). The constants are the params the workload marks layout free
    (`_layout_free`)."""
    if task.default is ...:
        task.default = None
        if target.kind.name == "llvm":
            from archdsl.backends.tvm.schedules import default_schedule
            func = task.mod["main"]
            constant = frozenset(int(i) for i in func.attrs.get("layout_free_buffers", []))
            plan = default_schedule(func.without_attr("layout_free_buffers"), target, constant)
            task.default = None if plan is None else plan.func
    return task.default


def _schedule_key(func) -> str:
    from tvm_ffi import structural_hash
    return str(structural_hash(func))


def _default_times(tasks: list[_Task], target: tvm.target.Target,
                   path: Path) -> dict[str, float]:
    """Task key → the measured time of its default schedule (from `_compare_defaults`), for
    the tasks whose default schedule is still the one archdsl makes now."""
    measured = database.read_defaults(path, strict=True)
    times = {}
    for task in tasks:
        seen = measured.get(task.key)
        if not seen or task.best is None:
            continue
        func = _default_schedule(task, target)
        if func is not None and _schedule_key(func) == seen["schedule"]:
            times[task.key] = float(seen["seconds"])
    return times


def _compare_defaults(tasks: list[_Task], target: tvm.target.Target, path: Path,
                      report: _Reporter) -> None:
    """Measure the default schedule of every tuned task that lacks a time for it (the default
    schedules change as archdsl does), as the tuning measures its trials; note the times."""
    measured = database.read_defaults(path, strict=False)  # corrupt: measured again
    todo = []
    for task in tasks:
        func = _default_schedule(task, target) if task.measured else None
        if func is not None and measured.get(task.key, {}).get("schedule") != _schedule_key(func):
            todo.append((task, func))
    if not todo:
        return
    report.send("compare", message=f"measuring archdsl's default schedules of {len(todo)} "
                "kernels against the tuned ones")
    times = measure.time_functions([f for _, f in todo], _tuning_target(target))
    for (task, func), seconds in zip(todo, times, strict=True):
        if seconds is not None:
            measured[task.key] = {"schedule": _schedule_key(func), "seconds": seconds}
    database.write_note(path, database.DEFAULTS, measured)


def _best_records(tasks: list[_Task]):
    """A database in memory holding the best record of each of `tasks`: what the build
    applies."""
    from tvm.s_tir.meta_schedule.database import MemoryDatabase, TuningRecord
    db = MemoryDatabase(module_equality="structural")
    for task in tasks:
        top = task.top
        db.commit_tuning_record(TuningRecord(top.trace, db.commit_workload(task.mod),
                                             top.run_secs, top.target, top.args_info))
    return db


def _layout_free(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """On CPUs, mark the kernels' weight parameters (Relax constants) "layout free": a tuned
    schedule may then ask for its own weight layout (MetaSchedule's RewriteLayout, as TVM's
    `static_shape_tuning_pipeline(cpu_weight_prepack=True)`), which `_rewrite_layouts`
    makes at compile time. Part of the workloads' keys, so always done before tuning or
    applying."""
    if target.kind.name != "llvm":
        return mod
    return relax.transform.AttachAttrLayoutFreeBuffers()(mod)


def _rewrite_layouts(mod: tvm.IRModule, tuned: bool) -> tvm.IRModule:
    """Unmark the kernels the database did not schedule (later hooks get them as they were),
    and fold the weight layouts the tuned ones asked for into the constants. (`mod` is this
    hook's own: `_layout_free` or the database made it.)"""
    for gv, func in list(mod.functions_items()):
        if (isinstance(func, tvm.tirx.PrimFunc) and not _is_scheduled(func)
                and "layout_free_buffers" in func.attrs):
            mod.update_func(gv, func.without_attr("layout_free_buffers"))
    if not tuned:
        return mod
    return tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                     relax.transform.FoldConstant()])(mod)


def _is_scheduled(func) -> bool:
    return isinstance(func, tvm.tirx.PrimFunc) and bool(func.attrs.get("tirx.is_scheduled"))


def _can_measure(target: tvm.target.Target) -> bool:
    kind = target.kind.name
    return kind == "llvm" or tvm.device(kind, 0).exist


@dataclass
class _Reporter:
    """Sends TuneEvents to the `progress` callable (notes become warnings without one)."""

    progress: Callable[[TuneEvent], None] | None
    database: Path
    started: float = field(default_factory=time.perf_counter)
    last: TuneEvent | None = None

    def send(self, kind: str, **values: Any) -> None:
        base = self.last or TuneEvent(kind, self.database)
        self.last = replace(base, kind=kind, elapsed=time.perf_counter() - self.started,
                            **{"message": "", **values})
        if self.progress is not None:
            self.progress(self.last)

    def note(self, message: str) -> None:
        if self.progress is None:
            warnings.warn(message, stacklevel=4)
        self.send("note", message=message)


# ---------------------------------------------------------------- tasks and the database

@dataclass
class _Task:
    name: str
    mod: tvm.IRModule      # the workload: the kernel as a one-function module
    uses: int              # how often the network calls it
    measured: int = 0      # trials in the database
    best: float | None = None  # its best time in seconds, from the database or this run
    used_up: bool = False  # its search found no more new schedules (a tiny space)
    top: Any = None        # its best TuningRecord in the database
    default: Any = ...     # archdsl's default schedule of it (`_default_schedule`; ...: not made)

    @property
    def key(self) -> str:
        from tvm_ffi import structural_hash
        return str(structural_hash(self.mod))


def _tasks(mod: tvm.IRModule, target: tvm.target.Target) -> list[_Task]:
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks
    found = extract_tasks(mod, _tuning_target(target))
    return [_Task(t.task_name, t.dispatched[0], int(t.weight)) for t in found
            if not t.mod.attrs.get("tirx.is_scheduled", False)]


def _tuning_target(target: tvm.target.Target) -> tvm.target.Target:
    """MetaSchedule's CPU rules need the core count in the target ("num-cores")."""
    if target.kind.name != "llvm" or "num-cores" in target.attrs:
        return target
    from tvm.s_tir.meta_schedule.utils import cpu_count
    return tvm.target.Target({**target.export(), "num-cores": cpu_count(logical=False)})


def _json_database(folder: Path):
    """MetaSchedule's JSONDatabase in `folder` (made if missing)."""
    from tvm.s_tir.meta_schedule.database import JSONDatabase
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return JSONDatabase(work_dir=str(folder), module_equality="structural")
    except Exception as exc:  # a database written by something else
        raise TuningError(f"{folder}: not a readable MetaSchedule database: "
                          f"{last_line(exc)[:300]}") from exc


def _count_trials(db, tasks: list[_Task]) -> None:
    """Each task's trials and best time so far, from the database."""
    counts: dict[int, int] = {}
    for record in db.get_all_tuning_records():
        key = record.workload.__hash__()
        counts[key] = counts.get(key, 0) + 1
    for task in tasks:
        if not db.has_workload(task.mod):
            continue
        workload = db.commit_workload(task.mod)  # the stored one: nothing is written
        task.measured = counts.get(workload.__hash__(), 0)
        top = db.get_top_k(workload, 1)
        task.top = top[0] if top else None
        task.best = _seconds(top[0].run_secs) if top else None


def _seconds(run_secs) -> float | None:
    values = [float(s) for s in run_secs or []]
    return sum(values) / len(values) if values and max(values) < 1e9 else None


def _estimate_ms(tasks: list[_Task]) -> float | None:
    if any(t.best is None for t in tasks):
        return None
    return 1e3 * sum(t.uses * t.best for t in tasks)  # type: ignore[operator]


# ---------------------------------------------------------------- tuning

def _tune(tasks: list[_Task], target: tvm.target.Target, path: Path, budget: int,
          report: _Reporter) -> None:
    """Tune every task below `budget` trials, then measure the default schedules of the tuned
    ones (`_compare_defaults`), holding the database's lock."""
    measure.load_intrinsics(target)  # the schedule rules' tensorization
    with database.tuning(path):
        db = _json_database(path)
        _count_trials(db, tasks)
        used_up = database.read_used_up(path)
        for task in tasks:
            task.used_up = task.key in used_up
        todo = [t for t in tasks if t.measured < budget and not t.used_up]
        report.send("start", tasks=len(tasks), tasks_to_tune=len(todo),
                    trials_total=sum(budget - t.measured for t in todo),
                    best_ms=_estimate_ms(tasks))
        # Ctrl-C from here on stops at the next batch boundary (measure.interrupts)
        with measure.log_to(path / database.LOG) as log, measure.interrupts(lambda: report.note(
                "stopping after the batch being measured (its trials are kept); Ctrl-C "
                "again stops at once")):
            try:
                if todo:
                    _search(tasks, todo, target, path, db, budget, used_up, report, log)
                _compare_defaults(tasks, target, path, report)
            except measure.Interrupted:
                raise KeyboardInterrupt from None


def _search(tasks: list[_Task], todo: list[_Task], target: tvm.target.Target, path: Path, db,
            budget: int, used_up: set[str], report: _Reporter, log: logging.Logger) -> None:
    """MetaSchedule's search for the tasks in `todo`, up to `budget` trials each."""
    from tvm.s_tir import meta_schedule as ms
    log.info("archdsl: tuning %d of %d tasks to %d trials each", len(todo), len(tasks), budget)
    builder, runner = measure.workers()
    measure.check_interrupted()
    cores = ms.utils.cpu_count(logical=False)
    cost_model = ms.CostModel.create("xgb", num_tuning_cores=cores, tree_method="auto")
    progress = _Progress(tasks, todo, budget, report)
    try:
        # one scheduler run per remaining budget: MetaSchedule caps its tasks alike
        for left in sorted({budget - t.measured for t in todo}, reverse=True):
            measure.check_interrupted()
            progress.group = [t for t in todo if budget - t.measured == left]
            _tune_group(progress.group, target, db, left, builder, runner, cost_model,
                        progress, log)
            short = {t.key for t in progress.group if t.measured < budget}
            if short:
                used_up |= short
                database.write_note(path, database.USED_UP, sorted(used_up))
    except BaseException as exc:
        if measure.stopping():  # the workers ignore Ctrl-C: they are fine
            raise measure.Interrupted from None
        measure.drop_workers()
        if not isinstance(exc, Exception) or isinstance(exc, TuningError):
            raise
        why = last_line(exc)
        raise TuningError(f"MetaSchedule failed while tuning ({why[:300]}); the trials "
                          f"measured before are kept; its log: "
                          f"{path / 'logs' / 'tuning.log'}") from exc


def _tune_group(group: list[_Task], target, db, trials: int, builder, runner, cost_model,
                progress: _Progress, log: logging.Logger) -> None:
    """Tune tasks that all lack `trials` trials. Round-robin: every batch is committed to the
    database as soon as it is measured (the gradient scheduler holds its first round back)."""
    from tvm.s_tir import meta_schedule as ms
    cores = ms.utils.cpu_count(logical=False)
    contexts = [ms.TuneContext(
        mod=t.mod, target=_tuning_target(target), space_generator="post-order-apply",
        search_strategy=ms.search_strategy.EvolutionarySearch(**SEARCH), task_name=t.name,
        logger=log, num_threads=cores).clone() for t in group]
    ms.tune_tasks(
        tasks=contexts, task_weights=[float(t.uses) for t in group], work_dir="",
        max_trials_global=trials * len(group), max_trials_per_task=trials,
        num_trials_per_iter=min(trials, TRIALS_PER_ROUND), builder=builder, runner=runner,
        database=db, cost_model=cost_model,
        measure_callbacks=[*ms.MeasureCallback.create("default"),
                           measure.measured(progress.batch)],
        task_scheduler="round-robin")


@dataclass
class _Progress:
    """Counts trials per task as batches come back, for the TuneEvents."""

    tasks: list[_Task]
    todo: list[_Task]
    budget: int
    report: _Reporter
    group: list[_Task] = field(default_factory=list)
    trials: int = 0

    def batch(self, task_id: int, results: list) -> None:
        if not results:
            return
        times = [_seconds(r.run_secs) if r.error_msg is None else None for r in results]
        task = self.group[task_id]
        task.measured += len(times)
        self.trials += len(times)
        found = [t for t in times if t is not None]
        if found and (task.best is None or min(found) < task.best):
            task.best = min(found)
        self.report.send("trials", trials=self.trials, task=task.name,
                         tasks_done=sum(t.measured >= self.budget for t in self.todo),
                         best_ms=_estimate_ms(self.tasks))



"""Building: a Relax module → fused, scheduled kernels → a library (`Compiled`).

`compile` runs explicit phases: legalize and fuse, the schedule hooks (a tuning database, then
archdsl's default CPU schedules), dlight's GPU fallback, lowering to the Relax VM, codegen.
"""

from __future__ import annotations

import json
import numbers
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tvm
from tvm import relax

from archdsl import interrupt
from archdsl.backends.tvm import cpu, trunk_threads, tune
from archdsl.backends.tvm.chunks import chunk_images
from archdsl.backends.tvm.inplace import WriteOverDeadOperands
from archdsl.backends.tvm.lower import ChunkError, build_module
from archdsl.backends.tvm.net_launch import OneLaunch
from archdsl.backends.tvm.runtime import META_FUNC, Compiled, runtime_threads
from archdsl.backends.tvm.schedules.common import Machine
from archdsl.ir import Graph
from archdsl.memory import check_fits

__all__ = ["SCHEDULE_HOOKS", "ScheduleHook", "check_build_args", "check_target", "compile",
           "host_cpu", "make_target"]


# ---------------------------------------------------------------- targets and building

def make_target(target: str | Mapping[str, Any] | tvm.target.Target = "llvm") -> tvm.target.Target:
    """A TVM target. "llvm" (or {"kind": "llvm"} without "mcpu") is the host CPU as
    `clang -march=native` takes it (its name, less the features the name implies that this
    CPU lacks: `host_cpu`), and the threads the runtime will use here as its "num-cores"
    (`runtime_threads`; another CPU's target has none unless it says). A GPU target gets the
    host CPU as its host unless it names one. TVM 0.27 rejects flag strings
    ("cuda -arch=sm_90"): use a dict ({"kind": "cuda", "arch": "sm_90"}) or a tag
    ("nvidia/nvidia-h100")."""
    if isinstance(target, tvm.target.Target):
        t = target
    else:
        if target == "llvm":
            target = {"kind": "llvm"}
        if isinstance(target, Mapping):
            target = dict(target)
            if target.get("kind") == "llvm" and "mcpu" not in target:
                target.update(host_cpu(target.get("mattr", ())))
                # the threads the code will run on here (the schedules plan their parallel
                # loops for them: `Machine.threads`)
                target.setdefault("num-cores", runtime_threads())
        t = tvm.target.Target(target)
    if t.kind.name != "llvm" and t.host is None:
        t = tvm.target.Target(t, host={"kind": "llvm", **host_cpu()})
    check_target(t)
    return t


KINDS = ("llvm", "cuda")  # the targets archdsl builds and tests (build.compile's pipelines)


def check_target(t: tvm.target.Target) -> None:
    """Refuse a target TVM would accept here and fail on deep in the build (issue #13): a
    kind archdsl does not build for, a CUDA architecture that is not sm_NN, a CPU LLVM does
    not know (for the target or its host), a CPU target's num-cores below 1."""
    from tvm.target import codegen
    if t.kind.name not in KINDS:
        raise ValueError(f"archdsl builds for {' and '.join(KINDS)} targets, not "
                         f"`{t.kind.name}`")
    arch = str(t.attrs.get("arch", ""))
    if t.kind.name == "cuda" and not re.fullmatch(r"sm_\d{2,3}[a-z]?", arch):
        raise ValueError(f"`{arch}` is not a CUDA architecture (sm_80, sm_90a, ...)")
    for cpu_target in (t, t.host):
        if cpu_target is None or cpu_target.kind.name != "llvm":
            continue
        cores = cpu_target.attrs.get("num-cores")
        if cores is not None and int(cores) < 1:
            raise ValueError(f"num-cores {int(cores)}: the threads the code will run on, at "
                             "least 1")
        mcpu = str(cpu_target.attrs.get("mcpu", ""))
        triple = str(cpu_target.attrs.get("mtriple", "") or codegen.llvm_get_system_triple())
        if mcpu and not codegen.llvm_is_valid_cpu(mcpu, triple):
            # LLVM would take it for `generic`, with a warning
            raise ValueError(f"LLVM does not know the CPU `{mcpu}` (for {triple}): "
                             + _cpu_hint(mcpu, triple))


def host_cpu(mattr: Sequence[str] = ()) -> dict[str, Any]:
    """{"mcpu": this CPU's name, "mattr": [...]} for an llvm target of this CPU: `mattr` and,
    negated, each feature the name implies that the CPU lacks, as LLVM detects them (CPUID).
    A virtual machine may hide features of the CPU it names: an Emerald Rapids guest without
    AMX, whose code built for `emeraldrapids` alone would be refused here (`cpu.missing`)
    and could hold instructions this CPU would not run."""
    from tvm.target import codegen
    name, present = _host_probe()
    implied = codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": name}))
    off = [f"-{f}" for f in sorted(map(str, implied)) if present.get(f) is False]
    given = [str(a) for a in mattr]
    named = {a.lstrip("+-") for a in given}
    made = {"mcpu": name}
    if given or off:
        made["mattr"] = given + [a for a in off if a[1:] not in named]
    return made


def _host_probe() -> tuple[str, dict[str, bool]]:
    """This CPU's name and {feature: present} as LLVM detects them."""
    name = str(tvm.get_global_func("tvm.codegen.llvm.GetHostCPUName")())
    features = tvm.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()
    return name, {str(k): bool(v) for k, v in features.items()}


def _cpu_hint(mcpu: str, triple: str) -> str:
    """The CPU names LLVM knows that are close to `mcpu`, or a few common ones."""
    import difflib

    from tvm.target import codegen
    generic = tvm.target.Target({"kind": "llvm", "mtriple": triple})
    known = [str(c) for c in codegen.llvm_get_cpu_archlist(generic)]
    close = difflib.get_close_matches(mcpu, known, n=3)
    return (f"did you mean {' or '.join(close)}?" if close else
            "LLVM knows haswell, skylake-avx512, znver3, znver4, x86-64-v3...")


def _fuse_passes(channel_block: int | None = None, winograd: bool = True) -> list:
    """Legalize to TIR and fuse: the first half of TVM's default pipeline for every target,
    after archdsl's CPU layout rewrites (they read the current target; a no-op on GPUs):
    channel-blocked activations (blocks of `channel_block` channels, by default the target's
    vector width), whole vectors of FC outputs, fast activations. The rewrites are part of the
    graph, with or without the default schedules, so that a tuning database keyed by the
    kernels' TIR applies to both."""
    from archdsl.backends.tvm.schedules.blocking import Blocked
    from archdsl.backends.tvm.schedules.fast_math import FastMath
    from archdsl.backends.tvm.schedules.layout import PadChannels
    return [Blocked(channel_block, winograd), PadChannels(), FastMath(),
            relax.transform.DeadCodeElimination(), relax.backend.DispatchSampling(),
            relax.backend.DispatchSortScan(),
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]


def _gpu_fallback_passes(tgt: tvm.target.Target) -> list:
    """dlight's default GPU schedules (as TVM's CUDA pipeline applies them) for every kernel not
    scheduled before; without them a GPU build would put its loops on the host."""
    if tgt.kind.name == "llvm":
        return []
    from tvm.s_tir import dlight as dl
    return [dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                    dl.gpu.GeneralReduction(), dl.gpu.Fallback())]


def _lower_passes(tgt: tvm.target.Target) -> list:
    """The second half of TVM's default pipeline: dataflow lowering, memory planning, VM."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.relax.backend.gpu_generic import pipeline as gpu
    kind = tgt.kind.name
    backend = cpu if kind == "llvm" else cuda if kind == "cuda" else gpu
    return backend.dataflow_lower_passes(tgt) + backend.finalize_passes(tgt)


# Hooks run, in order, on the fused module before the GPU fallback schedules and lowering:
# each takes (mod, target, options) and returns the module with some PrimFuncs scheduled
# (marked "tirx.is_scheduled", TVM 0.27's name); a later hook leaves those alone. Tuning (a
# MetaSchedule database, tune.py) comes first, then archdsl's own default schedules.
ScheduleHook = Callable[[tvm.IRModule, tvm.target.Target, dict[str, Any]], tvm.IRModule]
SCHEDULE_HOOKS: list[ScheduleHook] = [tune.schedule_hook]


def compile(graph: Graph, target: str | Mapping[str, Any] | tvm.target.Target = "llvm",
            weights: Mapping[str, Any] | None = None, batch: int = 1, dtype: str = "float32",
            *, fold_bn: bool = True, strict: bool = True, seed: int = 0,
            **options: Any) -> Compiled:
    """Compile the graph for `target`: lower to Relax, legalize and fuse (FuseOps + FuseTIR),
    schedule the kernels (the `SCHEDULE_HOOKS`, then on GPUs dlight's defaults), let CPU
    kernels write over an operand that dies with them (`inplace.py`: a residual add's), lower
    to the Relax VM and build.

    `weights`: a state_dict (numpy arrays or torch tensors, the PyTorch backend's keys); None
    takes `random_weights(graph, seed)`. `strict` rejects keys the graph does not use.
    `options` go to the schedule hooks: `tune=N` (MetaSchedule trials per kernel, kept in a
    resumable database), `tuning_db` (its folder; alone, it is only applied) and `progress`
    (a callable for `TuneEvent`s) are `tune`'s; `channel_block` sets the channels per block of
    the CPU's blocked activations (default: the vector width; tests run AVX-512's 16 on any
    host); `winograd=False` keeps every conv direct (`schedules/winograd.py`: a 3×3 conv by
    Winograd rounds to about 6e-6 of its output's scale, the direct sum to 3e-7); `chunk`
    sets the images per call of the network's trunk (`chunks.py`; default: one at a time
    where that keeps enough in L2 and the threads take the images evenly, else the whole
    batch; several threads run the chunks at once: `trunk_threads.py`); on several threads,
    each run of kernels that `main` calls in turn is one launch of the thread pool
    (`net_launch.py`), but with `one_launch=False`."""
    try:
        return _compile(graph, target, weights, batch, dtype, fold_bn, strict, seed, options)
    except Exception:
        # a Ctrl-C raised inside one of TVM's callbacks comes out as a RuntimeError
        interrupt.checkpoint()
        raise


def _compile(graph: Graph, target, weights, batch: int, dtype: str, fold_bn: bool,
             strict: bool, seed: int, options: dict[str, Any]) -> Compiled:
    started = time.perf_counter()
    original = dict(options)
    batch = check_build_args(batch, dtype)
    tgt = make_target(target)
    channel_block = options.pop("channel_block", None)
    winograd = bool(options.pop("winograd", True))
    chunk = options.pop("chunk", None)
    one_launch = bool(options.pop("one_launch", True))
    # the weights are made (or converted), then held as Relax constants: two copies at least
    check_fits(graph, batch, np.dtype(dtype).itemsize, "compiling", copies=2)
    # checkpoint(): a Ctrl-C that a library swallowed on the way stops the build here
    interrupt.checkpoint()
    if chunk is None:
        chunk = chunk_images(graph, batch, tgt, np.dtype(dtype).itemsize)
    elif tgt.kind.name != "llvm" and chunk != batch:
        raise ChunkError(f"chunks of {chunk} images: a CPU build's option, not {tgt.kind.name}'s")
    # a CPU build's chunks run on its threads at once where they share them evenly (but
    # one after another where its trunk holds what a driver cannot call: below)
    threads = (Machine.of(tgt).threads if tgt.kind.name == "llvm"
               and options.pop("chunk_threads", True) else None)
    mod = build_module(graph, weights, batch, dtype, fold_bn=fold_bn, strict=strict, seed=seed,
                       chunk=chunk, threads=threads)
    meta = {**_meta_of(mod), "cpu": cpu.needs(tgt)}
    if tgt.kind.name == "cuda":  # the GPU its kernels are compiled for when it is exported
        meta["gpu"] = {"arch": str(tgt.attrs["arch"])}
    mod = _with_meta(mod, meta)
    with tgt:
        mod = tvm.transform.Sequential(_fuse_passes(channel_block, winograd))(mod)
        for hook in SCHEDULE_HOOKS:
            interrupt.checkpoint()
            mod = hook(mod, tgt, options)
        interrupt.checkpoint()
        if tgt.kind.name == "llvm":  # checked on the kernels as scheduled (GPUs: not yet)
            try:
                mod = trunk_threads.make_driver(mod)
            except trunk_threads.TrunkError:  # the batch whole then (or as asked)
                if threads is None:
                    raise
                return _compile(graph, target, weights, batch, dtype, fold_bn, strict, seed,
                                {**original, "chunk_threads": False,
                                 "chunk": original.get("chunk") or batch})
            if one_launch:
                mod = OneLaunch(Machine.of(tgt).threads)(mod)
            mod = WriteOverDeadOperands()(mod)
        mod = tvm.transform.Sequential(_gpu_fallback_passes(tgt) + _lower_passes(tgt))(mod)
    interrupt.checkpoint()
    executable = tvm.compile(mod, target=tgt, relax_pipeline=None)
    interrupt.checkpoint()
    compiled = Compiled(executable.mod, tgt.kind.name, meta)
    if compiled.device_kind != "llvm" and not compiled.device_modules():
        raise RuntimeError(f"the {tgt.kind.name} build holds no device code: its kernels "
                           "would run on the host")
    compiled.compile_seconds = time.perf_counter() - started
    return compiled


DTYPES = ("float32", "float16")


def check_build_args(batch: Any, dtype: Any) -> int:
    """A batch of at least 1 and a dtype the backend builds correctly: anything else is
    refused (int8 built a network whose outputs were all 0; batch=0 was accepted)."""
    if dtype not in DTYPES:
        raise ValueError(f"the TVM backend builds float32 or float16 networks, not {dtype!r}")
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise ValueError(f"batch must be a whole number of at least 1, got {batch!r}")
    return int(batch)


def _meta_of(mod: tvm.IRModule) -> dict[str, Any]:
    body = mod[META_FUNC].body
    return json.loads((body.body if isinstance(body, relax.SeqExpr) else body).value)


def _with_meta(mod: tvm.IRModule, meta: dict[str, Any]) -> tvm.IRModule:
    """The module with `archdsl_meta()` returning `meta` (the build adds what the graph does
    not know: the CPU features its code needs, which `Compiled` checks before running)."""
    func = mod[META_FUNC]
    mod = mod.clone()
    body = relax.SeqExpr([], tvm.ir.StringImm(json.dumps(meta)))
    mod[META_FUNC] = relax.Function(func.params, body, func.body.ty, func.is_pure, func.attrs)
    return mod


# archdsl's default CPU schedules (schedules/): after any tuning hook, which
# must come first in the list; compile(..., schedules=False) turns them off.
from archdsl.backends.tvm.schedules import schedule_cpu  # noqa: E402

SCHEDULE_HOOKS.append(schedule_cpu)

"""A trunk's chunks across the threads (`trunk_threads.py`): a build for two threads in chunks
runs its trunk from one parallel loop over the chunks, each thread calling the trunk's kernels
(compiled for one thread) on its own chunks with buffers of its own; the output is the whole
batch's, in process and from an exported library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

import tvm_ffi  # noqa: E402
from tvm import relax, tirx  # noqa: E402

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.backends.tvm import build, cpu, trunk_threads  # noqa: E402
from archdsl.backends.tvm.build import make_target  # noqa: E402
from archdsl.backends.tvm.lower import TRUNK_FUNC, driven  # noqa: E402
from archdsl.backends.tvm.schedules import schedule_cpu  # noqa: E402
from tests.backends.test_tvm import EVERY_OP, _assert_close, _run_torch, _torch_reference  # noqa: E402
from tests.backends.test_tvm_schedules import _loops  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"
TWO = {"kind": "llvm", "mcpu": "haswell", "num-cores": 2}


def _parallel(func: tirx.PrimFunc) -> list[tirx.For]:
    return [f for f in _loops(func.body) if f.kind == tirx.ForKind.PARALLEL]


def _driven_module(graph, batch: int, chunk: int, target=TWO) -> tvm.IRModule:
    """The module as `build.compile` has it when the driver is made: fused, scheduled."""
    tgt = make_target(target)
    mod = backend.build_module(graph, batch=batch, chunk=chunk, threads=2)
    with tgt:
        mod = tvm.transform.Sequential(build._fuse_passes())(mod)
        mod = schedule_cpu(mod, tgt, {})
    return mod


def test_every_op_in_chunks_on_two_threads_agrees_with_pytorch(tmp_path):
    """EVERY_OP's trunk (up to its flatten) an image at a time on two threads at batch 4, AVX2
    and AVX-512 code: the output is PyTorch's, in process and from the exported library; the
    manifest says the chunks run on two threads."""
    arch = archdsl.load(EVERY_OP)
    model, state = _torch_reference(arch)
    x = np.random.default_rng(1).standard_normal((4, *arch.graph.input_shape)).astype(np.float32)
    ref = _run_torch(model, x)
    for compiled in agree_on_both_widths(arch.graph, state, x, ref, tmp_path, chunk=1):
        assert compiled.meta["chunk"] == 1 and compiled.meta["chunk_threads"] == 2


def agree_on_both_widths(graph, state, x, ref, tmp_path, **options) -> list:
    """The graph built for two threads as AVX2 and as AVX-512 code (`options` to `compile`):
    `ref`'s output on `x`, in process and from the exported library, where the host runs the
    code. The builds."""
    builds = []
    for mcpu in ("haswell", "znver4"):
        compiled = backend.compile(graph, {**TWO, "mcpu": mcpu}, weights=state,
                                   batch=len(x), **options)
        builds.append(compiled)
        if cpu.missing(compiled.meta["cpu"]):  # AVX-512 code on an AVX2 host
            continue
        _assert_close(compiled(x), ref)
        lib = tmp_path / f"{mcpu}-{len(x)}.so"
        compiled.export_library(lib)
        _assert_close(backend.Compiled.load(lib)(x), ref)
    return builds


def test_the_driver_runs_the_trunk_from_one_parallel_loop():
    """`make_driver`: main calls the driver once, in the trunk's place (no trunk function, no
    placeholder left); the driver's one parallel loop has a turn per thread, and every kernel
    it calls runs on the calling thread alone (no parallel loop of its own)."""
    graph = archdsl.load(SPECS / "mobilenet_v1.arch", resolution=32, alpha=0.25).graph
    mod = trunk_threads.make_driver(_driven_module(graph, batch=6, chunk=1))
    names = {gv.name_hint for gv in mod.get_global_vars()}
    assert trunk_threads.DRIVER in names
    assert TRUNK_FUNC not in names and trunk_threads.PLACEHOLDER not in names
    driver = mod[trunk_threads.DRIVER]
    loops = _parallel(driver)
    assert len(loops) == 1 and int(loops[0].extent) == 2
    called = {c.args[0].value for c in _calls(driver)}
    assert len(called) > 10
    for name in called:
        assert not _parallel(mod[name]), name
    calls = []
    relax.analysis.post_order_visit(mod["main"], lambda e: calls.append(e) if isinstance(
        e, relax.Call) and len(e.args) and isinstance(e.args[0], tvm.ir.GlobalVar)
        and e.args[0].name_hint == trunk_threads.DRIVER else None)
    assert len(calls) == 1


def _calls(func: tirx.PrimFunc) -> list:
    found = []
    cpacked = tvm.ir.Op.get("tirx.tvm_call_cpacked")
    tvm_ffi.structural_map(func.body, [(tvm.ir.expr.Call, lambda c: (
        found.append(c) if c.op.same_as(cpacked) else None) or c)])
    return found


def test_intermediates_share_buffers_only_when_not_live_together():
    """`_slots` on a real trunk: a kernel's outputs never take a buffer that one of its own
    arguments, or any tensor still to be read, holds; fewer buffers than intermediates."""
    graph = archdsl.load(SPECS / "mobilenet_v2.arch", resolution=32).graph
    mod = _driven_module(graph, batch=4, chunk=1)
    steps, _, temps = trunk_threads._steps(mod[TRUNK_FUNC])
    slot_of, slots = trunk_threads._slots(steps, temps)
    live = {}  # temp → (first step, last step)
    for n, (_, args, outs) in enumerate(steps):
        for key in args + outs:
            if key[0] == "tmp" and key[1] < len(temps) - 1:
                live[key[1]] = (live.get(key[1], (n, n))[0], n)
    for a, (a0, a1) in live.items():
        for b, (b0, b1) in live.items():
            if a < b and a0 <= b1 and b0 <= a1:
                assert slot_of[a] != slot_of[b], (a, b)
    for i, (shape, dtype) in enumerate(temps[:-1]):
        assert slots[slot_of[i]][0] >= np.prod(shape) and slots[slot_of[i]][1] == dtype
    assert len(slots) < len(temps) // 2


def test_chunks_run_on_the_threads_when_they_share_them_evenly():
    """Four chunks on two threads (or four of two images on two), not three; not on one."""
    mobilenet = archdsl.load(SPECS / "mobilenet_v1.arch", resolution=32, alpha=0.25).graph
    assert driven(mobilenet, 4, 1, 2) and driven(mobilenet, 8, 2, 2)
    assert not driven(mobilenet, 3, 1, 2) and not driven(mobilenet, 4, 1, 1)
    mod = backend.build_module(mobilenet, batch=3, chunk=1, threads=2)
    assert trunk_threads.PLACEHOLDER not in {gv.name_hint for gv in mod.get_global_vars()}


def test_chunks_off_the_kernels_alignment_are_copied():
    """An input of three 5×5 planes (300 bytes an image) and a trunk's output of 12 floats
    (48 bytes) start off the 64 bytes the kernels assume: the driver copies them into (and
    out of) buffers of the thread's, and computes what the batch whole does."""
    graph = archdsl.load("arch odd\ninput 3x5x5\nc: conv3-16\ndw: dwconv3\n"
                         "p: conv1-12\ng: gap\nf: FC-4\n").graph
    x = np.random.default_rng(2).standard_normal((4, 3, 5, 5)).astype(np.float32)
    whole = backend.compile(graph, TWO, batch=4, chunk=4)
    chunked = backend.compile(graph, TWO, batch=4, chunk=1)
    assert chunked.meta["chunk_threads"] == 2
    _assert_close(chunked(x), whole(x), rel=1e-5)


def test_a_trunk_the_driver_cannot_call_is_built_whole(monkeypatch):
    """A binding `make_driver` does not know is a TrunkError, and `compile` then builds the
    batch whole (the chunks one after another would launch every kernel again per chunk)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4), "float32"))
    with bb.function(TRUNK_FUNC, [x], attrs={trunk_threads.THREADS_ATTR: 2}):
        with bb.dataflow():
            out = bb.emit_output(relax.op.negative(x))  # an op, not a kernel's call
        bb.emit_func_output(out)
    with pytest.raises(trunk_threads.TrunkError, match="binds"):
        trunk_threads._steps(bb.get()[TRUNK_FUNC])

    real = trunk_threads.make_driver

    def refuse(mod):
        if trunk_threads._trunk(mod) is not None:
            raise trunk_threads.TrunkError("refused")
        return real(mod)

    monkeypatch.setattr(trunk_threads, "make_driver", refuse)
    graph = archdsl.load(SPECS / "mobilenet_v1.arch", resolution=32, alpha=0.25).graph
    compiled = backend.compile(graph, TWO, batch=4, chunk=None)
    assert "chunk" not in compiled.meta and "chunk_threads" not in compiled.meta
    assert compiled(np.zeros((4, 3, 32, 32), np.float32)).shape == (4, 1000)

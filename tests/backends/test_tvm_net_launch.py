"""The network's kernels in one launch of the thread pool (`net_launch.py`): a run of kernels
that main calls in turn becomes one PrimFunc that launches the pool once, each kernel's
parallel loops cut out as stages that every thread calls on its share, a barrier after each;
the output is what the kernels one launch each compute, on any number of runtime threads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax, s_tir, te, tirx  # noqa: E402

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.backends.tvm import build, net_launch  # noqa: E402
from archdsl.backends.tvm.build import make_target  # noqa: E402
from archdsl.backends.tvm.schedules import schedule_cpu  # noqa: E402
from archdsl.backends.tvm.schedules.launch import BARRIER, LAUNCH, one_launch  # noqa: E402
from archdsl.backends.tvm.trunk_threads import call_tirs  # noqa: E402
from tests.backends.test_tvm import EVERY_OP, _run_torch, _torch_reference  # noqa: E402
from tests.backends.test_tvm_launch import _two_stages  # noqa: E402
from tests.backends.test_tvm_schedules import _loops  # noqa: E402
from tests.backends.test_tvm_trunk_threads import agree_on_both_widths  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TWO = {"kind": "llvm", "mcpu": "haswell", "num-cores": 2}


def _scheduled(graph, batch: int, target=TWO) -> tvm.IRModule:
    """The module as `build.compile` has it before `OneLaunch`: fused, scheduled."""
    tgt = make_target(target)
    mod = backend.build_module(graph, batch=batch)
    with tgt:
        mod = tvm.transform.Sequential(build._fuse_passes())(mod)
        return schedule_cpu(mod, tgt, {})


def _launches(mod: tvm.IRModule) -> dict[str, tirx.PrimFunc]:
    return {gv.name_hint: f for gv, f in mod.functions_items()
            if gv.name_hint.startswith(net_launch.NET)}


def test_every_op_in_one_launch_agrees_with_pytorch(tmp_path):
    """EVERY_OP (convs, pools, dense, concat, residual, squeeze-excitation...) built for two
    threads at batch 1 and 3, AVX2 and AVX-512 code: PyTorch's output, in process and from
    the exported library."""
    arch = archdsl.load(EVERY_OP)
    model, state = _torch_reference(arch)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal(
            (batch, *arch.graph.input_shape)).astype(np.float32)
        agree_on_both_widths(arch.graph, state, x, _run_torch(model, x), tmp_path, chunk=batch)


def test_a_network_runs_in_few_launches():
    """MobileNet v1 at batch 1 on two threads: main's 31 kernels become runs (main then makes
    under a third as many calls), each run one launch of the pool whose parallel loops are
    two iterations (one a thread), each calling a stage, all but the run's last ending in a
    barrier; no stage has a parallel loop of its own (it would launch the pool from inside
    it); a kernel a run took stays in the module only when the run calls it whole."""
    arch = archdsl.load(ROOT / "specs" / "mobilenet_v1.arch")
    before = _scheduled(arch.graph, batch=1)
    after = net_launch.OneLaunch(2)(before)
    calls = [c.args[0].name_hint for c in call_tirs(after["main"])]
    kernels = len(call_tirs(before["main"]))
    runs = _launches(after)
    assert runs and len(calls) * 10 < kernels * 3, calls  # 31 kernels → a few calls
    for name, func in runs.items():
        loops = _loops(func.body)
        assert sum(LAUNCH in f.annotations for f in loops) == 1, name
        parallel = [f for f in loops if f.kind == tirx.ForKind.PARALLEL]
        assert parallel and all(int(f.extent) == 2 for f in parallel), name
        assert sum(BARRIER not in f.annotations for f in parallel) == 1, name
        # each run reads at most `_MAX_INPUTS` tensors (its function's size is bounded)
        assert len(func.params) <= net_launch._MAX_INPUTS + 1, (name, len(func.params))
        # in a root block, as Relax's passes take a call_tir's function to be (VGG-16 at batch
        # 32 failed to build: RewriteDataflowReshape's check of a run of pools and a reshape)
        assert not relax.analysis.has_reshape_pattern(func), name
    stages = [f for gv, f in after.functions_items() if "_stage" in gv.name_hint]
    assert stages and not any(f.kind == tirx.ForKind.PARALLEL
                               for s in stages for f in _loops(s.body))
    # the kernels main no longer calls: gone, but those without parallel loops, which a run
    # calls whole
    taken = {c.args[0].name_hint for c in call_tirs(before["main"])} - set(calls)
    kept = taken & {gv.name_hint for gv in after.get_global_vars()}
    assert len(kept) < len(taken)
    for name in kept:
        assert net_launch.cut_points(after[name]) is None, name
        assert any(f'"{name}"' in run.script() for run in runs.values()), name


def test_one_thread_builds_are_left_alone():
    arch = archdsl.load(ROOT / "specs" / "mobilenet_v1.arch")
    mod = _scheduled(arch.graph, batch=1, target={**TWO, "num-cores": 1})
    assert net_launch.OneLaunch(1)(mod).same_as(mod)


def test_cut_points():
    """What a kernel runs in a launch: its loop nest when every statement outside its parallel
    loops is a serial loop around them; None (run whole, by one thread) without a parallel
    loop of more than one iteration; False otherwise (every thread would run that work)."""
    two = _two_stages(batch=3)
    assert isinstance(net_launch.cut_points(two), tirx.For)  # the batch loop around both
    assert isinstance(net_launch.cut_points(one_launch(two)), tirx.For)
    assert net_launch.cut_points(_two_stages(parallel_second=False)) is False
    a = te.placeholder((64, 16), name="A")
    serial = te.create_prim_func([a, te.compute((64, 16), lambda i, j: a[i, j] * 2)])
    assert net_launch.cut_points(serial) is None
    b = te.placeholder((1, 16), name="B")  # a parallel loop of one iteration: serial
    sch = s_tir.Schedule(te.create_prim_func([b, te.compute((1, 16), lambda i, j: b[i, j])]))
    sch.parallel(sch.get_loops(sch.get_sblock("compute"))[0])
    assert net_launch.cut_points(sch.mod["main"]) is None


def _own_tile(n: int = 64):
    """C = A * 2 through a tile of one row, written in the row's parallel iteration."""
    a = te.placeholder((1, n, 16), name="A")
    c = te.compute((1, n, 16), lambda k, i, j: a[k, i, j] * 2.0, name="C")
    sch = s_tir.Schedule(te.create_prim_func([a, c]))
    block = sch.get_sblock("C")
    tile = sch.cache_write(block, 0, "global")
    _, rows, _ = sch.get_loops(block)
    sch.reverse_compute_at(tile, rows)
    sch.parallel(rows)
    return sch.mod["main"]


def _chain(n: int = 64) -> tvm.IRModule:
    """main(x) = tile(two_stages(x)): a kernel whose two parallel loops share a buffer, then
    one whose buffer only its loop uses."""
    bb = relax.BlockBuilder()
    first = bb.add_func(one_launch(_two_stages(n=n)), "two_stages")
    second = bb.add_func(_own_tile(n), "own_tile")
    x = relax.Var("x", relax.TensorType((1, n, 16), "float32"))
    ty = relax.TensorType((1, n, 16), "float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.call_tir(first, [x], ty))
            z = bb.emit_output(relax.call_tir(second, [y], ty))
        bb.emit_func_output(z)
    return bb.get()


def test_a_buffer_two_stages_share_is_the_launchs_one_only_a_stage_uses_its_own():
    after = net_launch.OneLaunch(2)(_chain())
    (run,) = _launches(after).values()
    stages = {gv.name_hint: f for gv, f in after.functions_items() if "_stage" in gv.name_hint}
    assert set(stages) == {"two_stages_stage0", "two_stages_stage1", "own_tile_stage0"}
    # the two stages of two_stages read and write B: a buffer of the launch's, passed in
    for name in ("two_stages_stage0", "two_stages_stage1"):
        assert not stages[name].body.block.alloc_buffers
    # own_tile's tile: its stage's, where TVM places it (in the row's iteration)
    assert [b.name for b in stages["own_tile_stage0"].body.block.alloc_buffers] == ["C_global"]
    assert run.script().count("T.call_cpacked") == 3


def _fill(n: int = 64):
    """F = 1: a kernel whose only parameter is its output."""
    f = te.compute((1, n, 16), lambda k, i, j: tirx.const(1.0, "float32"), name="F")
    sch = s_tir.Schedule(te.create_prim_func([f]))
    sch.parallel(sch.get_loops(sch.get_sblock("F"))[1])
    return sch.mod["main"]


def test_a_kernel_without_inputs_joins_a_run():
    """A kernel that takes no tensor but its output (a fill) is a stage like any other: its
    stage function had been given a body of one statement in a sequence, which TVM refuses
    (a ViT's padded keys' zeros as a kernel failed to build)."""
    n = 64
    bb = relax.BlockBuilder()
    first = bb.add_func(one_launch(_two_stages(n=n)), "two_stages")
    fill = bb.add_func(_fill(n), "fill")
    ty = relax.TensorType((1, n, 16), "float32")
    x = relax.Var("x", ty)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.call_tir(first, [x], ty))
            f = bb.emit(relax.call_tir(fill, [], ty))
            out = bb.emit_output(relax.Tuple([y, f]))
        bb.emit_func_output(out)
    after = net_launch.OneLaunch(2)(bb.get())
    (run,) = _launches(after).values()
    assert run.script().count("T.call_cpacked") == 3
    tgt = build.make_target(TWO)
    with tgt:
        mod = tvm.transform.Sequential(build._lower_passes(tgt))(after)
    vm = tvm.runtime.vm.VirtualMachine(tvm.compile(mod, target=tgt, relax_pipeline=None),
                                       tvm.cpu())
    xs = np.random.default_rng(0).standard_normal((1, n, 16)).astype("float32")
    got_y, got_f = vm["main"](tvm.runtime.tensor(xs))
    assert np.array_equal(got_f.numpy(), np.ones((1, n, 16), np.float32))
    assert np.array_equal(got_y.numpy(), (xs[:, ::-1] + 1) * 2)


# The pool takes its size once, from the environment, when it starts: a run built for two
# threads computes the same on one thread (it takes both shares in turn) and on four (two
# wait at each barrier); a missing barrier or a buffer made per thread gives wrong rows.
_THREADED = textwrap.dedent("""
    import numpy as np, tvm, archdsl
    from archdsl.backends import tvm as backend
    from archdsl.backends.tvm import build
    from archdsl.backends.tvm.net_launch import OneLaunch
    from tests.backends.test_tvm_net_launch import _chain, TWO
    tgt = build.make_target(TWO)
    with tgt:
        mod = tvm.transform.Sequential(build._lower_passes(tgt))(OneLaunch(2)(_chain(4096)))
    lib = tvm.compile(mod, target=tgt, relax_pipeline=None)
    vm = tvm.runtime.vm.VirtualMachine(lib, tvm.cpu())
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((1, 4096, 16)).astype("float32")
        got = vm["main"](tvm.runtime.tensor(x)).numpy()
        assert np.array_equal(got, (x[:, ::-1] + 1) * 4), "a stage read rows unwritten"
    arch = archdsl.load("specs/mobilenet_v2.arch")
    for batch in (1, 2):
        x = rng.standard_normal((batch, *arch.graph.input_shape)).astype("float32")
        fast = backend.compile(arch.graph, TWO, batch=batch, chunk=batch)
        kernels = backend.compile(arch.graph, TWO, batch=batch, chunk=batch, one_launch=False)
        assert np.array_equal(fast(x), kernels(x)), batch
    print("ok")
""")


@pytest.mark.parametrize("threads", [1, 4])
def test_a_launch_built_for_two_threads_computes_the_same_on_other_counts(threads):
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "TVM_THREAD_POOL_SPIN_COUNT": "0",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _THREADED], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=900)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_an_output_takes_the_slot_of_the_argument_it_overwrites():
    """`_slots` with `over`: a residual add's output goes where its dying shortcut is (as
    `inplace.py` has the VM do), and nothing else shares a slot with a tensor still read."""
    from archdsl.backends.tvm.trunk_threads import _slots
    temps = [((1, 64), "float32")] * 3
    steps = [("a", [("in",)], [("tmp", 0)]),                # t0 = a(x)
             ("b", [("tmp", 0)], [("tmp", 1)]),             # t1 = b(t0)
             ("c", [("tmp", 1), ("tmp", 0)], [("tmp", 2)])]  # t2 = t1 + t0, t0's last read
    apart, _ = _slots(steps, temps, range(3))
    assert apart[2] not in (apart[0], apart[1]) and apart[0] != apart[1]
    over, slots = _slots(steps, temps, range(3), {2: 0})
    assert over[2] == over[0] != over[1] and len(slots) == 2


def test_work_counts_the_stores_a_kernel_runs():
    """`_work`: a matmul's m·n·k multiply-adds and m·n inits, however it is scheduled."""
    m, n, k = 8, 12, 5
    a = te.placeholder((m, k), name="A")
    b = te.placeholder((k, n), name="B")
    r = te.reduce_axis((0, k), "r")
    matmul = te.create_prim_func(
        [a, b, te.compute((m, n), lambda i, j: te.sum(a[i, r] * b[r, j], axis=r))])
    assert net_launch._work(matmul.body) == m * n * k + m * n
    sch = s_tir.Schedule(matmul)
    block = sch.get_sblock("compute")
    i, j, _ = sch.get_loops(block)
    sch.parallel(i)
    sch.vectorize(sch.split(j, [None, 4])[1])
    sch.decompose_reduction(block, sch.get_loops(block)[-1])
    assert net_launch._work(sch.mod["main"].body) == m * n * k + m * n


def test_a_long_kernel_keeps_its_own_launch(monkeypatch):
    """A kernel of more than `_MAX_WORK` stores ends a run (its launch's cost is small beside
    it, and its threads would wait at barriers spinning): `_chain`'s two kernels, each of
    2·64·16 stores, share a launch only while that is not over the bound."""
    mod = _chain()
    assert {net_launch._work(mod[name].body) for name in ("two_stages", "own_tile")} == {2048}
    monkeypatch.setattr(net_launch, "_MAX_WORK", 2048)
    assert len(_launches(net_launch.OneLaunch(2)(mod))) == 1
    monkeypatch.setattr(net_launch, "_MAX_WORK", 2047)
    after = net_launch.OneLaunch(2)(mod)
    assert not _launches(after)
    assert [c.args[0].name_hint for c in call_tirs(after["main"])] == ["two_stages", "own_tile"]

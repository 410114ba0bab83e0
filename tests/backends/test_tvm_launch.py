"""One launch of the thread pool per CPU kernel (`schedules/launch.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

tvm = pytest.importorskip("tvm")

from tvm import s_tir, te  # noqa: E402

from archdsl.backends.tvm.schedules.launch import BARRIER, LAUNCH, launches, one_launch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _two_stages(n: int = 64, batch: int = 1, parallel_second: bool = True):
    """B = A + 1, then C reads B's rows reversed (a row another thread wrote), per image of a
    serial batch loop; both stages parallel over rows."""
    a = te.placeholder((batch, n, 16), name="A")
    b = te.compute((batch, n, 16), lambda k, i, j: a[k, i, j] + 1.0, name="B")
    c = te.compute((batch, n, 16), lambda k, i, j: b[k, n - 1 - i, j] * 2.0, name="C")
    sch = s_tir.Schedule(te.create_prim_func([a, c]))
    image, rows, _ = sch.get_loops(sch.get_sblock("C"))
    sch.compute_at(sch.get_sblock("B"), image)
    sch.parallel(sch.get_loops(sch.get_sblock("B"))[1])
    if parallel_second:
        sch.parallel(rows)
    return sch.mod["main"]


def test_stages_share_one_launch_with_a_barrier_between():
    func = _two_stages()
    assert launches(func.body.block.body) == 2
    text = one_launch(func).script()
    assert text.count(LAUNCH) == 1
    assert text.count(BARRIER) == 1  # after the first stage, not after the last


def test_a_batch_loop_runs_its_stages_again_so_each_ends_in_a_barrier():
    func = _two_stages(batch=3)
    assert launches(func.body.block.body) == 6  # 3 images × 2 stages
    text = one_launch(func).script()
    assert text.count(LAUNCH) == 1 and text.count(BARRIER) == 2


def test_work_outside_the_parallel_loops_keeps_its_launches():
    # the second stage serial: every thread of one launch would run all of it
    serial = _two_stages(parallel_second=False)
    assert launches(serial.body.block.body) is None
    assert one_launch(serial).same_as(serial)
    # a parallel loop of one iteration is dropped by lowering: the same
    one_image = _two_stages(n=1)
    assert launches(one_image.body.block.body) is None
    assert one_launch(one_image).same_as(one_image)
    # one launch already
    a = te.placeholder((64, 16), name="A")
    sch = s_tir.Schedule(te.create_prim_func([a, te.compute((64, 16), lambda i, j: a[i, j] * 2)]))
    sch.parallel(sch.get_loops(sch.get_sblock("compute"))[0])
    assert one_launch(sch.mod["main"]).same_as(sch.mod["main"])


# Run with four threads (the pool takes its size once, from the environment, when it starts):
# a barrier missing or a buffer made per thread gives wrong rows, a stage run by every thread
# adds a residual twice. The network: ResNet's shapes in small, a 1×1 conv of 200 channels
# (not whole register tiles of blocks), residual adds written over their shortcut.
_THREADED = textwrap.dedent("""
    import numpy as np, tvm, archdsl
    from tvm import tirx
    from archdsl.backends import tvm as backend
    from tests.backends.test_tvm_launch import _two_stages
    from archdsl.backends.tvm.schedules.launch import one_launch
    lib = tvm.compile(tvm.IRModule({"main": one_launch(_two_stages(n=4096, batch=2))}),
                      target="llvm")
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((2, 4096, 16)).astype("float32")
        c = tvm.runtime.tensor(np.zeros_like(x))
        lib["main"](tvm.runtime.tensor(x), c)
        assert np.array_equal(c.numpy(), (x[:, ::-1] + 1) * 2), "a stage read rows unwritten"
    arch = archdsl.load('''
    arch threads
    input 3x28x28
    defaults norm=bn act=relu
    stem: conv3-32/2
    r1: residual { conv3-32; conv3-32 act=none }
    relu
    r2: residual { conv1-200; conv3-64/2 act=none } shortcut(down) { conv1-64/2 act=none }
    relu
    gap
    fc: FC-10 act=none
    ''')
    for batch in (1, 3):
        x = rng.standard_normal((batch, *arch.graph.input_shape)).astype("float32")
        fast = backend.compile(arch.graph, batch=batch)
        naive = backend.compile(arch.graph, batch=batch, schedules=False)(x)
        for _ in range(3):
            got = fast(x)
            assert np.abs(got - naive).max() <= 1e-4 * np.abs(naive).max(), batch
    print("ok")
""")


def test_kernels_in_one_launch_compute_the_same_on_four_threads():
    env = {**os.environ, "TVM_NUM_THREADS": "4", "TVM_THREAD_POOL_SPIN_COUNT": "0",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _THREADED], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_networks_kernels_with_stages_make_one_launch():
    """ResNet-18's convs of more than one parallel loop (padding, then rows) are one launch
    each, at batch 1 and 2."""
    import archdsl
    from archdsl.backends import tvm as backend
    from archdsl.backends.tvm import build
    arch = archdsl.load(ROOT / "specs" / "resnet18.arch")
    seen = []
    build.SCHEDULE_HOOKS.append(lambda mod, target, options: seen.append(mod) or mod)
    try:
        for batch in (1, 2):
            backend.compile(arch.graph, target="llvm", batch=batch)
    finally:
        build.SCHEDULE_HOOKS.pop()
    for batch, mod in zip((1, 2), seen, strict=True):
        staged = [f.script() for gv, f in mod.functions_items()
                  if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint
                  and f.script().count("T.parallel(") > 1]
        assert len(staged) >= 5 and all(s.count(LAUNCH) == 1 for s in staged), batch

"""Winograd F(4×4, 3×3) convolutions (backends/tvm/schedules/winograd.py): the algebra, which
convs take it, and builds that compute what PyTorch does on both vector widths."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.backends.tvm import schedules  # noqa: E402
from archdsl.backends.tvm.schedules import winograd  # noqa: E402
from tests.backends.test_tvm_schedules import (  # noqa: E402
    CPUS,
    _assert_close,
    _host_runs,
    _scheduled,
    _torch_run,
)

# 3×3 convs of 20 and 36 channels (partial blocks), on planes that are no multiple of the
# 4×4 tile (30×30: 8×8 tiles, the last row and column half outside; 28×28 valid; 14×14: 16
# tiles), with padding 1 and 0, a residual add and activations fused after them; strided 3×3
# convs and one on 7×7 (4 tiles) stay direct
SPEC = r"""
arch wino
input 8x30x30
c0: conv1-20
res: residual {
  c1: conv3-36
  c2: conv3-20 act=none
}
relu: relu
c3: conv3-24 pad=0 act=swish
c4: conv3-24/2
c5: conv3-16
c6: conv3-16/2
c7: conv3-16
"""


def test_the_transforms_compute_a_correlation():
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
    got = winograd.AT @ ((winograd.G @ g @ winograd.G.T) * (winograd.BT @ d @ winograd.BT.T)) \
        @ winograd.AT.T
    want = np.array([[np.sum(d[y:y + 3, x:x + 3] * g) for x in range(4)] for y in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_which_convs_take_it():
    use = winograd.use
    assert use((3, 3), (1, 1), (1, 1), 1, True, (28, 28))  # 49 tiles
    assert use((3, 3), (1, 1), (1, 1), 1, True, (14, 14))  # 16 tiles
    assert not use((3, 3), (1, 1), (1, 1), 1, True, (7, 7))  # 4: the weights' reads lead
    assert not use((3, 3), (2, 2), (1, 1), 1, True, (56, 56))
    assert not use((3, 3), (1, 1), (2, 2), 1, True, (56, 56))
    assert not use((3, 3), (1, 1), (1, 1), 2, True, (56, 56))
    assert not use((3, 3), (1, 1), (1, 1), 1, False, (56, 56))  # an RGB stem
    assert not use((5, 5), (1, 1), (1, 1), 1, True, (56, 56))


def test_packed_weights_are_the_transform_of_each_channel_pair():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((20, 36, 3, 3)).astype(np.float32)
    u = winograd.pack(w, 16)
    assert u.shape == (6, 6, 2, 3, 16, 16) and u.dtype == np.float32
    o, i = 17, 33  # block 1 lane 1 of the outputs, block 2 lane 1 of the inputs
    np.testing.assert_allclose(u[:, :, 1, 2, 1, 1], winograd.G @ w[o, i] @ winograd.G.T,
                               rtol=1e-6)
    assert not u[:, :, 1, :, :, 4:].any()  # outputs 20.. are padding
    assert not u[:, :, :, 2, 4:, :].any()  # inputs 36.. are padding


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_convs_by_winograd_are_marked_and_compute_what_pytorch_does(cpu):
    arch = archdsl.load(SPEC)
    marks = [schedules.scheduled_by(f) for gv, f in _scheduled(arch, cpu).functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint]
    # c1, c2 (with the residual), c3 (valid) and c5: 64, 64, 49 and 16 tiles; c0 (1×1), c4
    # and c6 (strided), c7 (7×7) direct
    assert marks.count("conv2d_winograd") == 4 and marks.count("conv2d_blocked") == 4
    if not _host_runs(CPUS[cpu]):
        pytest.skip(f"this host cannot run {cpu} code")
    ref, state, x = _torch_run(arch, 2)
    _assert_close(backend.compile(arch.graph, target=CPUS[cpu], weights=state, batch=2)(x), ref)


def test_this_hosts_build_by_winograd_computes_what_pytorch_does():
    """This CPU's build (its own width, its threads) at batches of 1 and 3."""
    arch = archdsl.load(SPEC)
    for batch in (1, 3):
        ref, state, x = _torch_run(arch, batch)
        compiled = backend.compile(arch.graph, weights=state, batch=batch)
        _assert_close(compiled(x), ref)


def test_winograd_false_keeps_every_conv_direct():
    marks = [schedules.scheduled_by(f) for gv, f in
             _scheduled(archdsl.load(SPEC), "avx512", winograd=False).functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint]
    assert marks.count("conv2d_blocked") == 8 and "conv2d_winograd" not in marks


def test_compile_no_winograd_builds_direct_convs_and_says_so(tmp_path):
    """`archdsl compile --no-winograd`: the manifest records it; both libraries compute the
    same to within Winograd's rounding."""
    import json

    from typer.testing import CliRunner

    from archdsl.cli import app
    spec = tmp_path / "wino.arch"
    spec.write_text(SPEC)
    outputs = {}
    for flag in ("--winograd", "--no-winograd"):
        lib = tmp_path / f"{flag.strip('-')}.so"
        result = CliRunner().invoke(app, ["compile", str(spec), "-o", str(lib), flag])
        assert result.exit_code == 0, result.output
        manifest = json.loads(lib.with_name(lib.name + ".json").read_text())
        assert manifest["winograd"] is (flag == "--winograd")
        x = np.random.default_rng(0).standard_normal((1, 8, 30, 30), np.float32)
        outputs[flag] = backend.Compiled.load(lib)(x)
    _assert_close(outputs["--winograd"], outputs["--no-winograd"])


def test_winograd_stages_are_race_free_on_several_threads():
    """Each image's three stages share their tiles' buffers between the threads, a barrier
    between stages: built for several threads (a fresh process: TVM sizes its pool once),
    the result is what the unscheduled loops give."""
    import os
    import subprocess
    import sys
    script = f"""
import numpy as np
import archdsl
from archdsl.backends import tvm as backend
arch = archdsl.load({SPEC!r})
for batch in (1, 3):
    x = np.random.default_rng(0).standard_normal((batch, *arch.graph.input_shape), np.float32)
    fast = backend.compile(arch.graph, batch=batch)(x)
    naive = backend.compile(arch.graph, batch=batch, schedules=False)(x)
    assert np.abs(fast - naive).max() <= 1e-4 * np.abs(naive).max(), np.abs(fast - naive).max()
import tvm
print(tvm.runtime.num_threads())
"""
    threads = min(4, os.cpu_count() or 1)
    env = {**os.environ, "TVM_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.strip() == str(threads), done.stderr[-2000:]

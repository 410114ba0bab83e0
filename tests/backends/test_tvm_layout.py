"""Channel-blocked activations on CPUs (backends/tvm/schedules/blocking.py): NCHW[b]c from
convolution to convolution, converted once at the ends, correct for channel counts that do not
fill blocks. The block is the target's vector width; `channel_block=16` runs AVX-512's layout
(the scheduling of its 16-channel blocks, on AVX2's vectors) on any host."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from test_tvm_schedules import (  # noqa: E402
    ACTIVATIONS,
    CPUS,
    ODD_CONVS,
    _assert_close,
    _host_runs,
    _marks,
    _scheduled,
    _torch_run,
)

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.backends.tvm import schedules  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"

# Concatenations whose parts fill whole blocks of 8 (a concat of blocks at 8) or do not (12: a
# gather), a residual add, grouped convs whose groups are whole blocks (16 channels: at 8 and
# 16; 8: at 8, merged in pairs at 16), max and average pools and a global mean on blocked
# tensors, a conv after the NCHW island (its input blocked again), and a conv ending the network.
MIXED = r"""
arch mixed
input 3x17x17
defaults norm=bn act=relu
stem: conv3-16/2
cat: concat { conv1-8 | conv3-8 | maxpool3/1 pad=1 }
odd: concat { conv1-12 | conv3-20 }
res: residual { conv3-32; conv3-32 act=none }
relu
g2: conv3-32 groups=2
g4: conv3-32/2 groups=4
p1: avgpool2/1
lrn: LRN
c9: conv1-24
gm: gmp
tail: conv1-10 act=none
"""

# Channel routing at offsets that are not whole blocks of 8 or 16: a split into 24 and 40, a
# shuffle of 64 in 4 groups, slices at 5..30 and a chunk's last third, their concat of 12 + 7
# channels, a shuffle of 21 in 3 groups (every block padded).
ROUTING = r"""
arch routing
input 3x9x9
defaults norm=bn act=relu
stem: conv3-64
s: split(24, 40) { conv1-24 | dwconv3 act=none }
sh: channel_shuffle(4)
odd: concat { slice(5, 30); conv1-12 | chunk(3, 2); conv3-7 }
c21: conv1-21
sh3: channel_shuffle(3)
tail: conv1-10 act=none
"""

# Groups narrower than a block: RegNetY-400MF's 104 channels in 13 groups of 8 (one group short
# of merging in pairs at 16 lanes: a zero group in the padding), ResNeXt's groups of 4, groups
# of 2 in and 4 out (merged by 4 at 8 lanes; at 16 it would take 8: NCHW), groups of 24 (whole
# at 8; at 16, merged ones of 48 or 96 outrun 5 groups' padding: NCHW) and a channel multiplier
# (NCHW).
GROUPS = r"""
arch groups
input 3x11x11
defaults norm=bn act=relu
stem: conv3-104
g8: conv3-104 groups=13
g4: conv3-104/2 groups=26
c1: conv1-48
g2: conv3-96 groups=24
c2: conv1-120
g24: conv3-120 groups=5
mult: conv3-240 groups=120
tail: conv1-10 act=none
"""


def _transforms(mod: tvm.IRModule) -> Counter:
    """The layout transforms in `main`: to blocked (4-D → 5-D) and back; and the reshapes back
    of one-pixel tensors (the same bytes: no copy)."""
    transform, reshape = (tvm.ir.Op.get(f"relax.{op}") for op in ("layout_transform", "reshape"))
    kinds: Counter = Counter()

    def visit(expr):
        if isinstance(expr, tvm.relax.Call) and expr.op.same_as(transform):
            kinds["block" if len(expr.ty.shape) == 5 else "unblock"] += 1
        elif (isinstance(expr, tvm.relax.Call) and expr.op.same_as(reshape)
              and len(expr.args[0].ty.shape) == 5):
            kinds["reshape"] += 1

    tvm.relax.analysis.post_order_visit(mod["main"], visit)
    return kinds


def _blocked_module(arch, block: int | None = None) -> tvm.IRModule:
    from archdsl.backends.tvm.schedules.blocking import Blocked
    with backend.make_target("llvm"):
        return Blocked(block)(backend.build_module(arch.graph))


@pytest.mark.parametrize("spec", ["resnet18.arch", "mobilenet_v1.arch"])
def test_activations_are_converted_once_at_the_end(spec):
    """The stem reads the NCHW image as it is; every activation after it stays blocked until
    the global pool, whose one pixel per channel is back in NCHW by a reshape: no copy of an
    activation in the whole network."""
    mod = _blocked_module(archdsl.load(SPECS / spec))
    assert _transforms(mod) == Counter(reshape=1)


@pytest.mark.parametrize("block", [8, 16])
@pytest.mark.parametrize("spec", [MIXED, ODD_CONVS, ACTIVATIONS, ROUTING],
                         ids=["mixed", "odd", "act", "routing"])
def test_blocked_builds_match_pytorch_at_either_block(spec, block):
    """Blocks of 8 and of 16 channels, whatever the host's vectors: channel counts that do
    not fill blocks (3, 5, 10, 12, 20, 24), concatenations that can and cannot stay blocked,
    pools, a gate, residual adds and an LRN island in between."""
    arch = archdsl.load(spec)
    ref, state, x = _torch_run(arch, 2)
    compiled = backend.compile(arch.graph, weights=state, batch=2, channel_block=block)
    _assert_close(compiled(x), ref)


@pytest.mark.parametrize("cpu", CPUS)
def test_narrow_groups_merge_into_whole_blocks(cpu):
    """Grouped convs whose groups are narrower than a block run blocked as fewer groups of
    whole blocks (block-diagonal weights) where that costs at most 4× their multiply-adds and
    fits the padding; the others stay NCHW. Either way the build equals PyTorch."""
    arch = archdsl.load(GROUPS)
    mod = _scheduled(arch, cpu)
    marks = _marks(mod)
    nchw = sorted(tuple(int(d) for d in mod[n].params[1].ty.shape) for n, m in marks.items()
                  if "conv2d" in n and m != "conv2d_blocked")
    assert nchw == {  # the OIHW weights of the convs left in NCHW
        "avx2": [(240, 1, 3, 3)],
        "avx512": [(96, 2, 3, 3), (120, 24, 3, 3), (240, 1, 3, 3)]}[cpu]
    assert Counter(marks.values())["conv2d_blocked"] == 9 - len(nchw)
    ref, state, x = _torch_run(arch, 2)
    compiled = backend.compile(arch.graph, weights=state, batch=2,
                               channel_block={"avx2": 8, "avx512": 16}[cpu])
    _assert_close(compiled(x), ref)


@pytest.mark.parametrize("gi, go, groups, b, merged", [
    (8, 8, 13, 16, 7), (4, 4, 32, 8, 16), (4, 4, 32, 16, 8), (2, 4, 24, 8, 6),
    (24, 24, 5, 16, None), (1, 2, 120, 8, None), (2, 4, 24, 16, None), (3, 3, 8, 8, None)])
def test_merged_groups_compute_the_grouped_conv(gi, go, groups, b, merged):
    """The block-diagonal weights of `merge_groups`, convolved with the channels padded to
    whole blocks, give the grouped conv's output (PyTorch on both sides)."""
    import torch

    from archdsl.backends.tvm.schedules.blocking import merge_groups
    from archdsl.backends.tvm.schedules.layout import padded
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((groups * go, gi, 3, 3)).astype(np.float32)
    made = merge_groups(weight, groups, b, padded(groups * gi, b), padded(groups * go, b))
    assert (made and made[1]) == merged
    if made is None:
        return
    w, count = made
    x = torch.from_numpy(rng.standard_normal((1, groups * gi, 6, 6)).astype(np.float32))
    want = torch.nn.functional.conv2d(x, torch.from_numpy(weight), groups=groups)
    wide = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, count * w.shape[1] - groups * gi))
    got = torch.nn.functional.conv2d(wide, torch.from_numpy(w), groups=count)
    assert got.shape[1] >= want.shape[1] and not got[:, want.shape[1]:].any()
    torch.testing.assert_close(got[:, :want.shape[1]], want, rtol=1e-5, atol=1e-5)


# Adaptive average pools on blocked tensors: windows of unequal sizes (13 → 5), and to one pixel
# (SqueezeNet's classifier), with 20 channels (a padded block) between them.
ADAPTIVE = r"""
arch adaptive
input 3x13x13
defaults norm=bn act=relu
c1: conv3-24
a5: adaptive_avgpool(5)
c2: conv1-20
a1: adaptive_avgpool(1)
flat: flatten
fc: FC-10 act=none
"""


@pytest.mark.parametrize("block", [8, 16])
def test_adaptive_average_pools_stay_blocked(block):
    """No activation goes back to NCHW around an adaptive average pool (SqueezeNet's last one
    was a layout transform of 32×1000×13×13 and an NCHW pool: 2% of its batch-32 time); the
    one pixel per channel at the end is NCHW by a reshape. The build equals PyTorch."""
    arch = archdsl.load(ADAPTIVE)
    assert _transforms(_blocked_module(arch, block)) == Counter(reshape=1)
    ref, state, x = _torch_run(arch, 2)
    _assert_close(backend.compile(arch.graph, weights=state, batch=2, channel_block=block)(x), ref)


def test_what_stays_blocked_and_what_does_not():
    arch = archdsl.load(MIXED)
    kinds = _transforms(_blocked_module(arch, 8))
    # back to NCHW: the LRN's input and its square only (the 12 + 20 concat is a gather, blocked
    # to blocked); blocked again: the LRN's output, for the conv after it; the global max
    # pool's pixels: a reshape
    assert kinds == Counter(unblock=2, block=1, reshape=1)
    with backend.make_target("llvm"):
        fused = tvm.transform.Sequential(backend._fuse_passes(8))(backend.build_module(
            arch.graph))
    marks = Counter(schedules.scheduled_by(f) for f in schedules.schedule_cpu(
        fused, backend.make_target("llvm"), {}).functions.values()
        if isinstance(f, tvm.tirx.PrimFunc))
    assert marks["conv2d_blocked"] == 11 and marks["conv2d"] == 0  # the grouped ones too


def test_float16_builds_keep_nchw():
    arch = archdsl.load(ODD_CONVS)
    mod = backend.build_module(arch.graph, dtype="float16")
    from archdsl.backends.tvm.schedules.blocking import Blocked
    with backend.make_target("llvm"):
        assert not _transforms(Blocked()(mod))


def test_padded_channels_stay_finite():
    """A sigmoid makes 0.5 of a padded zero, a conv multiplies it by zero weights: the values
    that reach the output are the real channels' (10 classes, padded to 16)."""
    arch = archdsl.load("arch t\ninput 5x6x6\nc: conv3-10 act=sigmoid\nd: conv1-10 act=none")
    ref, state, x = _torch_run(arch, 1)
    out = backend.compile(arch.graph, weights=state, channel_block=16)(x)
    assert np.isfinite(out).all()
    _assert_close(out, ref)


def test_hard_activations_stay_blocked():
    """hardswish and hardsigmoid (a clip, then / 6), leaky ReLU: elementwise on blocked
    tensors: the input blocked once, no conversion until the end; 12 channels pad to 16, and
    hardsigmoid's 0.5 of a padded zero meets only zero weights."""
    arch = archdsl.load("arch h\ninput 8x10x10\ndefaults norm=bn\nc1: conv3-12 act=hardswish\n"
                        "c2: conv3-12 act=hardsigmoid\nc3: conv3-12 act=leakyrelu\n"
                        "c4: conv3-10 act=none")
    assert _transforms(_blocked_module(arch, 8)) == Counter(block=1, unblock=1)
    ref, state, x = _torch_run(arch, 2)
    _assert_close(backend.compile(arch.graph, weights=state, batch=2, channel_block=8)(x), ref)


@pytest.mark.parametrize("spec", [ROUTING, SPECS / "shufflenet_v2.arch"],
                         ids=["routing", "shufflenet"])
@pytest.mark.parametrize("block", [8, 16])
def test_channel_routing_stays_blocked(spec, block):
    """Splits, slices, chunks, concats and shuffles at any channel offset are gathers from
    blocks to blocks: nothing converts to NCHW between the stem and the global pool (the
    routing's last conv and its logits: one conversion back at the end)."""
    arch = archdsl.load(spec, **({} if spec is ROUTING else {"arch": "shufflenet_v2_x0_5"}))
    with backend.make_target("llvm"):
        mod = tvm.relax.transform.DeadCodeElimination()(_blocked_module(arch, block))
    kinds = _transforms(mod)
    assert kinds == (Counter(unblock=1) if spec is ROUTING else Counter(reshape=1))


def test_shufflenet_matches_pytorch_in_avx512_blocks():
    """ShuffleNetV2's 24 → 48 → 96 → 192 channels halve to 24, 48, 96: in blocks of 16, the
    24s are a block and a half, the shuffles interleave half-blocks."""
    arch = archdsl.load(SPECS / "shufflenet_v2.arch", arch="shufflenet_v2_x0_5", resolution=32)
    ref, state, x = _torch_run(arch, 2)
    _assert_close(backend.compile(arch.graph, weights=state, batch=2, channel_block=16)(x), ref)


@pytest.mark.parametrize("cpu", CPUS)
def test_routing_builds_for_either_width(cpu):
    """Built for AVX2 (blocks of 8) and AVX-512 (16): every routing kernel is one vectorized
    loop nest (the injective rule); run against PyTorch where the host has the features."""
    arch = archdsl.load(ROUTING)
    gathers = [f for f in _scheduled(arch, cpu).functions.values()
               if isinstance(f, tvm.tirx.PrimFunc) and "archdsl_channel_gather" in f.script()]
    assert len(gathers) >= 2
    for func in gathers:
        assert schedules.scheduled_by(func) == "injective" and "T.vectorized" in func.script()
    ref, state, x = _torch_run(arch, 2)
    compiled = backend.compile(arch.graph, target=CPUS[cpu], weights=state, batch=2)
    if _host_runs(CPUS[cpu]):
        _assert_close(compiled(x), ref)

"""archdsl's default CPU schedules (backends/tvm/schedules/): what they schedule, what they
leave alone, and that the scheduled kernels still compute what PyTorch computes. No timing.

Nothing here depends on the host's vector width: the rules are checked for AVX2 (8 lanes) and
AVX-512 (16 lanes) by target, and code built for a CPU the host is not runs only where the
host has every feature it needs (it is compiled, not run, elsewhere)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

import tvm_ffi  # noqa: E402

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.backends.tvm import schedules  # noqa: E402
from archdsl.backends.tvm.schedules.launch import LAUNCH  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"

# Convolutions at odd sizes: stride 2 on odd widths, a 5×5, 1×1s (one strided: its input is
# gathered first), groups, depthwise at stride 1 and 2, explicit padding, channels not a
# multiple of the vector width (24 on AVX-512, 12, the 10-class FC: padded to whole vectors),
# input channels blocked (c8, c9: more than 32 of them on a small plane), a conv without bias,
# norm or activation (the epilogue-free case), pools with padding and ceil mode, and FCs whose
# widths do and do not fill vectors.
ODD_CONVS = r"""
arch odd_convs
input 5x29x27
defaults norm=bn act=relu
c1: conv3-16
c2: conv3-24/2 bias=true
c3: conv5-16 pad=1
dw1: dwconv3
s1: conv1-64/2
c8: conv1-128
c9: conv3-64
dw2: dwconv3/2
c4: conv1-32
g1: conv3-32 groups=4
c5: conv1-12
c6: conv3-16/2 pad=2
p1: maxpool3/2 pad=1 ceil=true
c7: conv1-16 norm=none act=none bias=false
p2: avgpool2/1
flat: flatten
fc1: FC-32
fc2: FC-10 act=none
"""

# EfficientNet's pieces: convs whose epilogue reads the product twice (swish: x·sigmoid(x)),
# a squeeze-and-excitation gate, and every activation that has a fast approximation on CPUs.
ACTIVATIONS = r"""
arch activations
input 8x12x12
defaults norm=bn
c1: conv3-16 act=swish
dw: dwconv5 act=swish
se: gate { gap; conv1-4 norm=none bias=true act=swish; conv1-16 norm=none bias=true act=sigmoid }
c2: conv1-24 act=tanh
c3: conv1-16 act=gelu
gap
flat: flatten
fc: FC-10 act=none
sm: softmax
"""

# Ends in a convolution with nothing after it, so the conv writes the function's output.
BARE_CONV = r"""
arch bare_conv
input 8x9x9
c1: conv3-16/2 bias=false
"""


# one CPU of each vector width; tests that depend on the width run for both
CPUS = {"avx2": {"kind": "llvm", "mcpu": "haswell"}, "avx512": {"kind": "llvm", "mcpu": "znver4"}}
LANES = {"avx2": 8, "avx512": 16}


def _machine(cpu: str):
    """The schedules' view of a CPU: a key of CPUS, or an LLVM CPU name."""
    from archdsl.backends.tvm.schedules.common import Machine
    return Machine.of(backend.make_target(CPUS.get(cpu, {"kind": "llvm", "mcpu": cpu})))


def _conv_plan(cpu: str, oc: int, ic: int, k: int, size: int, blocks: int | None = None):
    """`plan_conv` on `cpu` for a k×k conv of ic → oc channels by rows of a size×size
    output, in the CPU's channel blocks."""
    from archdsl.backends.tvm.schedules.conv_blocked import plan_conv
    machine = _machine(cpu)
    b = machine.lanes
    return plan_conv(machine, oc // b, size, b, (ic // b, k, k, b), False, size, blocks=blocks)


def _host_runs(target) -> bool:
    """Whether this host has every instruction-set feature that code built for `target` may
    use (as a library's check before it runs: LLVM's tuning flags, such as haswell's
    `false-deps-popcnt`, are no instructions)."""
    from archdsl.backends.tvm import cpu
    return not cpu.missing(cpu.needs(backend.make_target(target)))


def _fused(arch, batch: int = 1, target="llvm", dtype: str = "float32",
           winograd: bool = True) -> tvm.IRModule:
    mod = backend.build_module(arch.graph, batch=batch, dtype=dtype)
    with backend.make_target(target):
        return tvm.transform.Sequential(backend._fuse_passes(winograd=winograd))(mod)


def _scheduled(arch, cpu: str, batch: int = 1, winograd: bool = True,
               cores: int | None = None) -> tvm.IRModule:
    """The scheduled build for `cpu` (a key of CPUS), its threads `cores` if given."""
    target = backend.make_target({**CPUS[cpu], **({"num-cores": cores} if cores else {})})
    return schedules.schedule_cpu(_fused(arch, batch, target, winograd=winograd), target, {})


def _blocked_convs(arch, cpu: str, batch: int = 1, winograd: bool = True,
                   cores: int | None = None) -> dict[str, tvm.tirx.PrimFunc]:
    """The functions of the scheduled build that the blocked conv rule scheduled, by name."""
    mod = _scheduled(arch, cpu, batch, winograd, cores)
    return {gv.name_hint: f for gv, f in mod.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and schedules.scheduled_by(f) == "conv2d_blocked"}


def _output_rows(convs, block: str, kernel_rows: int | None = None) -> list[int]:
    """The output rows of the convs that have `block` (and a window of `kernel_rows` rows,
    if given), sorted."""
    return sorted(int(f.params[-1].ty.shape[2]) for f in convs if _has_block(f, block)
                  and kernel_rows in (None, int(f.params[1].ty.shape[2])))


def _loops(stmt) -> list:
    """The loops in a statement (a PrimFunc's body)."""
    found: list = []
    tvm_ffi.structural_map(stmt, [(tvm.tirx.For, lambda f: found.append(f) or f)])
    return found


def _nodes(stmt, kind) -> list:
    """The nodes of type `kind` in a statement."""
    found: list = []
    tvm_ffi.structural_map(stmt, [(kind, lambda node: found.append(node) or node)])
    return found


def _marks(mod: tvm.IRModule) -> dict[str, str | None]:
    return {gv.name_hint: schedules.scheduled_by(f) for gv, f in mod.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc)}


def _torch_run(arch, batch: int, seed: int = 0):
    """Outputs of the PyTorch model (the oracle) with BNs holding random statistics, its
    state_dict, and the input."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    model = arch.to_torch().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
        x = np.random.default_rng(seed).standard_normal((batch, *arch.graph.input_shape),
                                                         np.float32)
        return model(torch.from_numpy(x)).numpy(), model.state_dict(), x


def _check_where_the_host_runs(arch, cpu: str) -> None:
    """The build for `cpu` equals PyTorch at batch 2, if this host can run its code."""
    if _host_runs(CPUS[cpu]):
        ref, state, x = _torch_run(arch, 2)
        _assert_close(backend.compile(arch.graph, target=CPUS[cpu], weights=state,
                                      batch=2)(x), ref)


def _assert_close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> None:
    assert got.shape == ref.shape
    diff, scale = float(np.abs(got - ref).max()), float(np.abs(ref).max())
    assert diff <= rel * scale, f"max |diff| {diff:.3g} > {rel} × output scale {scale:.3g}"


def test_the_hook_runs_after_tuning():
    from archdsl.backends.tvm import tune as tvm_tune
    hooks = backend.SCHEDULE_HOOKS
    assert hooks.index(tvm_tune.schedule_hook) < hooks.index(schedules.schedule_cpu)


def test_the_cpus_have_the_widths_they_stand_for():
    from archdsl.backends.tvm.schedules.common import vector_lanes
    for cpu, target in CPUS.items():
        assert vector_lanes(backend.make_target(target)) == LANES[cpu]


@pytest.mark.parametrize("cpu", CPUS)
def test_resnet18_kernels_all_carry_a_mark(cpu):
    """Every conv gets a conv rule — Winograd's for the 3×3 stride-1 convs on 56×56, 28×28
    and 14×14, the blocked conv rule for the rest — and the 1000-class FC the dense rule on either
    width (on AVX-512, 1000 % 16 != 0: its weights are padded to 1008 columns)."""
    marks = _marks(_scheduled(archdsl.load(SPECS / "resnet18.arch"), cpu))
    convs = {name for name in marks if "conv2d" in name}
    assert len(convs) >= 12
    assert {name: marks[name] for name in convs} == {
        name: "conv2d_winograd" if "winograd" in name else "conv2d_blocked" for name in convs}
    assert Counter(marks[name] for name in convs)["conv2d_winograd"] == 6  # ± residual, ×3
    assert all(marks.values()), f"unscheduled: {[n for n, m in marks.items() if not m]}"
    assert Counter(marks.values())["dense"] == 1


def _has_block(func, name: str) -> bool:
    sch = tvm.s_tir.Schedule(func)
    try:
        sch.get_sblock(name)
    except Exception:  # noqa: BLE001 - TVM raises its own error types for a missing block
        return False
    return True


@pytest.mark.parametrize("cpu", CPUS)
def test_depthwise_convs_have_their_own_mark(cpu):
    """α = 0.25: an 8-channel stem, a width AVX-512's 16 lanes do not divide, is a conv too."""
    target = backend.make_target(CPUS[cpu])
    mod = _fused(archdsl.load(SPECS / "mobilenet_v1.arch", resolution=64, alpha=0.25), 1, target)
    kinds = {gv.name_hint: ("depthwise_blocked" if _has_block(f, "archdsl_dwconv_blocked")
                            else "conv2d_blocked")
             for gv, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint}
    marks = _marks(schedules.schedule_cpu(mod, target, {}))
    assert {name: marks[name] for name in kinds} == kinds
    assert Counter(kinds.values())["depthwise_blocked"] >= 5
    assert Counter(marks.values())["dense"] == 1


@pytest.mark.parametrize("cpu", CPUS)
def test_every_dense_conv_and_fc_gets_its_rule_at_any_width(cpu):
    """Channel counts that no vector width divides (12, 24, 10) are padded, not left to a
    scalar fallback; the grouped conv (groups of 8 channels) is blocked on either width: its
    groups are whole vectors at AVX2's 8 lanes and merge in pairs at AVX-512's 16."""
    mod = _scheduled(archdsl.load(ODD_CONVS), cpu)
    marks = Counter(_marks(mod).values())
    assert marks["conv2d_blocked"] == 11 and marks["depthwise_blocked"] == 2
    assert marks["dense"] == 2
    grouped = [tuple(int(d) for d in f.params[1].ty.shape) for gv, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and len(f.params) > 1
               and len(f.params[1].ty.shape) == 6]
    # g1's packed weights: 32 outputs in blocks, one input block per group, 3×3
    assert (32 // LANES[cpu], 1, 3, 3, LANES[cpu], LANES[cpu]) in grouped


BATCHED_FC = r"""
arch batched_fc
input 256x2x2
fc1: FC-1024
fc2: FC-10 act=none
"""


def _dense_loops(arch, cpu: str, batch: int, cores: int | None = None) -> dict[int, list]:
    """The loops around each dense kernel's product (by its output width), outermost first."""
    target = backend.make_target({**CPUS[cpu], **({"num-cores": cores} if cores else {})})
    found = {}
    for _, f in schedules.schedule_cpu(_fused(arch, batch, target), target, {}).functions_items():
        if isinstance(f, tvm.tirx.PrimFunc) and schedules.scheduled_by(f) == "dense":
            sch = tvm.s_tir.Schedule(f)
            (update,) = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
                         if "init" not in sch.get(b).name_hint
                         and sch.get(b).reads and len(sch.get(b).iter_vars) == 3]
            found[int(f.params[-1].ty.shape[-1])] = [sch.get(lp) for lp in sch.get_loops(update)]
    return found


@pytest.mark.parametrize("cpu", CPUS)
def test_batched_fcs_read_their_weights_once(cpu):
    """With several tiles of rows (batch 32), an FC's reduction goes in chunks that every row
    tile reads (the weights of a column block once, not once per row tile): parallel over
    column blocks, then the chunks, then the row tiles. One tile of rows (batch 1), or too
    few column blocks to share (10 classes), keep the whole reduction per tile. Matches
    PyTorch at batch 32 where the host runs the code."""
    arch = archdsl.load(BATCHED_FC)
    kinds = tvm.tirx.ForKind
    wide = _dense_loops(arch, cpu, 32)[1024]
    assert wide[0].kind == kinds.PARALLEL and int(wide[0].extent) in (1024 // 32, 1024 // 16)
    chunks, tiles = int(wide[1].extent), int(wide[2].extent)
    assert 1 < chunks < 1024 and 1024 % chunks == 0 and tiles > 1, (chunks, tiles)
    (classes,) = [v for width, v in _dense_loops(arch, cpu, 32).items() if width != 1024]
    for loops in (_dense_loops(arch, cpu, 1)[1024], classes):
        reduction = [lp for lp in loops if int(lp.extent) == 1024]
        assert loops[0].kind == kinds.PARALLEL and reduction, [int(lp.extent) for lp in loops]
    if _host_runs(CPUS[cpu]):
        ref, state, x = _torch_run(arch, 32)
        _assert_close(backend.compile(arch.graph, target=CPUS[cpu], weights=state,
                                      batch=32)(x), ref)


@pytest.mark.parametrize("cpu", CPUS)
def test_chunked_fcs_prefetch_the_next_chunk_and_keep_whole_tiles_unpredicated(cpu):
    """Batch 13 (a prime) of an FC in chunks: the weights come from memory, so each of the
    three tiles of rows prefetches its share of the next chunk's lines; the two whole tiles
    are a loop of their own with no predicate, the last tile (one row) another with it.
    Matches PyTorch at batch 13 where the host runs the code."""
    arch = archdsl.load(BATCHED_FC)
    target = backend.make_target(CPUS[cpu])
    mod = schedules.schedule_cpu(_fused(arch, 13, target), target, {})
    (func,) = [f for _, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and schedules.scheduled_by(f) == "dense"
               and int(f.params[-1].ty.shape[-1]) == 1024]
    script = func.script()
    assert script.count("llvm.prefetch") == 2, script  # in the whole tiles' loop and the last
    # none past the packed weights' end (the last chunk's next lines would be)
    assert script.count(f"< T.int64({1024 * 1024})") == 2, script
    realizes = [r for r in _nodes(func.body, tvm.s_tir.SBlockRealize)
                if r.block.name_hint.endswith("_update")]
    assert len(realizes) == 2
    assert sorted(isinstance(r.predicate, tvm.tirx.IntImm) and int(r.predicate) == 1
                  for r in realizes) == [False, True]
    unrolled = [(int(f.min), int(f.extent)) for f in _loops(func.body)
                if f.kind == tvm.tirx.ForKind.UNROLLED]
    # a tile's rows: the sums' zeros, the whole tiles' products, the last tile's
    assert unrolled == [(0, 6)] * 3, unrolled
    tiles = [(int(f.min), int(f.extent)) for f in _loops(func.body)
             if [r.block.name_hint.endswith("_update")
                 for r in _nodes(f.body, tvm.s_tir.SBlockRealize)] == [True]
             and (int(f.min), int(f.extent)) in ((0, 2), (2, 1))]
    assert sorted(tiles) == [(0, 2), (2, 1)], tiles  # the loops of tiles: two whole, one cut
    if _host_runs(CPUS[cpu]):
        ref, state, x = _torch_run(arch, 13)
        _assert_close(backend.compile(arch.graph, target=CPUS[cpu], weights=state,
                                      batch=13)(x), ref)


WIDE_INPUT_FC = r"""
arch wide_input_fc
input 2048x2x2
fc1: FC-512
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_an_fc_over_a_large_input_takes_its_chunks_by_groups_of_columns(cpu):
    """Batch 32 of 8,192 inputs (1 MB, over half of either CPU's L2): a thread's group of
    column blocks goes chunk by chunk, the input's chunk read once per group, not once per
    column block — parallel over the groups (one per thread: two where the target says two
    cores, eight where it does not say), then the chunks, then the group's blocks. Matches
    PyTorch where the host runs the code."""
    arch = archdsl.load(WIDE_INPUT_FC)
    blocks = 512 // (2 * LANES[cpu])
    for cores, groups in ((2, 2), (None, 8)):
        loops = _dense_loops(arch, cpu, 32, cores)[512]
        assert loops[0].kind == tvm.tirx.ForKind.PARALLEL and int(loops[0].extent) == groups
        chunks = int(loops[1].extent)
        assert 1 < chunks < 8192 and 8192 % chunks == 0, chunks
        assert int(loops[2].extent) == blocks // groups
    # 128 KB of inputs (batch 32 of 1,024) stay under half of L2: no groups
    assert int(_dense_loops(archdsl.load(BATCHED_FC), cpu, 32, 2)[1024][0].extent) > 2
    if _host_runs(CPUS[cpu]):
        ref, state, x = _torch_run(arch, 32)
        _assert_close(backend.compile(arch.graph, target={**CPUS[cpu], "num-cores": 2},
                                      weights=state, batch=32)(x), ref)


@pytest.mark.parametrize("cpu", CPUS)
def test_a_group_of_column_blocks_prefetches_the_next_blocks_chunk(cpu):
    """In a group the next weights a thread reads are the next column block's of the same
    chunk (the block's own next chunk comes after every block of the group): each row tile
    prefetches its share of those lines, not the next chunk's, which an L2 that also holds
    the group's sums and the input's chunk let go before they were read."""
    arch = archdsl.load(WIDE_INPUT_FC)
    target = backend.make_target({**CPUS[cpu], "num-cores": 2})
    mod = schedules.schedule_cpu(_fused(arch, 32, target), target, {})
    (func,) = [f for _, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and schedules.scheduled_by(f) == "dense"
               and int(f.params[-1].ty.shape[-1]) == 512]
    (call,) = [e.value for e in _nodes(func.body, tvm.tirx.Evaluate)
               if "llvm.prefetch" in str(e.value)]
    loops = _dense_loops(arch, cpu, 32, 2)[512]
    group, chunk, block = (lp.loop_var.name for lp in loops[:3])
    at = {group: 1, chunk: 3, block: 2}  # the second group's third block, its fourth chunk

    def value(expr) -> int:  # with every other loop (tile, line) at its first iteration
        def bound(v):
            return tvm.tirx.const(at.get(v.name, 0), v.ty)
        return int(tvm.sym.Analyzer().simplify(
            tvm_ffi.structural_map(expr, [(tvm.tirx.Var, bound)])))

    (weights,) = [p for p in func.params if len(p.ty.shape) == 3]  # blocks × inputs × lanes
    per_group, steps = int(weights.ty.shape[0]) // 2, 8192 // int(loops[1].extent)
    assert [value(i) for i in call.args[1].args[0].indices] == [per_group + 2 + 1, 3 * steps, 0]


@pytest.mark.parametrize("cpu", CPUS)
def test_a_transformers_linear_layers_get_the_dense_rule(cpu):
    """A linear layer over a sequence of tokens is a matmul with leading axes (batch, token)
    against a constant weight: the dense rule takes its leading axes as rows (it had fallen to
    the catch-all rule — serial scalar loops, ViT-B/16 49 s a run at batch 1), parallel over
    column blocks, vectorized, in whole register tiles of rows however many tokens there are;
    a tiny ViT at batch 2 matches PyTorch where the host runs it."""
    arch = archdsl.load(SPECS / "vit.arch", layers=2, hidden=64, mlp_dim=128, heads=4, patch=8,
                        resolution=32)
    mod = _scheduled(arch, cpu, batch=2)
    linear = {name: mark for name, mark in _marks(mod).items()
              if name.startswith("fused_matmul") and "matmul" in str(mod[name])}
    assert len(linear) >= 3 and set(linear.values()) == {"dense"}, linear
    kinds = tvm.tirx.ForKind
    for name in linear:
        loops = _loops(mod[name].body)
        assert any(f.kind == kinds.PARALLEL and int(f.extent) > 1 for f in loops), name
        assert any(f.kind == kinds.VECTORIZED for f in loops), name
        # over 17 tokens (a prime): tiles of 12·lanes/vo = 6 rows, the last cut short (the
        # head's rows are the batch's 2)
        rows = 6 if len(mod[name].params[0].ty.shape) == 3 else 2
        assert any(f.kind == kinds.UNROLLED and int(f.extent) == rows for f in loops), name
    _check_where_the_host_runs(arch, cpu)


@pytest.mark.parametrize("cpu", CPUS)
def test_attention_gets_batched_products_and_row_kernels(cpu):
    """A transformer's attention is two products of activations (Q·Kᵀ, scores·V) and a
    softmax; its layer norms reduce each token's features. The products get the batch_matmul
    rule — parallel over images and heads, register tiles vectorized along the columns,
    Q·Kᵀ's 17 columns (a prime) padded to whole blocks of two vectors; the softmax and the
    layer norm get the rows rule — one parallel loop over the rows, every stage inside it,
    the layer norm's 64-wide sums as vectors of partial sums (the catch-all rule ran
    ViT-B/16's fused attention op at 31.7 ms a layer, its layer norms' sums on one thread).
    A tiny ViT still matches PyTorch where the host runs it."""
    arch = archdsl.load(SPECS / "vit.arch", layers=2, hidden=64, mlp_dim=128, heads=4, patch=8,
                        resolution=32)
    mod = _scheduled(arch, cpu, batch=2)
    marks = _marks(mod)
    kinds = tvm.tirx.ForKind
    products = [name for name, mark in marks.items() if mark == "batch_matmul"]
    assert len(products) == 2, marks
    padded = 0
    for name in products:
        loops = _loops(mod[name].body)
        parallel = [int(f.extent) for f in loops if f.kind == kinds.PARALLEL]
        assert len(parallel) == 1 and parallel[0] % (2 * 4) == 0, name  # batch × heads, ...
        assert any(f.kind == kinds.VECTORIZED and int(f.extent) % LANES[cpu] == 0
                   for f in loops), name
        # the padded operand and product: 17 columns to whole blocks of two vectors
        pads = re.findall(r"_pad = T.sblock_alloc_buffer\(\(.*T.int64\((\d+)\)\)\)",
                          mod[name].script())
        assert pads in ([], [str(-(-17 // (2 * LANES[cpu])) * 2 * LANES[cpu])] * 2), pads
        padded += bool(pads)
    assert padded == 1  # Q·Kᵀ's 17 columns; scores·V's 16 fill vectors on AVX2 and AVX-512
    rows = {name: mod[name] for name, mark in marks.items() if mark == "rows"}
    assert {"layer_norm", "fast_softmax"} <= set(rows), marks
    for name, func in rows.items():
        parallel = [int(f.extent) for f in _loops(func.body) if f.kind == kinds.PARALLEL]
        assert parallel == [2 * 17 * (4 if "softmax" in name else 1)], name
    vectors = [f for f in _loops(rows["layer_norm"].body) if f.kind == kinds.VECTORIZED]
    assert len(vectors) == 5, vectors  # two sums' partial vectors (init, update), the norm
    _check_where_the_host_runs(arch, cpu)


@pytest.mark.parametrize("cpu", CPUS)
def test_attention_over_keys_short_of_a_block_pads_them(cpu):
    """145 tokens (a 12×12 grid and a class token) are 160 keys, zeros, their scores masked:
    the softmax's rows (160) fill vectors, its max and sum as vectors of partial results,
    x - max computed in its exp; Q·Kᵀ is 160 columns, no padded copy in the kernel; the
    result is the unpadded attention's
    (matches PyTorch where the host runs it). 17 tokens (15 keys short of 32: over 15% more)
    are not padded (the test above)."""
    arch = archdsl.load(SPECS / "vit.arch", layers=1, hidden=64, mlp_dim=128, heads=4, patch=8,
                        resolution=96)
    mod = _scheduled(arch, cpu, batch=2)
    marks = _marks(mod)
    kinds = tvm.tirx.ForKind
    products = [mod[name] for name, mark in marks.items() if mark == "batch_matmul"]
    assert len(products) == 2, marks
    shapes = sorted(tuple(int(d) for d in f.params[-1].ty.shape) for f in products)
    assert shapes == [(2, 4, 145, 16), (2, 4, 145, 160)], shapes
    assert not any("_pad = T.sblock_alloc_buffer" in f.script() for f in products)
    (softmax,) = [mod[name] for name, mark in marks.items() if mark == "rows"
                  and "softmax" in name]
    assert int(softmax.params[0].ty.shape[-1]) == 160
    vectors = [f for f in _loops(softmax.body) if f.kind == kinds.VECTORIZED]
    assert len(vectors) >= 4, vectors  # the max's and the sum's partial vectors at least
    # x - max is computed inside the exp, no row buffer of its own (with one, LLVM had stored
    # the exp's max(e^x, x) over it as a masked store: 2x the softmax's time on Zen 3)
    assert [b.name_hint for b in _nodes(softmax.body, tvm.s_tir.SBlock)
            if "delta" in b.name_hint] == [], softmax
    # each row's sum divides once, its reciprocal multiplying the row (no division by it
    # per element)
    (norm,) = [b for b in _nodes(softmax.body, tvm.s_tir.SBlock) if b.name_hint.endswith("norm")]
    divisions = _nodes(norm.body, tvm.tirx.Div)
    assert len(divisions) == 1 and isinstance(divisions[0].a, tvm.tirx.FloatImm), norm
    _check_where_the_host_runs(arch, cpu)


@pytest.mark.parametrize("cpu", CPUS)
def test_transposes_go_in_tiles_of_an_input_line(cpu):
    """Attention's keys transposed (batch 2 of 145 tokens × 4 heads of 16 features into
    2 × 4 × 16 × 160, the keys padded): the output's rows of keys read the input a token (a
    row of 64) apart, so the kernel goes in tiles of a line of the input's features (16
    floats) × a vector of keys, each line read once a tile; parallel over the tiles. An
    elementwise kernel (read along its last axis) keeps its rows. Matches PyTorch where the
    host runs it."""
    arch = archdsl.load(SPECS / "vit.arch", layers=1, hidden=64, mlp_dim=128, heads=4, patch=8,
                        resolution=96)
    mod = _scheduled(arch, cpu, batch=2)
    kinds = tvm.tirx.ForKind
    nests = {name: [(f.kind, int(f.extent)) for f in reversed(_loops(mod[name].body))]
             for name, mark in _marks(mod).items() if mark == "injective"}  # outermost first
    keys = [name for name in nests
            if tuple(int(d) for d in mod[name].params[-1].ty.shape) == (2, 4, 16, 160)]
    assert len(keys) == 1, {n: mod[n].params[-1].ty.shape for n in nests}
    parallel, line, vector = nests[keys[0]]
    assert parallel[0] == kinds.PARALLEL and parallel[1] == 2 * 4 * 160 // LANES[cpu]
    assert line == (kinds.SERIAL, 16) and vector == (kinds.VECTORIZED, LANES[cpu])
    assert all(len(loops) != 3 or loops[1] != (kinds.SERIAL, 16)
               for name, loops in nests.items() if name not in keys)
    _check_where_the_host_runs(arch, cpu)


# Swin's blocks on a 28×28 map of 32 channels (16 windows of 7×7), then a 14×14 one
SWIN_BLOCKS = r"""
arch swin_blocks
input 3x112x112
defaults norm=none act=none
conv4-32/4 pad=0; layernorm
residual { layernorm; window_attention(1) window=7 }
residual { layernorm; linear-64 act=gelu; linear-32 }
patch_merging
tokens; gap; FC-10
"""
# a map of 4 rows of 64 pixels (at batch 1)
WIDE_MAP_NORM = r"""
arch wide_map_norm
input 3x16x256
conv4-32/4 pad=0 norm=none act=none; layernorm; gap; FC-10
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_window_attentions_linear_layers_keep_whole_row_tiles_unpredicated(cpu):
    """A window's 49 tokens are 8 whole tiles of 6 rows and a last one of 1: with windows ×
    column blocks enough for the threads (16 windows), the row tiles stay out of the
    parallel loop and the whole tiles are a loop of their own with no predicate (a predicate
    LLVM did not unswitch took 2.2x the time: Swin-T's). Matches PyTorch where the host runs
    the code."""
    arch = archdsl.load(SWIN_BLOCKS)
    mod = _scheduled(arch, cpu)
    kinds = tvm.tirx.ForKind
    linear = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
              and schedules.scheduled_by(f) == "dense"
              and [int(d) for d in f.params[0].ty.shape] == [16, 49, 32]]
    assert linear, _marks(mod)
    for func in linear:
        parallel = [int(f.extent) for f in _loops(func.body) if f.kind == kinds.PARALLEL]
        assert parallel == [16 * 32 // (2 * LANES[cpu])], parallel  # windows × column blocks
        realizes = [r for r in _nodes(func.body, tvm.s_tir.SBlockRealize)
                    if r.block.name_hint.endswith("_update")]
        assert sorted(isinstance(r.predicate, tvm.tirx.IntImm) and int(r.predicate) == 1
                      for r in realizes) == [False, True], func
        # the loops of row tiles (their sums' zeros and products): eight whole, one cut
        tiles = sorted((int(f.min), int(f.extent)) for f in _loops(func.body)
                       if f.kind == kinds.SERIAL and any(
                           r.block.name_hint.endswith("_update")
                           for r in _nodes(f.body, tvm.s_tir.SBlockRealize))
                       and (int(f.min), int(f.extent)) in ((0, 8), (8, 1)))
        assert tiles == [(0, 8), (8, 1)], tiles
    _check_where_the_host_runs(arch, cpu)


@pytest.mark.parametrize("cpu", CPUS)
def test_layer_norms_over_a_maps_channels_go_by_rows_of_pixels(cpu):
    """A layer norm over the channels of a C×H×W map (Swin's, ConvNeXt's) reduces along a
    strided axis: the columns rule takes a row of pixels per parallel step (images × rows)
    and sums the channels into vectors of the row's pixels — 28 pixels (no whole vectors)
    as one vector, the merged map's 14 too; a map of few rows has them in pieces, whole
    vectors each. Matches PyTorch where the host runs the code."""
    arch = archdsl.load(SWIN_BLOCKS)
    mod = _scheduled(arch, cpu, batch=2)
    norms = {name: mod[name] for name, mark in _marks(mod).items() if "layer_norm" in name}
    assert len(norms) >= 2 and set(_marks(mod)[n] for n in norms) == {"columns"}, _marks(mod)
    kinds = tvm.tirx.ForKind
    for name, func in norms.items():
        _, channels, rows, width = (int(d) for d in func.params[0].ty.shape)
        loops = _loops(func.body)
        assert [int(f.extent) for f in loops if f.kind == kinds.PARALLEL] == [2 * rows], name
        vectors = [int(f.extent) for f in loops if f.kind == kinds.VECTORIZED]
        # two sums (their zeros and updates), the mean, the output: each along the row
        assert vectors == [width] * 6, (name, vectors)
        # a sum goes over the channels outside the row's pixels
        sums = [f for f in loops if int(f.extent) == channels
                and any(r.block.name_hint.endswith("_update")
                        for r in _nodes(f.body, tvm.s_tir.SBlockRealize))]
        assert len(sums) == 2, name
    _check_where_the_host_runs(arch, cpu)
    # a map of 4 rows (at batch 1): each row in two pieces of whole vectors, 8 steps
    wide = archdsl.load(WIDE_MAP_NORM)
    (func,) = [f for _, f in _scheduled(wide, cpu).functions_items()
               if schedules.scheduled_by(f) == "columns"]
    loops = _loops(func.body)
    assert [int(f.extent) for f in loops if f.kind == kinds.PARALLEL] == [8]
    assert {int(f.extent) for f in loops if f.kind == kinds.VECTORIZED} == {LANES[cpu]}
    assert sorted({int(f.extent) for f in loops if f.kind == kinds.SERIAL}) == \
        sorted({32, 32 // LANES[cpu]}), [int(f.extent) for f in loops]
    if _host_runs(CPUS[cpu]):
        ref, state, x = _torch_run(wide, 1)
        _assert_close(backend.compile(wide.graph, target=CPUS[cpu], weights=state)(x), ref)


def test_convs_with_any_activation_get_a_conv_rule_and_match_pytorch():
    """Swish reads the conv's output twice; the epilogue still fuses into the conv's tile
    (it fell to the generic parallel loops, EfficientNet-B0 9.8× ONNX Runtime's time), and
    the fast exp/tanh/erf approximations keep the output within 1e-5 of PyTorch's."""
    arch = archdsl.load(ACTIVATIONS)
    fused = _fused(arch)
    # no libm call per element: exp, tanh and erf are TOPI's polynomials (schedules/fast_math)
    assert not [gv.name_hint for gv, f in fused.functions_items()
                if isinstance(f, tvm.tirx.PrimFunc)
                and any(f"T.{fn}(" in str(f) for fn in ("exp", "tanh", "erf", "sigmoid"))]
    marks = _marks(schedules.schedule_cpu(fused, backend.make_target("llvm"), {}))
    convs = {n: m for n, m in marks.items() if "conv2d" in n}
    assert len(convs) >= 6 and "parallel" not in marks.values()
    assert set(convs.values()) <= {"conv2d_blocked", "depthwise_blocked"}, convs
    ref, state, x = _torch_run(arch, 2)
    _assert_close(backend.compile(arch.graph, weights=state, batch=2)(x), ref, 1e-5)


@pytest.mark.parametrize("cpu", CPUS)
def test_blocked_convs_take_weights_packed_for_their_width(cpu):
    """16 × 8 × 3 × 3 weights: on AVX2 (8 lanes) the 8 input channels are one block; on
    AVX-512 (16) they do not fill one, and the conv reads its input as NCHW (ib = 1)."""
    out = _scheduled(archdsl.load(BARE_CONV), cpu)
    (name,) = [n for n, m in _marks(out).items() if m == "conv2d_blocked"]
    shapes = [tuple(int(d) for d in p.ty.shape) for p in out[name].params]
    assert shapes[1] == {"avx2": (2, 1, 3, 3, 8, 8), "avx512": (1, 8, 3, 3, 1, 16)}[cpu]
    assert shapes[0] == {"avx2": (1, 1, 9, 9, 8), "avx512": (1, 8, 9, 9)}[cpu]


def test_prescheduled_functions_are_left_alone():
    mod = _fused(archdsl.load(SPECS / "resnet18.arch"), dtype="float16")
    name = "fused_conv2d_add_cast_relu"  # the stem (float16 builds keep NCHW convs)
    gv = mod.get_global_var(name)
    tuned = mod[gv].with_attr("tirx.is_scheduled", True)
    mod[gv] = tuned
    out = schedules.schedule_cpu(mod, backend.make_target("llvm"), {})
    assert out[name].same_as(tuned)
    assert schedules.scheduled_by(out[name]) is None
    # its weights keep their layout (only the layouts of the functions scheduled here change)
    calls = [b.value for b in out["main"].body.blocks[0].bindings
             if b.value.args and getattr(b.value.args[0], "name_hint", "") == name]
    assert tuple(calls[0].args[1].fields[1].value.shape) == (64, 3, 7, 7)


def test_schedules_can_be_turned_off_and_skip_gpus():
    mod = _fused(archdsl.load(BARE_CONV))
    assert schedules.schedule_cpu(mod, backend.make_target("llvm"), {"schedules": False}) is mod
    cuda = backend.make_target({"kind": "cuda", "arch": "sm_80"})
    assert schedules.schedule_cpu(mod, cuda, {}) is mod


@pytest.mark.parametrize("spec,batch", [(ODD_CONVS, 1), (ODD_CONVS, 3), (BARE_CONV, 2)],
                         ids=["odd_convs", "odd_convs-batch3", "bare_conv-batch2"])
def test_scheduled_builds_match_pytorch(spec, batch):
    arch = archdsl.load(spec)
    ref, state, x = _torch_run(arch, batch)
    marks = Counter(_marks(schedules.schedule_cpu(_fused(arch, batch),
                                                  backend.make_target("llvm"), {})).values())
    compiled = backend.compile(arch.graph, weights=state, batch=batch)
    _assert_close(compiled(x), ref)
    naive = backend.compile(arch.graph, weights=state, batch=batch, schedules=False)
    _assert_close(naive(x), ref)
    assert marks["conv2d_blocked"] >= 1
    if spec is ODD_CONVS:
        assert marks["depthwise_blocked"] == 2 and marks["dense"] == 2 and marks["pool"] >= 2


@pytest.mark.parametrize("cpu", CPUS)
def test_builds_for_either_width_match_pytorch_where_they_can_run(cpu):
    """Built for AVX2 and for AVX-512 alike (the build is what is checked everywhere); run and
    compared with PyTorch only where the host has the features (never AVX-512 code on an AVX2
    host: it would die of SIGILL)."""
    arch = archdsl.load(ODD_CONVS)
    ref, state, x = _torch_run(arch, 2)
    compiled = backend.compile(arch.graph, target=CPUS[cpu], weights=state, batch=2)
    assert compiled.device_kind == "llvm"
    if _host_runs(CPUS[cpu]):
        _assert_close(compiled(x), ref)


# 1×1 convs on planes too large to tile flat, whose rows (37 and 19 wide: primes) the register tile
# does not divide: the extra columns read the last one again instead of padding the input; the
# last, 256→24, has weights beyond half of L1: read in chunks of input blocks once per row
WIDE_POINTWISE = r"""
arch wide_pointwise
input 8x34x37
defaults norm=bn act=relu
c1: conv1-16
c2: conv1-24/2
c3: conv1-16 act=none
c4: conv1-256
c5: conv1-24
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_unpadded_convs_computed_wider_copy_no_input(cpu):
    """A 1×1 conv whose rows are computed wider than the output (whole register tiles) reads
    its input in place, clamped to the last column (a padded copy of the input was a pass
    over it: MobileNetV2's 16→96 conv on 112×112 at batch 32 took 2.4× as long), and still
    matches PyTorch where the host can run it."""
    arch = archdsl.load(WIDE_POINTWISE)
    convs = {n: str(f) for n, f in _blocked_convs(arch, cpu).items()}
    assert len(convs) == 5 and not [n for n, text in convs.items() if "archdsl_pad" in text]
    assert any("T.min(" in text for text in convs.values())  # ReLU is a max: the clamp
    _check_where_the_host_runs(arch, cpu)


# An RGB stem read unblocked (NCHW), unpadded and strided (SqueezeNet 1.1's: its rows are
# computed wider, clamped), a padded one, and a blocked conv after them.
RGB_STEMS = r"""
arch rgb_stems
input 3x33x33
defaults act=relu
s1: conv3-64/2 pad=0
c1: conv3-16
"""


def _unrolled_window_columns(func) -> bool:
    """Whether the conv's loop over its window's columns (`rx`) is unrolled."""
    text = func.script()
    assert " rx" in text or "rx," in text, "no loop over the window's columns"
    return "for rx in T.unroll(" in text


@pytest.mark.parametrize("cpu", CPUS)
def test_unblocked_inputs_unroll_the_windows_columns(cpu):
    """A conv reading 3 unblocked channels has the window's columns as its innermost
    reduction, and unrolls them (SqueezeNet 1.1's stem at batch 32, one thread: 28–32 ms →
    21; LLVM otherwise kept the broadcasts shared between columns on the stack); a conv on
    blocked channels leaves them a loop. Still equal to PyTorch where the host runs it."""
    arch = archdsl.load(RGB_STEMS)
    convs = _blocked_convs(arch, cpu, winograd=False).values()
    unrolled = sorted(_unrolled_window_columns(f) for f in convs)
    assert unrolled == [False, True]
    _check_where_the_host_runs(arch, cpu)


CONCAT = r"""
arch concat_parts
input 8x24x24
a: concat { conv1-32 | conv3-32 }
b: conv1-8
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_injective_kernels_loop_over_rows_and_vectorize_lanes(cpu):
    """A concat of blocked parts runs in parallel over images × channel blocks × rows (the
    fewest outer axes that make 64 iterations), a loop along the row and a vector of the
    block's lanes: the part a block comes from is chosen per row, not per vector (SqueezeNet
    1.1's concats at batch 32: 0.77× the time of one fused loop)."""
    import re
    arch = archdsl.load(CONCAT)
    concats = [f.script() for _, f in _scheduled(arch, cpu).functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and "T_concat" in f.script()]
    assert len(concats) == 1
    lanes = LANES[cpu]
    parallel = re.findall(r"in T\.parallel\(T\.int64\((\d+)\)\)", concats[0])
    assert parallel == [str(64 // lanes * 24)], parallel
    assert f"T.vectorized(T.int64({lanes}))" in concats[0]
    _check_where_the_host_runs(arch, cpu)


# Output channels in a prime number of blocks (13: 104 channels at 8 lanes, 208 at 16), which no
# register tile of several vectors divides: 1×1 convs on rows (28×28 is too large to tile flat)
# and flat (14×14), 3×3 convs at stride 1 and 2.
PRIME_BLOCKS = r"""
arch prime_blocks
input 16x28x28
defaults norm=bn act=relu
a: conv1-104
b: conv3-104
c: conv1-208
d: conv3-208/2
e: conv1-104 act=none
f: conv1-208
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_output_blocks_are_padded_to_whole_register_tiles(cpu):
    """13 output blocks are computed as 14 (tiles of 2 vectors on AVX2, 7 on AVX-512), with
    zero weights, and cut back: a tile of one vector, or of 13 vectors for one pixel, was a
    load per FMA (RegNetY-400MF's 104→104 1×1 conv on 28×28: 0.38 ms → 0.26). The
    result still equals PyTorch (blocks of either width, run here)."""
    arch = archdsl.load(PRIME_BLOCKS)
    convs = [(int(f.params[1].ty.shape[0]), int(f.params[-1].ty.shape[1]))
             for f in _blocked_convs(arch, cpu, winograd=False).values()]
    assert len(convs) == 6
    primes = [computed for computed, real in convs if real == 13]
    assert len(primes) == 3 and all(computed == 14 for computed in primes), convs
    assert all(real <= computed <= 1.15 * real for computed, real in convs), convs
    ref, state, x = _torch_run(arch, 2)
    compiled = backend.compile(arch.graph, weights=state, batch=2, channel_block=LANES[cpu])
    _assert_close(compiled(x), ref)


@pytest.mark.parametrize("cpu", CPUS)
def test_output_blocks_are_padded_only_for_a_clear_gain(cpu):
    """Blocks that tiles of several vectors divide are not padded for a tile the cost model
    finds barely better: 256 channels on 56-wide rows (VGG-16) took 3×3 tiles in 33 blocks
    of 8 and ran 1.10× slower than 4×2 in 32. 13 blocks still become 14."""
    from archdsl.backends.tvm.schedules.common import Machine
    from archdsl.backends.tvm.schedules.conv_blocked import pixel_tile
    machine = Machine.of(backend.make_target(CPUS[cpu]))
    for ocb, count in ((256 // machine.lanes, 56), (64 // machine.lanes, 56), (32, 28)):
        vectors, pixels, _ = pixel_tile(ocb, count, machine, pad_vectors=True)
        assert ocb % vectors == 0 and vectors * pixels >= 8, (ocb, vectors, pixels)
    vectors, _, _ = pixel_tile(13, 28, machine, pad_vectors=True)
    assert 13 % vectors and 14 % vectors == 0


SEVEN_WIDE = r"""
arch seven_wide
input 512x7x7
c: conv3-512
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_seven_wide_rows_are_tiled_whole_without_padded_blocks(cpu):
    """ResNet-18's and ResNet-50's 3×3 512→512 convs on 7×7 compute their 512 channels as
    they are (AVX-512 had taken 3×7 tiles in 33 padded blocks: 11 channel groups, which two
    threads share 6 to 5; 2×7 tiles in 32 blocks took 0.92× the time on two threads) and, on
    AVX-512, tile each 7-pixel row whole (`Machine.full_tile`); the build for this host
    matches PyTorch (checked once, under the host's width)."""
    from archdsl.backends.tvm.schedules.common import Machine
    from archdsl.backends.tvm.schedules.conv_blocked import pixel_tile
    arch = archdsl.load(SEVEN_WIDE)
    (conv,) = _blocked_convs(arch, cpu).values()
    assert int(conv.params[1].ty.shape[0]) == int(conv.params[-1].ty.shape[1]) == 512 // LANES[cpu]
    machine = _machine(cpu)
    if machine.broadcast_operand:
        assert pixel_tile(32, 7, machine, pad_vectors=True, reused=True) == (2, 7, 7)
        assert machine.full_tile == 14
    else:
        assert machine.full_tile == 8
    if Machine.of(backend.make_target("llvm")).lanes == machine.lanes:
        ref, state, x = _torch_run(arch, 2)
        _assert_close(backend.compile(arch.graph, weights=state, batch=2)(x), ref)


# A padded 3×3 conv on 28×28 (row order) and one on 7×7 (plane order, 512 channels).
PER_IMAGE = r"""
arch per_image
input 3x28x28
s: conv1-16
a: conv3-32
b: maxpool /4
c: conv3-512
"""


def _stage_loops(func, block: str) -> list:
    """The loops around `block` of a scheduled PrimFunc, outermost first, but the one that
    makes its parallel loops one launch of the thread pool (`launch.py`)."""
    sch = tvm.s_tir.Schedule(func)
    loops = [sch.get(loop) for loop in sch.get_loops(sch.get_sblock(block))]
    return [loop for loop in loops if LAUNCH not in loop.annotations]


@pytest.mark.parametrize("cpu", CPUS)
def test_padding_is_made_per_image_before_its_rows(cpu):
    """A conv by rows pads one image at a time, in parallel within it, and then computes
    that image's rows in parallel: the padded image is still in L2 when it is read (a
    whole batch's padded copy went to memory and back: ResNet-18 at batch 32 1.02–1.04×
    slower). A conv on a 7×7 plane keeps the images in its parallel loop. Both still match
    PyTorch with several images where the host runs them."""
    arch = archdsl.load(PER_IMAGE)
    padded = {int(f.params[0].ty.shape[2]): _stage_loops(f, "archdsl_pad")
              for _, f in _scheduled(arch, cpu, batch=3, winograd=False).functions_items()
              if isinstance(f, tvm.tirx.PrimFunc) and _has_block(f, "archdsl_pad")}
    assert sorted(padded) == [7, 28]
    kinds = tvm.tirx.ForKind
    rows, plane = padded[28], padded[7]
    assert int(rows[0].extent) == 3 and rows[0].kind == kinds.SERIAL
    assert rows[1].kind == kinds.PARALLEL and rows[-1].kind == kinds.VECTORIZED
    assert plane[0].kind == kinds.PARALLEL and int(plane[0].extent) % 3 == 0
    _check_where_the_host_runs(arch, cpu)


@pytest.mark.parametrize("cpu", CPUS)
def test_threads_take_whole_images_when_they_share_the_batch_evenly(cpu):
    """With the target's threads known (num-cores) and the batch a multiple of them, or at
    least four images a thread, the padded conv's image loop is the parallel one: each
    thread pads its own image and convolves it (nothing parallel within). Else, or with the
    threads unknown (another CPU's target names none), the images go one after another,
    each in parallel within. The 7×7 plane's conv keeps the images in its parallel loop."""
    arch = archdsl.load(PER_IMAGE)
    kinds = tvm.tirx.ForKind

    def stage(batch: int, cores: int | None):
        mod = _scheduled(arch, cpu, batch, winograd=False, cores=cores)
        (rows,) = [_stage_loops(f, "archdsl_pad") for _, f in mod.functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc) and _has_block(f, "archdsl_pad")
                   and int(f.params[0].ty.shape[2]) == 28]
        assert int(rows[0].extent) == batch
        return [loop.kind for loop in rows]

    for batch, cores in ((4, 2), (6, 3), (9, 2), (2, 1)):
        loops = stage(batch, cores)
        assert loops[0] == kinds.PARALLEL and kinds.PARALLEL not in loops[1:], (batch, cores)
        assert loops[-1] == kinds.VECTORIZED
    for batch, cores in ((3, 2), (7, 2), (4, 8), (32, None)):
        loops = stage(batch, cores)
        assert loops[0] == kinds.SERIAL and loops[1] == kinds.PARALLEL, (batch, cores)


def test_this_cpus_target_names_the_threads_it_will_run_on(monkeypatch):
    """`make_target("llvm")` carries the runtime's threads as num-cores (what the parallel
    loops are planned for; TVM_NUM_THREADS rules); another CPU's target carries none."""
    from archdsl.backends.tvm.runtime import physical_cores
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("TVM_NUM_THREADS", "3")
    assert int(backend.make_target("llvm").attrs["num-cores"]) == 3
    monkeypatch.delenv("TVM_NUM_THREADS")
    assert int(backend.make_target("llvm").attrs["num-cores"]) == physical_cores()
    assert "num-cores" not in backend.make_target(CPUS["avx2"]).attrs
    with pytest.raises(ValueError, match="num-cores 0"):
        backend.make_target({**CPUS["avx2"], "num-cores": 0})


# Convs onto a 22×22 plane (484 pixels: by rows), onto 11×11 ones (rows of 11 are computed
# 12 wide on either width), strided, dilated and with one window axis, and unpadded ones
# onto 9×9, 7×7 and 5×5 (rows of 7 are whole tiles of AVX-512's, 4×2 tiles compute them 8
# wide; 5: whole tiles on both).
FLAT_WINDOWS = r"""
arch flat_windows
input 3x44x44
defaults act=relu
s: conv3-32/2
a: conv3-32
b: conv3-64/2
c: conv3-64
d: conv3-64 dilation=2 pad=2
e: conv1x3-64
f: conv3-64 pad=0
g: conv3-24 pad=0
h: conv3-24 pad=0
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_convs_on_small_odd_planes_tile_the_flat_plane(cpu):
    """A conv with a window on a plane of up to 256 pixels whose rows would be computed
    wider than the flat plane would be tiles it as one flat axis of pixels, each reading its
    window at row p // OW and column p % OW (ResNet-18's 3×3 convs on 7×7 had rows of 7
    computed 8 wide; flat, 0.90–0.93× the time); planes whose rows are whole tiles keep
    them. Strided, dilated, one-axis and unpadded windows, at either width, still match
    PyTorch where the host runs them."""
    arch = archdsl.load(FLAT_WINDOWS)
    convs = _blocked_convs(arch, cpu, winograd=False).values()
    # AVX-512's rows of 9 and 11 are whole tiles (2×9, 2×11: a window's loads do not count
    # there, only work done in vain), and so are its rows of 7 (2×7, `Machine.full_tile`):
    # they stay rows
    expect = {"avx2": ([7, 9, 11, 11, 11, 11], [5, 22, 22]),
              "avx512": ([], [5, 7, 9, 11, 11, 11, 11, 22, 22])}[cpu]
    assert (_output_rows(convs, "archdsl_conv_flat_update"),
            _output_rows(convs, "archdsl_conv_blocked_update")) == expect
    _check_where_the_host_runs(arch, cpu)


# 1×1 convs onto a 17×17 plane (289 pixels, Inception v3's: flat) and a 21×21 one (441: rows)
POINTWISE_PLANES = r"""
arch pointwise_planes
input 40x21x21
defaults act=relu
a: conv1-48
b: conv3-40 pad=0
c: conv3-40 pad=0
d: conv1-48
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_pointwise_convs_tile_planes_up_to_17x17_flat(cpu):
    """A 1×1 conv onto a plane of up to `FLAT_PIXELS` (289: 17×17) tiles it as one flat
    axis of pixels on either width; onto a larger plane, by rows. Both match PyTorch where
    the host runs them."""
    arch = archdsl.load(POINTWISE_PLANES)
    convs = _blocked_convs(arch, cpu, winograd=False).values()

    from archdsl.backends.tvm.schedules.conv_blocked import FLAT_PIXELS
    assert FLAT_PIXELS == 17 * 17
    assert (_output_rows(convs, "archdsl_conv_flat_update", kernel_rows=1),
            _output_rows(convs, "archdsl_conv_blocked_update", kernel_rows=1)) == ([17], [21])
    _check_where_the_host_runs(arch, cpu)


# A 1×1 conv onto 56×56 whose rows AVX-512's 4×6 tiles compute 60 wide (7% in vain) and one
# whose 2×8 tiles divide them; AVX2's 4×2 tiles divide both
LARGE_POINTWISE = r"""
arch large_pointwise
input 64x56x56
defaults act=relu
a: conv1-64
b: conv1-32
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_pointwise_convs_tile_a_large_plane_flat_where_rows_waste(cpu):
    """A 1×1 stride-1 conv onto a plane beyond `FLAT_PIXELS` tiles it flat where its rows'
    tiles would compute at least `LARGE_FLAT_GAIN` more pixels in vain (AVX-512's 4×6 on
    rows of 56), each tile's epilogue right after the tile (not the plane's after the
    plane), the tiles in parallel spans so that one channel group still makes 8 parallel
    units on two cores; where the tiles divide the rows, it goes by rows. Both match
    PyTorch where the host runs them."""
    arch = archdsl.load(LARGE_POINTWISE)
    convs = _blocked_convs(arch, cpu, winograd=False, cores=2).values()
    flat = [f for f in convs if _has_block(f, "archdsl_conv_flat_update")]
    assert (len(flat), _output_rows(convs, "archdsl_conv_blocked_update")) == (
        {"avx512": (1, [56]), "avx2": (0, [56, 56])}[cpu])
    if flat:
        text = flat[0].script()
        assert "T.parallel(T.int64(8))" in text
        assert "for ax0, ax1 in T.grid(T.int64(4), T.int64(6))" in text  # a tile's epilogue
    _check_where_the_host_runs(arch, cpu)


ROWS_APART = r"""
arch rows_apart
input 64x24x24
c: conv1-128
g: conv1-128 groups=2
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_threads_sharing_an_image_take_bands_of_rows(cpu):
    """A dense conv by tiles goes over channel groups within rows (the parallel loop fuses
    image, row, channel group) where the target's threads share images — batch 1 or 3 on two
    threads — and over rows within channel groups otherwise (one thread, or whole images per
    thread); a grouped conv always by its groups (each reads inputs of its own)."""
    arch = archdsl.load(ROWS_APART)

    def parallel_loops(cores: int, batch: int) -> list[str]:
        return sorted(name for f in _blocked_convs(arch, cpu, batch, cores=cores).values()
                      for name in re.findall(r"for (\w+) in T\.parallel", f.script()))

    for cores, batch in ((2, 1), (2, 3)):
        assert parallel_loops(cores, batch) == ["b_o_0_y_fused", "b_y_o_0_fused"], (cores, batch)
    for cores, batch in ((1, 1), (1, 3), (2, 2)):
        assert parallel_loops(cores, batch) == ["b_o_0_y_fused"] * 2, (cores, batch)


def test_parallel_loops_are_race_free():
    """The same build on several threads (TVM's pool is sized once per process: a fresh one;
    TVM uses one thread on a 2-core machine unless told) gives what the unscheduled loops
    give: no two threads share a tile's partial sums or a plane."""
    script = f"""
import numpy as np
import archdsl
from archdsl.backends import tvm as backend
arch = archdsl.load({ODD_CONVS!r})
for batch in (1, 3, 4):  # images shared within (1 and 3 on 2 or 4 threads), each whole in a thread
    x = np.random.default_rng(0).standard_normal((batch, *arch.graph.input_shape), np.float32)
    fast = backend.compile(arch.graph, batch=batch)(x)
    naive = backend.compile(arch.graph, batch=batch, schedules=False)(x)
    assert np.abs(fast - naive).max() <= 1e-4 * np.abs(naive).max(), np.abs(fast - naive).max()
import tvm
print(tvm.runtime.num_threads())
"""
    threads = min(4, os.cpu_count() or 1)  # TVM caps its pool at the cores there are
    env = {**os.environ, "TVM_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.strip() == str(threads), done.stderr[-2000:]


@pytest.mark.parametrize("env,expect", [({}, "cores"), ({"OMP_NUM_THREADS": "1"}, "1")])
def test_compiled_models_run_on_every_core_unless_told(env, expect):
    """TVM's own default is half the logical CPUs (one thread on a 2-core VM); a Compiled
    starts the pool on every physical core, and TVM_NUM_THREADS / OMP_NUM_THREADS still rule."""
    script = """
import numpy as np
import tvm
import archdsl
from archdsl.backends import tvm as backend
from archdsl.backends.tvm import runtime as tvm_runtime
compiled = backend.compile(archdsl.load("arch t\\ninput 3x8x8\\nconv3-8 act=relu\\ngap").graph)
compiled(np.zeros(compiled.input_shape, np.float32))
print(tvm.runtime.num_threads(), tvm_runtime.physical_cores())
"""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**clean, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    threads, cores = done.stdout.split()
    assert 1 <= int(cores) <= (os.cpu_count() or 1)
    assert threads == (cores if expect == "cores" else expect)


@pytest.mark.parametrize("cpu", CPUS)
def test_weights_beyond_half_of_l1_are_read_once_per_row_or_plane(cpu):
    """A conv whose channel group's weights would not stay in L1 across its tiles reads each
    chunk of input blocks once per row, or once per plane when the plane's partial sums fit
    in half of L1 (ResNet-50's 3×3 512→512 on 7×7), in chunks whose weights stay in L1; one
    whose group's weights fit keeps each tile's whole reduction in registers, as does every
    1×1 conv by rows on AVX-512; a windowed one by rows goes by bands of rows there."""
    from archdsl.backends.tvm.schedules.conv_blocked import plan_conv

    def plan(oc, ic, k, size):
        return _conv_plan(cpu, oc, ic, k, size)

    rows = "row" if cpu == "avx2" else "band"
    assert plan(512, 512, 3, 7).order == "plane"
    assert plan(128, 128, 3, 28).order == rows  # the plane's sums: 100 KB on AVX2
    assert plan(64, 64, 3, 56).order == rows
    wide = plan(128, 512, 1, 28)
    assert plan(256, 64, 1, 56).order == "tile" and plan(16, 16, 3, 56).order == "tile"
    machine = _machine(cpu)
    b = machine.lanes  # a flat 1×1 conv of 512 → 256 on 14×14
    flat = plan_conv(machine, 256 // b, 196, b, (512 // b, 1, 1, b), True)
    if cpu == "avx2":  # 4 blocks of 1 KB (32 channels) a chunk; a flat plane by chunks
        assert wide.order == "row" and wide.chunk == 4
        assert flat.order == "plane" and not flat.spans
        return
    # AVX-512: a 1×1 conv by rows keeps each tile's whole reduction in registers, and so
    # does a flat one of at least 8 tiles, each tile's epilogue after it (parallel spans)
    assert wide.order == "tile" and (flat.order, flat.chunk, flat.spans > 0) == ("tile", 1, True)
    # a chunk's weights: ⅔ of L1, 8 blocks of 4 KB (128 channels) on a 48 KB L1, read once
    # per plane by a flat 1×1 conv of fewer tiles; a 3×3 conv's 36 KB are a chunk by themselves
    spr = _machine("sapphirerapids")
    few = plan_conv(spr, 8, 4, 16, (32, 1, 1, 16), True)
    assert few.order == "plane" and few.chunk == 8 and not few.spans
    assert plan_conv(spr, 8, 28, 16, (32, 3, 3, 16), False, 28).chunk == 1


def test_weights_beyond_l2_are_read_once_per_plane():
    """A conv whose channel group's weights overflow the target core's L2 would read them
    from L3 again for every row: it goes by plane when the plane's partial sums fit in half
    of L2 (VGG-16's 3×3 512→512 on 28×28 and 14×14), by rows when they do not, and by rows
    when the weights fit in L2 (256 KB on Haswell, 512 KB on Zen 3, 1 MB on Zen 4; by bands
    of rows on AVX-512)."""
    def order(cpu, oc, ic, size):
        return _conv_plan(cpu, oc, ic, 3, size).order

    assert {cpu: _machine(cpu).l2 // 1024 for cpu in ("haswell", "znver3", "znver4")} == {
        "haswell": 256, "znver3": 512, "znver4": 1024}
    # a group of 4 weight vectors: 295 KB of weights for 256 input channels on AVX2
    assert [order("haswell", 256, 256, 14), order("znver3", 256, 256, 14)] == ["plane", "row"]
    # on Zen 4, 512→512 on 14×14 takes 2×14 tiles, whose group's weights (590 KB) fit in L2
    assert [order("znver3", 512, 512, 14), order("znver3", 512, 512, 28),
            order("znver4", 512, 512, 28), order("znver4", 512, 512, 14)
            ] == ["plane"] * 3 + ["band"]
    assert order("znver3", 512, 512, 56) == "row"  # its sums: 400 KB


def test_windowed_convs_go_by_bands_on_avx512():
    """On AVX-512 a windowed conv that would go by rows reads each chunk's weights once per
    band of rows: the most rows (dividing the output's) whose partial sums fit in half of the
    core's L2 with at least 8 parallel units (channel groups × bands) left; AVX2 keeps rows.
    The loop nest has the chunks outside the band's rows, the band inside the parallel loop,
    and the result is the conv's (where the host runs the target)."""
    def plan(cpu, oc, ic, size, blocks=None):
        return _conv_plan(cpu, oc, ic, 3, size, blocks)

    # 64 → 64 on 224×224: one group of 4 vectors, 57 KB of sums a row; half of Sapphire
    # Rapids' 2 MB L2 holds 17 rows, 16 divide 224: 14 bands
    assert plan("sapphirerapids", 64, 64, 224).band == 16
    # 14 KB a row on 56×56: 28 rows fit, but one group needs 8 bands of 7 rows
    assert plan("sapphirerapids", 64, 64, 56).band == 7
    # 128 → 128 on 56×56 in 2 groups: 4 bands of 14 rows
    assert plan("sapphirerapids", 128, 64, 56).band == 14
    # 512 → 512 on 28×28: 8 groups, the whole plane's 200 KB of sums a band
    assert plan("sapphirerapids", 512, 512, 28).band == 28
    # a grouped conv's groups are counted over all of its output blocks (4 groups here)
    assert plan("sapphirerapids", 64, 64, 56, blocks=16).band == 28
    assert plan("haswell", 64, 64, 224).order == "row"

    # one group on 16×16 (Zen 4): 8 bands of 2 rows
    arch = archdsl.load("arch band\ninput 64x16x16\nc1: conv3-64 norm=bn act=relu\n")
    (func,) = _blocked_convs(arch, "avx512", winograd=False).values()
    lines = func.script().splitlines()
    assert any("T.parallel(T.int64(8))" in line for line in lines)
    # the chunks before the last (3 of one input block), then the band's 2 rows, then the
    # row's 4 tiles, then the chunk's window
    update = next(i for i, line in enumerate(lines) if 'sblock("archdsl_conv_blocked_update")'
                  in line)
    grid = next(line for line in reversed(lines[:update]) if "T.grid(" in line)
    assert re.findall(r"T\.int64\((\d+)\)", grid)[:3] == ["3", "2", "4"]
    _check_where_the_host_runs(arch, "avx512")
    # this host's build (by bands where the host has AVX-512) equals PyTorch at batch 2
    ref, state, x = _torch_run(arch, 2)
    _assert_close(backend.compile(arch.graph, target="llvm", weights=state, batch=2)(x), ref)


def test_the_last_chunk_is_reduced_with_the_epilogue():
    """A conv by chunks of input blocks (rows, bands, its plane) reduces its last chunk apart
    (`blocked.TAIL`), tile by tile in registers, each tile's epilogue right after it: no
    pass over the partial sums after the last chunk. Not a conv that goes by tiles, has one
    chunk, or computes rows wider or output blocks padded (the epilogue's tiles would not be
    the conv's). The result is the conv's on both widths (where the host runs them)."""
    from archdsl.backends.tvm.schedules.conv_blocked import tail_blocks

    def tail(cpu, oc, ic, k, size, width=None, blocks=None):
        machine = _machine(cpu)
        b = machine.lanes
        computed = blocks or oc // b
        return tail_blocks(machine, (computed, ic // b, k, k, b, b), (size, size),
                           width or size, 1, oc // b)

    assert tail("avx512", 64, 64, 3, 56) == 1  # by bands, a 3×3 block per chunk
    assert tail("avx2", 64, 64, 3, 56) == 1  # by rows
    assert tail("avx512", 64, 16, 3, 56) == 0  # one input block: one chunk
    assert tail("avx512", 256, 256, 1, 56) == 0  # a 1×1 conv on AVX-512 goes by tiles
    assert tail("avx512", 64, 64, 3, 56, width=60) == 0
    assert tail("avx512", 64, 64, 3, 56, blocks=5) == 0

    arch = archdsl.load("arch tail\ninput 32x14x14\nc1: conv3-64 norm=bn act=relu\n"
                        "c2: conv3-64 norm=bn act=relu\n")
    for cpu in CPUS:
        funcs = _blocked_convs(arch, cpu, winograd=False)
        assert len(funcs) == 2
        for func in funcs.values():
            lines = func.script().splitlines()
            assert any('scope="local"' in line and "archdsl_tail_conv" in line
                       for line in lines)
            # the tail and the epilogue share a loop that the head's sums are not under
            # (the tile's), the epilogue after the tail
            tail, epilogue, head = (
                next(i for i, line in enumerate(lines) if f'sblock("{name}")' in line)
                for name in ("archdsl_tail_conv_update", "compute",
                             "archdsl_conv_blocked_update"))
            shared = max(set(_loops_around(lines, tail)) & set(_loops_around(lines, epilogue)))
            assert shared not in _loops_around(lines, head) and tail < epilogue
        _check_where_the_host_runs(arch, cpu)


def _loops_around(lines: list[str], index: int) -> list[int]:
    """The lines of the loops around line `index` of a TVMScript."""
    found, depth = [], len(lines[index]) - len(lines[index].lstrip())
    for i in range(index - 1, -1, -1):
        indent = len(lines[i]) - len(lines[i].lstrip())
        if indent < depth and lines[i].strip():
            depth = indent
            if lines[i].strip().startswith("for "):
                found.append(i)
    return found


def test_l1_is_the_target_cores():
    """Half of the target core's L1 data cache bounds a group's weights for the *tile* order:
    48 KB on Zen 5 and Intel cores since Ice Lake, 32 KB on Zen 4 and Haswell, named by the
    target, not read from the host; two thirds of it bound a chunk of input blocks by rows. A
    3×3 conv of 32 → 16 channels in AVX-512 blocks has 18 KB of weights: whole tiles on Zen 5;
    on Zen 4 too, its two input blocks being one chunk (by rows, its partial sums would only
    make one more pass for the epilogue). One of 48 → 16 (27 KB): one chunk on Zen 5, whole
    tiles; three chunks on Zen 4, by bands of rows. A flat 1×1 conv whose inputs are one
    chunk goes by tiles too, not by its plane; one of more chunks by its plane if it has
    fewer than 8 tiles."""
    from archdsl.backends.tvm.schedules.conv_blocked import plan_conv
    machines = {cpu: _machine(cpu)
                for cpu in ("haswell", "znver4", "znver5", "icelake-server", "sapphirerapids")}
    assert {cpu: m.l1d // 1024 for cpu, m in machines.items()} == {
        "haswell": 32, "znver4": 32, "znver5": 48, "icelake-server": 48, "sapphirerapids": 48}
    def orders(blocks: int) -> dict:
        return {cpu: plan_conv(machines[cpu], 1, 56, 16, (blocks, 3, 3, 16), False, 56).order
                for cpu in ("znver4", "znver5")}

    assert orders(2) == {"znver4": "tile", "znver5": "tile"}
    assert orders(3) == {"znver4": "band", "znver5": "tile"}
    # a flat 1×1 conv of 80 → 480 channels on 14×14 (MNASNet's): 5 input blocks, one chunk
    flat = {cpu: plan_conv(machines[cpu], 30, 196, 16, (5, 1, 1, 16), True).order
            for cpu in ("znver5", "sapphirerapids")}
    assert flat == {"znver5": "tile", "sapphirerapids": "tile"}
    # one of 40 input blocks: by its plane where the plane makes fewer than 8 tiles (2×2),
    # else by tiles, each tile's epilogue after it
    assert plan_conv(machines["znver5"], 30, 4, 16, (40, 1, 1, 16), True).order == "plane"
    assert plan_conv(machines["znver5"], 30, 196, 16, (40, 1, 1, 16), True).spans > 0


def test_tiles_weigh_broadcasts():
    """Where an FMA cannot take its broadcast from memory (AVX2), a broadcast of a blocked
    input counts as 1.5 loads: 4 vectors × 2 pixels (a broadcast feeds 4 FMAs) over 2 × 5 for
    rows of 112 pixels and flat planes of 196 and 49, while an unblocked input's (an RGB
    stem's) row keeps 2 × 5. A flat 1×1 conv's channel groups each read a chunk of its inputs
    again: where those chunks overflow half of L1, a broadcast counts twice more (10 output
    blocks on 14×14: 2 × 4 over 2 × 5); never one pixel (80 ← 480 channels: it would load a
    weight per FMA). AVX-512's broadcasts are FMA operands: its tiles do not change for an
    unblocked input's window (beyond the stems' few pixels, below), nor with its flat planes'
    chunks (which the FMAs read from L2 as well)."""
    from archdsl.backends.tvm.schedules.common import Machine
    from archdsl.backends.tvm.schedules.conv_blocked import pixel_tile
    avx2, avx512 = (Machine.of(backend.make_target(CPUS[c])) for c in ("avx2", "avx512"))
    assert pixel_tile(128, 196, avx2) == (4, 2, 196)
    assert pixel_tile(256, 49, avx2) == (4, 2, 50)
    assert pixel_tile(8, 112, avx2) == (4, 2, 112)
    assert pixel_tile(8, 112, avx2, unblocked=True) == (2, 5, 115)
    assert pixel_tile(10, 196, avx2) == (2, 5, 200)
    assert pixel_tile(10, 196, avx2, 16) == (2, 4, 196)
    assert pixel_tile(10, 196, avx2, 60)[1] > 1
    assert (pixel_tile(4, 112, avx512, reused=True)
            == pixel_tile(4, 112, avx512, unblocked=True, reused=True))
    assert pixel_tile(64, 196, avx512, 16) == pixel_tile(64, 196, avx512)
    # SqueezeNet 1.1's 512→1000 on 13×13: 9 × 2 had the chunks counted (41.8 ms, 3 × 9 33.6)
    squeeze = pixel_tile(63, 169, avx512, 32, pad_vectors=True)
    assert squeeze == pixel_tile(63, 169, avx512, pad_vectors=True) and squeeze[1] > 2



def test_avx512_window_tiles_weigh_work_in_vain_not_loads():
    """Where a conv's window reuses every input from L1 and FMAs take their broadcast from
    memory (AVX-512), a tile of at most 0.55 loads per FMA waits on its FMAs: rows of 56 and
    112 take 4 × 4 tiles, whole (4 × 6 computed them 60 and 114 wide), a 1×1 conv's row
    (inputs streamed once) keeps 4 × 6 over 60, AVX2 keeps its 4 × 2. AVX-512 tiles hold 16
    accumulators at least: rows of 14 go 2 × 14 (or 4 × 5 over 15), never 2 × 7."""
    from archdsl.backends.tvm.schedules.common import Machine
    from archdsl.backends.tvm.schedules.conv_blocked import pixel_tile
    avx2, avx512 = (Machine.of(backend.make_target(CPUS[c])) for c in ("avx2", "avx512"))
    assert pixel_tile(4, 56, avx512, reused=True) == (4, 4, 56)
    assert pixel_tile(4, 112, avx512, unblocked=True, reused=True) == (4, 4, 112)
    assert pixel_tile(4, 56, avx512) == (4, 6, 60)
    assert pixel_tile(8, 56, avx2, reused=True) == pixel_tile(8, 56, avx2) == (4, 2, 56)
    for blocks in (16, 32):
        vectors, pixels, _ = pixel_tile(blocks, 14, avx512, reused=True)
        assert vectors * pixels >= 16 and (vectors, pixels) in {(2, 14), (4, 5)}

def test_one_vector_tiles_take_few_pixels():
    """A tile of one weight vector (a conv to 16 channels on AVX-512) feeds each broadcast to
    one FMA: it takes at most 8 pixels (SqueezeNet 1.1's 128→16 1×1 conv on rows of 55 took
    1 × 28 over 56 and ran 1.7× slower than 1 × 8), the fewest loads per FMA among those,
    for a 1×1 conv's rows, a windowed conv's (RegNetY's grouped 3×3 convs of one block a
    group) and an RGB stem's. A 1×1 conv's tile of two vectors (each broadcast feeding two
    FMAs, streamed once) takes at most 8 too; a windowed conv's keeps its longer rows (2 × 14)."""
    from archdsl.backends.tvm.schedules.common import Machine
    from archdsl.backends.tvm.schedules.conv_blocked import pixel_tile
    avx512 = Machine.of(backend.make_target(CPUS["avx512"]))
    assert pixel_tile(1, 55, avx512) == (1, 8, 56)
    assert pixel_tile(1, 112, avx512) == (1, 8, 112)
    assert pixel_tile(1, 112, avx512, unblocked=True, reused=True) == (1, 8, 112)
    assert pixel_tile(1, 28, avx512, reused=True) == (1, 7, 28)
    for count in (14, 27, 56, 169):
        vectors, pixels, padded = pixel_tile(1, count, avx512, reused=count < 100)
        assert vectors == 1 and 2 <= pixels <= 8 and padded % pixels == 0 and padded >= count
    assert pixel_tile(2, 14, avx512, reused=True) == (2, 14, 14)
    # nor a 1×1 conv's of two vectors (MNASNet's 80 → 24 on 56×56: 2 × 14 before)
    assert pixel_tile(2, 56, avx512) == (2, 8, 56) and pixel_tile(2, 28, avx512) == (2, 7, 28)


def test_avx512_stem_tiles_take_few_pixels():
    """An unblocked input's tile (an RGB stem, its window's columns unrolled) takes at most 4
    pixels on AVX-512 (MobileNetV2's 3×3/2 3→32 stem at batch 32 ran 1.6–2.0× slower in
    2 × 14 tiles than in 2 × 4); AVX2's stems keep theirs."""
    from archdsl.backends.tvm.schedules.common import Machine
    from archdsl.backends.tvm.schedules.conv_blocked import pixel_tile
    avx2, avx512 = (Machine.of(backend.make_target(CPUS[c])) for c in ("avx2", "avx512"))
    assert pixel_tile(2, 112, avx512, unblocked=True, reused=True) == (2, 4, 112)
    assert pixel_tile(2, 112, avx512, reused=True)[1] > 4
    assert pixel_tile(4, 112, avx512, unblocked=True, reused=True) == (4, 4, 112)
    assert pixel_tile(8, 112, avx2, unblocked=True) == (2, 5, 115)


FLAT_WIDE_INPUTS = r"""
arch flat_wide_inputs
input 256x12x12
defaults norm=bn act=relu
c1: conv1-64
c2: conv1-256
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_flat_convs_of_many_inputs_match_pytorch(cpu):
    """1×1 convs on a 12×12 plane (flat) whose inputs overflow half of L1 per chunk on AVX2
    (the 4 × 2 tiles above) compute what PyTorch computes, built for either width."""
    arch = archdsl.load(FLAT_WIDE_INPUTS)
    ref, state, x = _torch_run(arch, 2)
    compiled = backend.compile(arch.graph, target=CPUS[cpu], weights=state, batch=2)
    if _host_runs(CPUS[cpu]):
        _assert_close(compiled(x), ref)


# Max and average pools with padding (a 3×3/2 max pool as ResNet's, an inception branch's 3×3/1
# max pool, a 3×3/1 average pool that counts its padding), and one without.
PADDED_POOLS = r"""
arch padded_pools
input 3x24x24
defaults act=relu
c: conv3-32
p: maxpool3/2 pad=1
q: maxpool3/1 pad=1
r: avgpool3/1 pad=1
s: maxpool2/2
"""


@pytest.mark.parametrize("cpu", CPUS)
def test_pools_read_their_padding_in_place(cpu):
    """A padded pool reads its input where it is, a window element outside the plane being
    the padding value: no padded copy is made (ResNet-18's 3×3/2 max pool alone 0.55× the
    time at batch 32, one thread). Each still matches PyTorch where the host runs it."""
    arch = archdsl.load(PADDED_POOLS)
    pools = [f for _, f in _scheduled(arch, cpu, batch=2).functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and schedules.scheduled_by(f) == "pool"
             and len(f.params[0].ty.shape) == 5 and int(f.params[-1].ty.shape[-2]) > 1]
    assert len(pools) >= 3
    for f in pools:  # no padded copy (an average's sum before its division: yes)
        allocs = [line for line in f.script().splitlines() if "alloc_buffer" in line]
        assert not [a for a in allocs if "pad" in a], allocs
    _check_where_the_host_runs(arch, cpu)

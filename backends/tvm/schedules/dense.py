"""Dense (FC) layers, and linear layers over tokens (leading axes: batch × tokens): weights
repacked to blocks of output columns, a tile of rows × one vector block in registers; with
several tiles of rows (a batch), the reduction in chunks that every row tile reads from L1
(`dense`)."""

from __future__ import annotations

import math

import numpy as np

from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Machine,
    Plan,
    constant_read,
    divisors,
    epilogue_at,
    epilogue_of,
    extent,
    indexed_by,
    one_reduction,
    prefetch_next,
    split_tail,
    vector_lanes,
)

__all__ = ["dense", "row_tile"]


def dense(k: Kernel) -> Plan | None:
    """y[..., i, j] = sum_k x[..., i, k]·w[k, j] with w constant (the FC lowering
    pre-transposes it; the leading axes, a transformer's batch of token sequences, are rows
    too): w repacked to (N/vo)·K·vo, a tile of rows × vo columns in registers, parallel over
    column blocks (and row blocks). With more rows than a tile and enough column blocks to
    share (`_k_chunk`), each column block's reduction goes in chunks, every row tile over
    each chunk: the block's weights are read once, not once per row tile, its sums stay in
    L1 between chunks; with an input over half of L2, a thread takes a group of column
    blocks through each chunk in turn (`_group`), the input's chunk staying in L2. The
    weights come from memory (a network's are read once a run, never in cache): each row
    tile prefetches its share of the next chunk's, which the first row tile would otherwise
    wait for line by line. ViT-B/16's linear layers alone, one thread, caches flushed before
    each call (`time_evaluator`'s `cache_flush_cpu_non_first_arg`), best runs: Q/K/V
    1.69 → 1.52 ms, the MLP's 6.73 → 6.00–6.03 and 6.63–6.69 → 6.05–6.12 (with caches warm,
    1.44 both ways); the network 0.91× the time on one thread, 0.92× on two (interleaved
    builds, paired runs). In a group the next block's share of the chunk is what comes next
    and is prefetched instead: the block's own next chunk, read after the whole group, had
    been let go by an L2 holding the group's sums (Zen 3, two threads, in the network's runs:
    ViT-B/16's linear layers 192.7–195.1 → 182.6–192.4 ms, its first MLP layer 5.5 → 5.1–5.35
    ms a call; VGG-16's FCs at batch 32 53.8–57.7 → 46.5–48.9 ms; the ViT 0.99× on one thread,
    interleaved builds)."""
    found = one_reduction(k, "SS+R")
    if found is None:
        return None
    sch, blocks, mm = found
    stmt = sch.get(mm)
    *lead, j, r = (iv.var for iv in stmt.iter_vars)
    weight = constant_read(k, stmt, (r, j))
    if weight is None or not indexed_by(stmt.reads[1 - weight[0]], (*lead, r)):
        return None
    w_read, w_param = weight
    lanes = vector_lanes(k.target)
    # a tile's rows are of the last leading axis (a token's): the epilogue, computed per
    # tile, then covers a box of the output (rows of several images fused would not be one)
    rows, cols = extent(sch, mm, len(lead) - 1), extent(sch, mm, len(lead))
    images = math.prod(extent(sch, mm, d) for d in range(len(lead) - 1))
    vo = next((v * lanes for v in (2, 1) if cols % (v * lanes) == 0), None)
    if vo is None:
        return None
    ti = row_tile(rows, lanes, vo)
    for block in blocks[:blocks.index(mm)]:
        sch.compute_inline(block)
    epilogue = epilogue_of(sch, blocks, mm)
    sch.transform_layout(mm, ("read", w_read), lambda kk, n: (n // vo, kk, n % vo))
    sch.transform_layout(mm, ("write", 0), lambda *m: (m[-1] // vo, *m[:-1], m[-1] % vo))
    weights = sch.get(mm).reads[w_read].source
    *outer, li, lj, lk = sch.get_loops(mm)
    jo, ji = sch.split(lj, [None, vo])
    io, ii = sch.split(li, [None, ti])
    machine, depth = Machine.of(k.target), extent(sch, mm, len(lead) + 1)
    chunk = _k_chunk(machine, images * -(-rows // ti), cols // vo, depth, vo)
    # an input over half of L2 is read per column block from further out: a thread's share
    # of the column blocks goes chunk by chunk instead, the input's chunk read from L2
    group = (_group(machine, cols // vo)
             if chunk and images * rows * depth * 4 > machine.l2 // 2 else 1)
    # a last row tile cut short is split from the whole ones (`split_tail`) unless the
    # threads share the row tiles too (too few column blocks × images without them)
    apart = bool(rows % ti) and bool(chunk or cols // vo * images >= _MIN_COLUMN_BLOCKS)
    if chunk:
        # what a row tile prefetches: its share of what the weights' next read takes — the
        # next chunk of the block, or in a group, the next block's share of this chunk
        ko, ki = sch.split(lk, [None, chunk])
        if group > 1:
            jo, jj = sch.split(jo, [None, group])
            sch.reorder(jo, ko, jj, *outer, io, ki, ii, ji)
            after = (jj, chunk * vo)
        else:
            sch.reorder(jo, ko, *outer, io, ki, ii, ji)
            after = (ki, vo)
        sch.parallel(jo)
        lk = ko
    else:
        sch.reorder(jo, *outer, io, lk, ii, ji)
        sch.parallel(sch.fuse(jo, *outer) if apart else sch.fuse(jo, *outer, io))
    epilogue_at(sch, epilogue, sch.get_loops(mm)[0], lanes)
    sch.vectorize(ji)
    sch.unroll(ii)
    sch.decompose_reduction(mm, lk)
    packs = {w_param: lambda w: _pack_kn(w, vo)}
    tiles = sch.get(io).loop_var if apart else None
    func = prefetch_next(sch, mm, weights, io, *after) if chunk else sch.mod["main"]
    if apart:  # the whole tiles without the last one's predicate, which LLVM does not
        # always unswitch (with the prefetch in the row tiles' loop a row's sums spilled:
        # 1.7x; Swin-T's window attention, 64 windows of 49 tokens in tiles of 6 over 96
        # columns, alone, one thread: 1.52 -> 0.68 ms)
        func = split_tail(func, tiles, rows // ti)
    return Plan(func, packs)


def _group(machine: Machine, blocks: int) -> int:
    """The column blocks of a group, the groups parallel and each a thread's to go through
    chunk by chunk: as many as leave a group per thread (8 groups where the target does not
    say its threads). ViT-B/16's second MLP layer (197 × 3072 inputs, 2.4 MB) read its input
    from L3 once per column block: batch 1, interleaved builds, the network 0.93× the time on
    one thread, 0.92× by best runs on two (149 against 162 ms); groups wherever a dense layer
    is chunked, 0.95× and 0.91×."""
    share = machine.threads or 8
    return max(d for d in divisors(blocks) if blocks // d >= share)


def row_tile(rows: int, lanes: int, vo: int) -> int:
    """A register tile's rows over `vo` columns (12 vectors of `lanes` accumulators at most):
    the most that divide the `rows`, or where those are under half the tile (197 tokens:
    one), a whole tile, the last one cut short (TVM's predicate): ViT-B/16's linear layers
    at batch 1 on two threads, alone, took 0.52x the time of one-row tiles."""
    tile = min(rows, 12 * lanes // vo)
    ti = max(d for d in range(1, tile + 1) if rows % d == 0)
    return tile if 2 * ti <= tile else ti


_MIN_CHUNK = 32  # reduction steps of a chunk at least (fewer: the loop overhead shows)
_MIN_COLUMN_BLOCKS = 16  # column blocks a chunked FC keeps to share among the threads


def _k_chunk(machine: Machine, row_tiles: int, column_blocks: int, depth: int, vo: int) -> int:
    """The reduction steps of a chunk of a dense layer with `row_tiles` tiles of rows (0: not
    chunked): the most that divide the `depth` with a chunk's weights (`vo` columns) in a
    quarter of L1 — the row tiles read them from there, each row's inputs of the chunk and
    the block's sums sharing the rest. Not for one row tile (nothing to share), nor with
    fewer than `_MIN_COLUMN_BLOCKS` column blocks (the threads share those alone). Row tiles
    over the whole reduction read each column block's weights once per tile, from memory
    when they overflow L2: VGG-16's FC 25088→4096 at batch 32 (411 MB of weights, 8 row
    tiles), one thread, alone: 153 ms → 69–71 (chunks of 64, 128 or 256); whole network
    (interleaved builds, AVX-512 Xeon): 0.98× the time on one thread, 0.976× on two; AVX2
    code (`-mcpu=haswell`, same host) 0.994×. ResNet-50's 2048→1000 and MobileNetV2's
    1280→1000 at batch 32 alone 0.97–1.0×, their networks within ±0.5%."""
    if row_tiles < 2 or column_blocks < _MIN_COLUMN_BLOCKS:
        return 0
    fits = [d for d in range(_MIN_CHUNK, depth) if depth % d == 0
            and d * vo * 4 <= machine.l1d // 4]
    return max(fits, default=0)


def _pack_kn(w: np.ndarray, vo: int) -> np.ndarray:
    """K·N → (N/vo)·K·vo: each block of `vo` columns contiguous."""
    return w.reshape(w.shape[0], w.shape[1] // vo, vo).transpose(1, 0, 2)

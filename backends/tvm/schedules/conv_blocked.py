"""The rule for convolutions on channel-blocked activations (`blocked.conv2d`, and the flat
`blocked.flat_conv2d` of convs on small planes): register tiles of V output-channel
vectors × P pixels, sized by the target's registers (`register_tile`, `pixel_tile`).

Loop nest (outermost first), by how much the reduction is worth blocking:
- *tile*: image, channel group, row, tile → the whole reduction → the tile. When one channel
  group's weights fit in half of L1 (an RGB stem, a 1×1 conv of up to 128 channels on AVX2):
  they stay there across the tiles, and each tile's accumulators stay in registers throughout.
  So does a conv whose input blocks make one chunk of the *row* order (`_chunk`): its weights
  would stay in L1 along the row all the same, and the row's partial sums only went to L1 and
  back once more for the epilogue (the plane's, by *plane*). SqueezeNet 1.1's 3×3 16→64
  convs on 55×55 (one input block, 36 KB of weights a group, AVX-512 bands before), one
  thread, alone: 0.81× the time at batch 32, 0.92× at batch 1; MNASNet's flat 1×1 80→480 on
  14×14 (by plane before) 0.92× at batch 1 and 32; whole networks (interleaved builds):
  SqueezeNet 1.1 0.97× at batch 1 and 0.98× at 32, MNASNet, ResNet-18 and RegNetY-400MF
  within ±1%. When the threads share an image (`_shared_images`: batch 1 on two threads),
  a dense conv's rows go outside the channel groups (image, row, channel group, tile; a
  grouped conv's groups each read inputs of their own, and stay outside: RegNetY-400MF took
  1.01–1.02× the time with them apart too, 0.99–1.0× without; ResNeXt-50 0.92–0.93×): each thread
  takes a band of the rows with every channel group and reads that band of the input; by
  channel groups each thread read the whole input, which the layer before had left half in
  each core's L2 (the likely cause: ResNet-50's 512→128 1×1 conv on 28×28 took 0.53 ms in
  the network on two threads, as on one, and 0.27 alone). Whole networks, two threads,
  batch 1, interleaved builds (AVX-512 Xeon), median (best runs): ResNet-50 0.90× (0.95×),
  0.97× (0.96×) and 0.97×, MobileNet v1 0.94× (0.96×) and 0.95× (0.95×), ResNet-18 0.98×
  (1.0×), EfficientNet-B0 0.99× (0.99×), MobileNetV2 1.09× (1.02×) and 1.0× (1.01×); AVX2
  code (`-mcpu=haswell`, same host): ResNet-50 1.0× (0.985×), MobileNet v1 0.96× (0.98×).
  The *row* and *band* orders by rows outside the channel groups too: ResNet-50 0.955×
  and 0.99×, ResNet-18 0.98×, Inception v3 0.99× (best runs 1.08×) — not taken.
- *row*: image, channel group, row → a chunk of input blocks → every tile of the row → K×K
  window → tile. Weights beyond half of L1 are read once per row, not once per tile; the
  chunk's weights (`_chunk`: 4 KB at most with AVX2, two thirds of L1 with AVX-512) stay in
  L1 along the row, the row's partial sums too. Not for 1×1 convs with AVX-512: they take
  the *tile* order whatever their weights (which then stream from L2 for every tile, behind
  its 16-lane FMAs), each tile's sums kept in registers and its epilogue applied as it is
  stored, where by rows the row's sums went to L1 and back for every chunk and once more
  for the epilogue. MobileNet v1's 128→128 on 56×56 at batch 32, 4×6 tiles: 30.9 → 23.6 ms
  (ONNX Runtime 20.8), 128→256 on 28×28 14.3 → 10.6, 256→256 on 28×28 25.1 → 22.5; whole
  networks at batch 32 (one thread, interleaved builds, AVX-512 Xeon): MobileNet v1 0.97×
  the time, ResNet-50 0.98×, DenseNet-121 0.97×, at batch 1 and MobileNetV2, EfficientNet-B0
  and MNASNet within ±1.5%. Flat 1×1 convs by *plane* stayed ahead of *tile* (1.02–1.05×)
  while a flat tile's epilogue went after the plane; with it after each tile they go by
  *tile* on AVX-512 (below).
- *band*: image, channel group, band of rows → a chunk of input blocks → every row of the
  band → every tile of the row → K×K window → tile. A windowed conv by rows on AVX-512:
  the chunk's weights stay in L1 across the band's rows (read once per band, not per row),
  the band's partial sums in L2 (`_band`).
- *plane*: image, channel group → a chunk of input blocks → every tile of the plane (flat
  convs but AVX-512's 1×1 ones of 8 tiles and up, and any conv of the *row* kind whose
  plane's partial sums fit in half of L1, a 3×3 conv on 7×7 in AVX-512's 7-pixel tiles,
  when a group's weights overflow half of L1; and one whose group's weights overflow the
  core's L2, which by rows would come from L3 again for every row, when its plane's partial
  sums fit in half of L2). The group's weights are
  read once per image. VGG-16's 3×3 512→512 convs on AVX2 (4 weight vectors a group: 590
  KB), one thread, kernels alone, interleaved: on 28×28 0.95–0.97× the time by rows, on 14×14
  0.88–0.91×, at batch 1 and 32; its 256→512 on 28×28 (295 KB, within Zen 3's 512 KB of L2)
  was 1.06× slower by plane at batch 32.
A flat conv's tiles run over its output plane as one axis of pixels: a 1×1 conv's on planes
of up to `FLAT_PIXELS`, and a conv with a window on such a plane when its rows would be
computed wider than the flat plane (`blocking._flat_plane`: rows of 7 are 8 wide with 4×2
tiles; 49 pixels as 25 tiles of 2 are 50). Each pixel reads its window at row p // OW and
column p % OW: ResNet-18's three 3×3 convs on 7×7, one thread, 0.93× the time in sum at
batch 1 and 0.91× at 32, ResNet-50's 0.88–0.89×, SqueezeNet 1.1's on 13×13 0.92–0.99×.
A 1×1 stride-1 conv's larger plane is flat too where its rows' tiles would compute at least
`LARGE_FLAT_GAIN` (5%) more pixels in vain than the flat plane's (AVX-512's 4×6 tiles make
rows of 56 and 28 60 and 30 wide): in the *tile* order, each tile's epilogue right after it
(by *plane*, a flat conv's goes after the plane), the tiles in parallel spans (`_spans`) — as
ONNX Runtime's NCHWc 1×1 kernel, whose 4×6 tiles run on across rows. ResNeXt-50's 128→256 on
56×56 with its residual, one thread, alone: by rows 2.13 ms, flat 2.00, a C loop of the
same tiles 1.90 (2.0 and 1.93 on the same buffers, interleaved). AVX-512 Zen 4, two threads,
kernels alone (interleaved, shared inputs): the 1×1 convs it changes 0.91–0.96× the time
(their sum 0.93–0.945) in ResNet-50 at batch 1 and 0.78–1.0× (0.92) at batch 32, MobileNet
v1's 0.90–0.98× at both, ResNeXt-50's, DenseNet-121's and GoogLeNet's 0.94–0.96× in sum,
RegNetY-400MF's 1.02× (0.44 ms); whole networks, interleaved builds: ResNet-50 0.97× at
batch 32, MobileNet v1 0.98–0.99×, at batch 1 ResNet-50, ResNeXt-50, MobileNet v1 and
DenseNet-121 within ±1.5%. With AVX2's 4×2 tiles the rows of ResNet-50 and MobileNet v1
are whole tiles; MobileNetV2's 3-vector tiles on rows of 56 and 112 (57 and 114 wide, 1.8%)
were 1.01–1.08× slower flat (AVX2 code on the Zen 4, two threads): by rows, under the 5%.
With AVX-512 a 1×1 conv on a small flat plane of at least `_MIN_UNITS` tiles (7×7 and up)
goes the same way, by tiles with each tile's epilogue after it, where it went by *plane*
(chunks of input blocks over the plane, the epilogue after the plane). Zen 4, two threads,
batch 1, kernels alone (shared inputs, interleaved): the convs it changes 0.87–0.98× the
time in sum (EfficientNet-B0, MobileNet v1, ResNeXt-50, ResNet-50, MobileNetV2), at batch 32
ResNet-50's 0.99× (0.96–1.11× each); whole networks, interleaved builds: EfficientNet-B0
0.88–0.90×, MobileNet v1 and ResNeXt-50 0.97×, ResNet-50 0.99× at batch 1; at batch 32
MobileNet v1 0.93–0.95×, MNASNet 0.96–0.97×, ResNet-50 1.01–1.02×. SE's 1×1 convs on one
pixel (one tile) were 1.2–2.1× slower so; AVX2 code (`-mcpu=haswell`, same host) 1.03–1.05×
(ResNet-50, MobileNetV2): those keep the *plane* order.
In the *row*, *band* and *plane* orders the last chunk is reduced apart, tile by tile, each
tile's epilogue applied as it is done (`tail_blocks`), not in a pass over the partial sums.
L1 is the target core's L1 data cache (`Machine.l1d`: 48 KB on Intel cores since Ice Lake and
on Zen 5, else 32 KB). Parallel over the outer loops; the fused epilogue runs on vectors (per
tile, row or plane). The input's padding (or a strided 1×1 conv's dense gather) is made before
the conv reads it: in the *row*, *band* and *tile* orders one image at a time, each image's
stage and then its conv in parallel within the image (or, when the target's threads share the
batch evenly, each image whole in one thread: `_whole_images`), so that the padded image is
still in L2 when it is read (a whole batch's copy went to memory and back: ResNet-18 at batch
32, one thread, whole network 0.96–0.98×, ResNet-50 0.95–0.99×, RegNetY-400MF 0.93×, VGG-16 and
DenseNet-121 within ±2%; two threads, ResNet-18 batch 32 0.95–1.0×, batch 1 0.99×). Flat convs
and the *plane* order, on small planes, keep the images in the parallel loop, and their stage
is made once, before.

Measured on AVX2, one thread, against ONNX Runtime's NCHWc kernels (same layer, ratio of
times): 1×1 512→512 on 14×14 (plane, 2×4) 0.85; 112→672 + SiLU on 14×14 (plane, 3×4) 0.74;
16→96 + SiLU on 112×112 (tile, 3×4) 0.56; 3×3 256→256 on 14×14 (row, 4×2) 0.99; 3×3 64→64
on 56×56 (row, 4×2) 0.96; 3×3/2 128→256 (row, 4×2) 0.96. In the network (ResNet-50, kernel
CPU time): 64→256 on 56×56 79 → 98 GFLOP/s with the *tile* order instead of *row*; 512→512
on 14×14: 74 GFLOP/s with 8×1 tiles, 95 with 2×4. Reading the weights once per plane (3×3
512→512 on 7×7, and its stride-2 twin) instead of once per row: 3.2 → 2.7 ms at batch 1, 112 →
94 and 122 → 95 ms at batch 32 (one run); 1×1 convs of 256 and 512 input channels on 28×28
and 56×56 in row chunks of 4 input blocks instead of whole per tile: 88 → 97 GFLOP/s (512→128
on 28×28, batch 1). Flat 1×1 convs whose group's weights fit in half of L1 take the *tile*
order too (they all took *plane*): RegNetY-400MF's 208→208 on 14×14, 0.231 → 0.186 ms alone;
whole networks at batch 1, archdsl ÷ ONNX Runtime in alternating runs (`bench_tvm.py --runs
7`, one thread): RegNetY-400MF 0.95–0.98 → 0.90–0.91, ResNet-50 0.99 either way,
MobileNetV2 and EfficientNet-B0 within the runs' spread (0.84–0.87, 0.89–0.97). Taking
*tile* for every flat conv made ResNet-50 1.01–1.02. A conv on unblocked channels (an RGB
stem: input blocks of one channel) unrolls its window's columns, its innermost reduction:
SqueezeNet 1.1's 3×3/2 stem (3→64, rows computed wider and clamped) at batch 32, one
thread, 28–32 ms → 21 (ONNX Runtime 23), batch 1 0.83 → 0.76 ms; MobileNetV2's stem at
batch 32 0.91×, the other stems within ±2% (interleaved runs, fastest of 7–9 each). LLVM
left alone had kept the inputs that neighbouring columns share on the stack. Unrolling the
columns of blocked convs too made ResNet-18's 1.05× slower at batch 32.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from archdsl.backends.tvm.schedules import blocked
from archdsl.backends.tvm.schedules.common import (
    Kernel,
    Machine,
    Plan,
    divisors,
    epilogue_of,
    extent,
    find_block,
    loops_below,
    register_tile,
    tile_loops,
    top_blocks,
)

__all__ = ["FLAT_PIXELS", "LARGE_FLAT_GAIN", "ConvPlan", "conv2d_blocked", "pixel_tile",
           "plan_conv", "tail_blocks"]

# a conv's plane up to this size may be one flat axis (`flat_conv2d`): 17×17 planes too
# (Inception v3's, rows of 17 otherwise computed 20 wide; it was 256 before): Inception v3,
# interleaved builds (median, best runs), AVX-512 Xeon, batch 1: two threads 0.86× (0.96×),
# one 0.97× (1.0×); batch 32: two threads 0.83× (0.88×), one 0.94× (0.93×); AVX2 code on
# the same core (`-mcpu=haswell`), one thread, batch 1, two runs: 1.04× (0.99×), 0.955×
# (0.99×). Larger planes are not all faster flat: MobileNet v1's 1×1 convs alone (batch 1,
# one thread, AVX-512) on 28×28 0.90× and 1.02×, on 56×56 1.0× and 1.05×, on 112×112 1.45×.
FLAT_PIXELS = 289
# a 1×1 stride-1 conv's larger plane is flat too where that saves at least this share of the
# pixels its rows compute in vain (rows of 56 and 28 in AVX-512's 6-pixel tiles are 60 and
# 30 wide: 7%), its tiles' epilogue per tile (`plan_conv`)
LARGE_FLAT_GAIN = 0.05
_CHUNK_BYTES = 4096  # weights of one chunk of input blocks in the *row* and *plane* orders (AVX2)
_L2_BROADCAST = 2.0  # loads a broadcast from L2 counts as (a flat plane's inputs)
_WINDOW_BROADCAST = 2.0  # loads a flat plane's broadcast counts as where it reads a window
_BROADCAST = 1.5  # loads a broadcast of a blocked input counts as, without broadcast operands
_MAX_WASTE = 0.15  # pixels or output blocks computed in vain at most, as a share of the real ones
_PAD_GAIN = 0.9  # padded output blocks' tile cost at most, relative to the best exact tile's
_FMA_BOUND = 0.55  # loads per FMA below which an AVX-512 tile reading from L1 waits on FMAs
_MIN_UNITS = 8  # parallel units (channel groups × bands) a conv by bands keeps at least
_FEW_VECTOR_PIXELS = 8  # pixels at most of a tile whose broadcasts feed 1 or 2 FMAs (`pixel_tile`)
_STEM_PIXELS = 4  # pixels of an AVX-512 tile of an unblocked input at most (`pixel_tile`)


@dataclass(frozen=True)
class ConvPlan:
    """How a blocked conv is tiled: V weight vectors × P pixels, the reduction order, the
    input blocks per chunk, and the rows per band (*band* order)."""

    vectors: int
    pixels: int
    order: str  # "tile", "row", "band" or "plane"
    chunk: int
    band: int = 1  # rows per band (*band* order)
    spans: int = 0  # a flat 1×1 conv's parallel spans of tiles, its epilogue per tile; 0: none


def _whole_tiles(count: int, limit: int) -> dict[int, int]:
    """{tile: `count` padded to a multiple of it} for the tiles up to `limit` that waste at
    most `_MAX_WASTE` of it."""
    made = {}
    for size in range(1, limit + 1):
        padded = -(-count // size) * size
        if padded - count <= _MAX_WASTE * count:
            made[size] = padded
    return made


def pixel_tile(ocb: int, count: int, machine: Machine, inputs: int | None = None,
               pad_vectors: bool = False, window: bool = False,
               unblocked: bool = False, reused: bool = False) -> tuple[int, int, int]:
    """(V, P, padded count) for a tile of V weight vectors × P of `count` pixels (a row, or a
    flat plane): P need not divide the count — it is padded to a multiple of P when that
    wastes at most 15% (a 7×7 plane's 49 pixels as 13 tiles of 4, not 49 tiles of 1: 8
    weight loads per 8 FMAs; a 7-wide row as 2 tiles of 4) — among the tiles `register_tile`
    would take, the fewest loads per FMA, weighed by the square of the work done in vain (a
    56-wide row as 12 tiles of 5 was slower than 14 tiles of 4). Where an FMA cannot take
    its broadcast from memory (AVX2), a broadcast of a blocked input counts as 1.5 loads
    (not of an unblocked one: an RGB stem's): 2×5 tiles (0.7 loads per FMA) had been taken
    over 4×2 (0.75) for rows of 224 and 112 pixels and flat 7×7 planes, and 4×2 took
    0.94–0.97× their time (VGG-16's 3×3 convs on 224×224 and 112×112, batch 1 and 32;
    MobileNet v1's 1×1 convs on 112×112 and 7×7, ResNet-50's on 7×7; one thread, each
    kernel alone, interleaved), while 2×5 stayed ahead on stems (VGG-16's 4×2 1.05–1.07×).
    A flat plane's `inputs` (input blocks, of the conv's full width): each channel group
    reads a chunk's inputs again (*plane* order), from L2 when they overflow half of L1, and
    such a broadcast counts twice (1×1 256→1024 on 14×14 on AVX2: 2×5 tiles read 50 KB
    chunks, 4×2 tiles 25 KB and were 3–4% faster, one thread, batch 1 and 32) — not where FMAs
    take their broadcast from memory (AVX-512): SqueezeNet 1.1's 512→1000 on 13×13 took 9×2
    tiles for it, 41.8 ms at batch 32 alone, and takes 3×9 without, 33.6 (ONNX Runtime 33.1);
    whole networks without the doubling, one thread, interleaved: SqueezeNet 1.1 0.97× the
    time at batch 1 and 32, MobileNetV2 0.99× and RegNetY-400MF 0.98× at batch 32, ResNet-50
    0.99×, the rest (batch 1: ResNet-50, MobileNetV2, EfficientNet-B0, RegNetY-400MF,
    DenseNet-121; MobileNet v1 at 32) within ±1%.
    A row or plane is never tiled one pixel at a time (unless it is one pixel): no weight is
    then held in a register, a load per FMA from all of the group's weights (RegNetY's 104→104
    1×1 conv on 28×28 as 13×1 tiles: 0.38 ms, as 2×4 in 14 blocks 0.26; EfficientNet-B0's
    480→80 as 10×1 made the network 2% slower). With `pad_vectors` V need not divide the
    `ocb` output blocks either: they are padded to a multiple of V with zero weights, on the
    same terms as pixels (RegNetY's 104 channels are 13 blocks of 8: 13×1 tiles without, 2×4
    in 14 blocks with), but only where that tile's cost is under 0.9 of the best tile that
    divides them: VGG-16's 3×3 convs of 256 channels (32 blocks) on 56×56 took 3×3 tiles in
    33 blocks (cost 0.735 against 4×2's 0.75) and ran 1.10× slower than with 4×2 (batch 1, one
    thread, interleaved; ResNet-50's 1×1 convs to 256 channels on 56×56 1.07× at batch 32).
    A flat plane's pixels that each read a `window` (a 3×3 conv's, at row p // OW and column
    p % OW) have an address each to keep: their broadcasts count twice too (ResNet-18's 3×3
    convs on 7×7, flat, one thread, batch 1: 2×5 tiles 0.96× the time of rows computed 8
    wide, 4×2 tiles 0.91×). Where a conv's window makes every input `reused` from L1 and
    FMAs take their broadcast operand (AVX-512), a tile of at most `_FMA_BOUND` loads per FMA
    waits on its FMAs, not its loads: below that, loads do not count, only work done in vain
    (every tile of 16 to 27 accumulators with at most 0.58 loads per FMA, from L1, ran at the
    same 171–178 GFLOP/s on an AVX-512 Xeon core, a C loop). ResNet-18's 3×3 convs on rows of
    56 and 28 then took 4×4 tiles instead of 4×6 over rows computed 60 and 30 wide, 0.88–0.96×
    the time (rows of 14: 2×14 instead of 4×5 over 15, 0.91–0.99×), and its 7×7/2 RGB stem
    4×4 instead of 4×6 on rows of 112 (114), 0.71–0.84× (one thread, batch 1, kernels alone,
    interleaved). A tile of one weight vector (a conv to 16 channels on AVX-512: SqueezeNet's
    squeeze convs, MobileNetV2's and MNASNet's first 1×1 projection, RegNetY's grouped convs of
    one block a group) reuses no broadcast, each feeds one FMA: it takes at most
    `_FEW_VECTOR_PIXELS` pixels (8, the FMAs in flight: 4 cycles × 2 units), where more only
    read more input lines at once. SqueezeNet 1.1's 128→16 1×1 conv on 55×55 at batch 32, one
    thread, alone: 6.4 ms in 1×28 tiles, 3.7–3.9 in 1×8, 3.7 in 1×7, 4.0 in 1×11, 4.7 in 1×14
    (ONNX Runtime 3.4 in the network); at batch 1 0.77–0.92× the time; whole networks, one
    thread, interleaved builds: SqueezeNet 1.1 0.984× at batch 32, MNASNet 0.99× at batch 1 and
    0.993× at 32, RegNetY-400MF at batch 1 and 32 and MobileNetV3 at batch 1 within ±1.6%. So
    does a 1×1 conv's tile of two vectors (its inputs streamed once, each broadcast feeding two
    FMAs): MNASNet's 80→24 on 56×56 at batch 32 alone 0.89× the time in 2×7 tiles than in 2×14
    (2×8 0.94×, 2×4 0.97×), at batch 1 0.91×; whole networks, interleaved: MobileNetV2 0.987× at
    batch 1 and 32, MNASNet 0.99× and 1.0×, EfficientNet-B0 1.01× and 0.99×, SqueezeNet 1.1 1.0×
    at 32. An unblocked input's tile (an RGB stem's, its window's columns unrolled) takes at
    most `_STEM_PIXELS` pixels on AVX-512: MobileNetV2's 3×3/2 3→32 stem at batch 32, one
    thread, alone: 2×14 tiles 8.7–10.8 ms, 2×8 6.4, 2×6 5.4, 2×4 5.3–5.7, 2×2 6.9; MNASNet's at
    batch 1 0.76× the time in 2×4 than in 2×14; ResNet-50's 7×7/2 stem stays 4×4 (4×2 1.11×
    slower, 4×8 1.10×) and MobileNetV3's one-vector stem 1×8 (1×4 1.09–1.15× slower); whole
    networks, interleaved: MobileNetV2 0.978× at batch 32, ShuffleNetV2 0.974×; at batch 1
    MobileNetV2, MNASNet, EfficientNet-B0, RegNetY-400MF and ShuffleNetV2 within ±1.4%. AVX2
    (unmeasured) keeps its stems' tiles. (`Blocked` pads the computes with the same function the
    rule then tiles them by: rows or planes of whole tiles, ⌈ocb / V⌉·V output blocks.)"""
    options = _whole_tiles(count, machine.registers)
    if count > 1:
        options.pop(1, None)
    exact = {v: ocb for v in divisors(ocb, machine.registers)}
    vectors = _whole_tiles(ocb, machine.registers) if pad_vectors else exact

    def cost(v: int, p: int) -> float:
        broadcast = 1 if unblocked or machine.broadcast_operand else _BROADCAST
        broadcast *= _WINDOW_BROADCAST if window else 1
        if inputs is not None and not machine.broadcast_operand:
            block = v * machine.lanes * machine.lanes * 4
            chunk_bytes = options[p] * _chunk(inputs, block, machine) * machine.lanes * 4
            broadcast *= _L2_BROADCAST if chunk_bytes > machine.l1d // 2 else 1
        loads = (v + broadcast * p) / (v * p)
        if reused and machine.broadcast_operand:
            loads = max(loads, _FMA_BOUND)
        return (loads * (options[p] / count) ** 2
                * (vectors[v] / ocb) ** 2)

    v, p = register_tile(machine, list(vectors), list(options), cost=cost)
    if vectors[v] != ocb:  # padded output blocks: only for a clear gain
        ev, ep = register_tile(machine, list(exact), list(options), cost=cost)
        if cost(v, p) >= _PAD_GAIN * cost(ev, ep):
            v, p = ev, ep
    # one vector's broadcasts feed one FMA each (two vectors': two, streamed once by a 1×1
    # conv); an AVX-512 stem's window columns are unrolled
    cap = (_FEW_VECTOR_PIXELS if v == 1 or (v == 2 and not reused)
           else _STEM_PIXELS if unblocked and machine.broadcast_operand else p)
    if p > cap:
        p = min((q for q in options if q <= cap), key=lambda q: cost(v, q), default=p)
    return v, p, options[p]


def _chunk(icb: int, block: int, machine: Machine) -> int:
    """Input blocks per chunk: the most of the `icb` whose weights (`block` bytes each) fit in
    `_CHUNK_BYTES` with AVX2 (32 input channels of a 1×1 conv's 4 weight vectors; 2, 8 and
    16 KB were 1.09, 1.02 and 1.035× slower), two thirds of L1 with AVX-512's 16 lanes: a
    1×1 conv's 4 vectors there took 4 KB chunks of 16 channels, their partial sums to L1 and
    back for every 16; chunks of 32 KB (128 channels, on a 48 KB L1) took MobileNet v1 0.96×
    the time at batch 1 and 0.95× at 32, ResNet-50 0.96× at both, MobileNetV2 0.98×,
    EfficientNet-B0 the same, its 1×1 convs alone 0.90–0.95×; 64 KB ones 0.95–1.0× (one
    thread, interleaved). A 3×3 conv's block of 4 vectors, 36 KB, is a chunk by itself. (Those
    1×1 convs by rows have since taken the *tile* order on AVX-512, see the module's
    docstring: there the chunks serve flat 1×1 convs by plane and windowed ones.)"""
    budget = machine.l1d * 2 // 3 if machine.lanes >= 16 else _CHUNK_BYTES
    return max(divisors(icb, max(1, budget // block)))


def plan_conv(machine: Machine, ocb: int, count: int, ob: int, reduction: tuple[int, ...],
              flat: bool, rows: int = 1, pad_vectors: bool = False,
              blocks: int | None = None) -> ConvPlan:
    """The tile and loop order of a blocked conv on `machine` (see the module's docstring).
    `ocb`: the output blocks a tile may take vectors from (a group's, grouped); `count`: the
    pixels the tiles cover (a row's, or a flat plane's); `reduction`: input blocks (of a
    group), window height and width, channels per input block; `rows`: the output's rows
    (1 when flat); `pad_vectors`: as `pixel_tile`'s. A group's weights beyond half of L1 are
    read once per pixel set of a chunk (a row, or the plane when its partial sums fit in half
    of L1, or in half of L2 when the group's weights overflow L2), not once per tile — but a
    1×1 conv's by rows on AVX-512, read once per tile, and a windowed conv's by rows on
    AVX-512, read once per band of rows (`_band`; `blocks`: the output blocks the conv
    computes in all, `ocb` when None)."""
    icb, kh, kw, ib = reduction
    windowed = kh * kw > 1
    vectors, pixels, _ = pixel_tile(ocb, count, machine, icb if flat else None, pad_vectors,
                                    flat and windowed, ib == 1, windowed)
    block = vectors * ob * ib * kh * kw * 4  # bytes of one input block's weights of a group
    sums = vectors * ob * count * rows * 4  # bytes of a group's partial sums of the plane
    half = machine.l1d // 2  # a group's weights for the *tile* order, sums for *plane*, at most
    # by rows, weights beyond L2 would come from L3 again for every row
    beyond_l2 = block * icb > machine.l2 and sums <= machine.l2 // 2
    # with AVX-512 a 1×1 conv's weights stream from L2 behind its FMAs (by tile, never by
    # row), and a windowed conv's chunks stay in L1 along a band of rows
    wide = machine.lanes >= 16
    # a reduction of one chunk by rows or plane would only add a pass over the partial sums
    chunk = _chunk(icb, block, machine)
    # a flat 1×1 conv by tiles, each tile's epilogue after it: on a plane beyond the small
    # ones, and with AVX-512 on one of at least `_MIN_UNITS` tiles (the module's docstring)
    by_tile = flat and not windowed and (
        count > FLAT_PIXELS or wide and -(-count // pixels) >= _MIN_UNITS)
    order = ("tile" if block * icb <= half or ib == 1 or chunk == icb or by_tile
             else "plane" if flat or sums <= half or beyond_l2
             else "tile" if wide and not windowed
             else "band" if wide else "row")
    chunk = 1 if order == "tile" else chunk
    groups = -(-(blocks or ocb) // vectors)
    band = _band(machine, rows, sums // rows, groups) if order == "band" else 1
    return ConvPlan(vectors, pixels, order, chunk, band,
                    _spans(count, pixels, groups, machine.threads) if by_tile else 0)


def _spans(count: int, pixels: int, groups: int, threads: int) -> int:
    """Parallel spans of a flat 1×1 conv's tiles (`plan_conv`), so that the channel
    groups × spans make at least `_MIN_UNITS` parallel units (ResNet-50's 1×1 64→64 on
    56×56 is one group of 4 vectors), a multiple of the target's `threads` where they can."""
    tiles = -(-count // pixels)
    spans = -(-_MIN_UNITS // groups)
    while (groups * spans) % max(threads, 1) and spans < tiles:
        spans += 1
    return max(1, min(spans, tiles))


def tail_blocks(machine: Machine, weight: tuple[int, ...], plane: tuple[int, int], width: int,
                groups: int, blocks: int) -> int:
    """The input blocks of a conv by rows (or bands, or its plane) whose sum is reduced apart,
    tile by tile (`blocked.conv2d`'s `tail`): its plan's last chunk; 0 for one reduction (the
    *tile* order, one chunk, or rows computed wider or output blocks padded: the epilogue's
    tiles would not be the conv's). `weight`: the packed weights' shape; `plane`: the
    output's rows and columns; `width`: the rows' computed width; `blocks`: the output's.
    Each tile's last chunk then sums into registers from zero and the tile's epilogue adds
    the partial sums of the chunks before, the bias (and residual) and stores the output
    (`_by_tiles`), where the last chunk had stored its sums and the epilogue read them again
    in a pass of its own. VGG-16's 3×3 convs alone (AVX-512 Xeon, batch 1, one thread,
    interleaved builds): 0.945–0.96× the time on 224×224 and 112×112, 0.975–0.985× on 56×56,
    0.99× on 28×28, 1.02× on 14×14; whole networks, one thread: VGG-16 0.99× at batch 1 and
    0.96× at 32, ResNet-18 0.99× and 0.98×, ResNet-50 1.0×; AVX2 code on the same core:
    MobileNet v1, ResNet-18, ResNet-50 and DenseNet-121 within ±0.6%."""
    computed, icb, kh, kw, ib, ob = (int(d) for d in weight)
    rows, columns = plane
    if width != columns or computed != blocks:
        return 0
    plan = plan_conv(machine, blocks // groups, columns, ob, (icb, kh, kw, ib), False, rows,
                     groups == 1, computed)
    return plan.chunk if plan.order != "tile" and icb > plan.chunk else 0


def _band(machine: Machine, rows: int, row_sums: int, groups: int) -> int:
    """Rows per band of a windowed conv by rows on AVX-512: the most (dividing the output's
    rows) whose partial sums (`row_sums` bytes a row) fit in half of the core's L2 while the
    conv keeps `_MIN_UNITS` parallel units (channel groups × bands). Each chunk's weights
    then stay in L1 across the band's rows, read once per band, where by rows they came
    from L2 again for every row and chunk (as ONNX Runtime's NCHWc convs, which go over a
    thread's rows for each input block). VGG-16's 3×3 512→512 on 28×28 alone 0.955× the
    time, 256→512 0.98×; whole networks, one thread, interleaved builds: VGG-16 0.98× at
    batch 1, ResNet-50 0.99×, ResNet-18 0.99×; ResNet-18, VGG-16, DenseNet-121 and
    ResNeXt-50 at batch 32, and those two, RegNetY-400MF and SqueezeNet 1.1 at batch 1,
    within ±2%; two threads: VGG-16, ResNet-18 and ResNet-50 0.99–1.0× at batch 1,
    ResNet-18 0.99× at 32 (AVX-512 Xeon; AVX2 keeps rows, unmeasured there). The bands
    leave at least `_MIN_UNITS` parallel units for the cores to share."""
    fits = [d for d in divisors(rows) if d * row_sums <= machine.l2 // 2
            and groups * (rows // d) >= _MIN_UNITS]
    return max(fits, default=1)


def conv2d_blocked(k: Kernel) -> Plan | None:
    sch = s_tir.Schedule(k.func)
    blocks = top_blocks(sch)
    conv = find_block(sch, blocks, blocked.CONV)
    flat = conv is None
    if flat:
        conv = find_block(sch, blocks, blocked.FLAT)
        if conv is None:
            return None
    # the block after unflattens, cuts back padded rows and output blocks, or is the
    # epilogue: its shape is the output's (a conv with nothing after it, BARE_CONV's, has
    # it itself)
    # (the last input blocks' sum, reduced apart, is scheduled with the epilogue)
    tail = find_block(sch, blocks, blocked.TAIL)
    blocks = [b for b in blocks if b != tail]
    tail_count = 0 if tail is None else extent(sch, tail, 5)
    after = (blocks + [conv])[blocks.index(conv) + 1]
    rows = 1
    if flat:
        n, computed, _, ob, icb, kh, kw, ib = (extent(sch, conv, i) for i in range(8))
        count, reduction = extent(sch, after, 2) * extent(sch, after, 3), (icb, kh, kw, ib)
    else:
        n, computed, _, _, ob, icb, kh, kw, ib = (extent(sch, conv, i) for i in range(9))
        icb += tail_count
        count, reduction = extent(sch, after, 3), (icb, kh, kw, ib)
        rows = extent(sch, after, 2)
    # the output's blocks, padded to whole tiles as `Blocked` did; a grouped conv's tile
    # stays in one group (its pixels' inputs are shared) and is never padded
    group = sch.get(conv).annotations.get(blocked.GROUP_VECTORS)
    ocb = extent(sch, after, 1) if group is None else int(group)
    machine = Machine.of(k.target)
    plan = plan_conv(machine, ocb, count, ob, reduction, flat, rows, group is None, computed)
    if computed % plan.vectors:
        return None  # not padded as this rule tiles it
    if tail is not None and tail_count != plan.chunk:
        return None  # not split as this rule tiles it
    before = [b for b in blocks[:blocks.index(conv)]
              if sch.get(b).name_hint.startswith((blocked.PAD, blocked.GATHER))]
    epilogue = epilogue_of(sch, blocks, conv)
    # a flat conv's epilogue iterates the flat pixels too: TVM places it by p, not y·W + x;
    # one whose output is no blocked tensor (a layout transform fused in) runs after it all
    placed = not flat or _flatten(sch, epilogue, extent(sch, conv, 1), extent(sch, conv, 3))
    # an input stage is made per image, just before that image's conv reads it, when the
    # conv goes by row or tile over rows (flat and plane-order convs' small planes keep the
    # images in the parallel loop)
    per_image = bool(before) and not flat and plan.order != "plane"
    # ... and the threads take whole images when they share them evenly (`_whole_images`)
    whole = per_image and _whole_images(n, machine.threads)
    if tail is not None:
        image = _by_tiles(sch, conv, tail, epilogue, plan, per_image, whole)
    else:
        # (a grouped conv's channel groups read inputs of their own: no thread reads them all)
        shared = group is None and _shared_images(n, machine.threads)
        image, outer, at, reduction = _loops(sch, conv, plan, flat, per_image, shared)
        sch.parallel(image if whole else outer)
        if placed:
            sch.reverse_compute_at(epilogue, at)
        else:  # over images and channel blocks (the images alone: one loop of one at batch 1)
            loops = sch.get_loops(epilogue)
            sch.parallel(sch.fuse(*loops[:2]) if len(loops) > 2 else loops[0])
        sch.decompose_reduction(conv, reduction)
        sch.vectorize(sch.get_loops(epilogue)[-1])
    for block in before:  # parallel over the planes' rows, vectors of channels
        if image is not None:
            sch.compute_at(block, image)  # which drops its loops of one iteration
        loops = sch.get_loops(block)[image is not None:]
        if len(sch.get(block).iter_vars) == 5:  # blocked: its innermost axis is the lanes
            sch.vectorize(loops.pop())
        if not whole:  # else in its image's thread
            sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 1 else loops[0])
    return Plan(sch.mod["main"])


def _whole_images(batch: int, threads: int) -> bool:
    """Whether the threads of a conv whose input stage is made per image take whole images (the
    image loop parallel: each thread pads its own image and convolves it, its stage still in
    that core's L2, no barrier) rather than share each image (its stage by rows, then its conv
    by channel groups and rows: two barriers per image, and a thread reads rows that another
    core padded). Only when the `threads` (the target's num-cores; 0: unknown) share the batch
    evenly: a multiple of them, or at least four images each (then at most one image more than
    others, a quarter). ResNet-50's stride-2 3×3 128→128 on 56×56 at batch 32, two threads,
    alone: 0.86× the time, its other 3×3 convs and the 7×7 stem 0.97–0.98×; whole networks at
    batch 32 on two threads (interleaved builds, AVX-512 Xeon): ResNet-18 0.97×, ResNet-50
    0.975×, VGG-16 0.98×, DenseNet-121 0.98×, MobileNet v1 and v2 within ±0.3%; one thread:
    within ±0.5%; AVX2 code (`-mcpu=haswell`, same host): ResNet-18 0.985×, ResNet-50 1.0×."""
    return threads > 0 and batch > 1 and (batch % threads == 0 or batch >= 4 * threads)


def _shared_images(batch: int, threads: int) -> bool:
    """Whether the threads share images in a conv's parallel loop over the batch (the target's
    `threads` do not divide it: batch 1 on two threads), rather than each take whole ones."""
    return threads > 1 and batch % threads != 0


def _own_loops(sch: s_tir.Schedule, block, under, extents: dict[str, int]) -> dict:
    """{name: loop} of `block`'s loops below `under`, made by compute-at for the block vars
    whose `extents` (in order) are above one; an error if they are not those."""
    own = loops_below(sch, block, under)
    kept = [name for name, size in extents.items() if size > 1]
    found = [int(sch.get(loop).extent) for loop in own]
    if found != [extents[name] for name in kept]:
        raise ValueError(f"loops {found} under the tile, expected {extents}")
    return dict(zip(kept, own, strict=True))


def _by_tiles(sch: s_tir.Schedule, head, tail, epilogue, plan: ConvPlan, per_image: bool,
              whole: bool):
    """Schedule a conv reduced in two parts (`blocked.TAIL`: its plan's last chunk) from its
    epilogue's loops: image, channel group, band (a row, the plane) → the head's chunks over
    the band as `_loops` orders them → each tile: the tail's sums in registers from zero,
    then the epilogue, which adds the head's partial sums and stores the output. Returns
    the image loop when the input stages go under it (`per_image`), parallel when the
    threads take `whole` images."""
    vectors, pixels, lanes = plan.vectors, plan.pixels, extent(sch, head, 4)
    n, o, y, x, oi = sch.get_loops(epilogue)
    oo, ov = sch.split(o, [None, vectors])
    band = {"band": plan.band, "row": 1}.get(plan.order, extent(sch, head, 2))
    yo, yi = sch.split(y, [None, band])
    xo, xi = sch.split(x, [None, pixels])
    sch.reorder(n, oo, yo, yi, xo, ov, xi, oi)
    outer = sch.fuse(*([] if per_image else [n]), oo, yo)
    sch.parallel(n if whole else outer)
    tile_loops(sch, [ov, xi], oi)
    # each tile's tail: its reduction around the tile, the tile in registers
    sch.compute_at(tail, xo)
    sch.set_scope(tail, 0, "local")
    window = [extent(sch, tail, i) for i in range(5, 9)]
    own = _own_loops(sch, tail, xo, dict(zip(("o", "x", "oi", "rc", "ry", "rx", "ri"),
                                             (vectors, pixels, lanes, *window), strict=True)))
    reduction = _present(own, "rc", "ry", "rx", "ri")
    spatial = _present(own, "x", "o")
    sch.reorder(*reduction, *spatial, own["oi"])
    tile_loops(sch, spatial, own["oi"])
    *zeros, lane = loops_below(sch, sch.decompose_reduction(tail, reduction[0]), xo)
    tile_loops(sch, zeros, lane)
    # the head's chunks over the band, as by `_loops`
    sch.compute_at(head, outer)
    columns = extent(sch, epilogue, 3)
    window = [extent(sch, head, i) for i in range(5, 9)]
    own = _own_loops(sch, head, outer, dict(zip(("o", "y", "x", "oi", "rc", "ry", "rx", "ri"),
                                                (vectors, band, columns, lanes, *window),
                                                strict=True)))
    # the chunks (none of one input block), then the rows, tiles and the chunk's reduction
    # (loops of one iteration are left out)
    tiles = sch.split(own["x"], [None, pixels]) if "x" in own else []
    chunks = sch.split(own["rc"], [None, plan.chunk]) if "rc" in own else []
    inner = chunks[1:] + _present(own, "ry", "rx", "ri")
    tile = tiles[1:] + _present(own, "o")
    sch.reorder(*chunks[:1], *_present(own, "y"), *tiles[:1], *inner, *tile, own["oi"])
    tile_loops(sch, tile, own["oi"])
    sch.decompose_reduction(head, (chunks + inner)[0])
    return n if per_image else None


def _present(loops: dict, *names: str) -> list:
    """The loops of these names that there are (a loop of one iteration is not made)."""
    return [loops[name] for name in names if name in loops]


def _flatten(sch: s_tir.Schedule, epilogue, ocb: int, ob: int) -> bool:
    """Make a flat conv's epilogue, N·OCb·OH·OW·ob, iterate N·OCb·(OH·OW)·ob; False if it
    is not of that shape."""
    kinds = [extent(sch, epilogue, i) for i in range(len(sch.get(epilogue).iter_vars))]
    if len(kinds) != 5 or kinds[1] != ocb or kinds[4] != ob:
        return False
    width = kinds[3]
    sch.transform_block_layout(epilogue, lambda b, o, y, x, oi: (b, o, y * width + x, oi))
    return True


def _loops(sch: s_tir.Schedule, conv, plan: ConvPlan, flat: bool, per_image: bool,
           shared: bool):
    """Split and order the loops of `conv`; returns the image loop when the input stages go
    under it (`per_image`: the images one after another, each in parallel within, or each in
    a thread of its own: `_whole_images`), the loop to parallelize within an image, the loop
    the epilogue goes under and the loop to decompose the reduction at. In the *tile* order
    the rows go outside the channel groups when the threads share images (`shared`)."""
    if flat:
        n, o, x, oi, rc, *window = sch.get_loops(conv)
        rows = []
    else:
        n, o, y, x, oi, rc, *window = sch.get_loops(conv)
        rows = [y]
    oo, ov = sch.split(o, [None, plan.vectors])
    xo, xi = sch.split(x, [None, plan.pixels])
    rco, rci = sch.split(rc, [None, plan.chunk])
    inner = [rci, *window, xi, ov, oi]
    within = [] if per_image else [n]
    if plan.order == "tile":
        # threads take bands of rows, or a flat 1×1 conv's spans of tiles
        spans = sch.split(xo, [plan.spans, None]) if plan.spans > 1 else [xo]
        xo = spans[-1]
        spread = [*rows, *spans[:-1], oo] if shared else [oo, *rows, *spans[:-1]]
        sch.reorder(n, *spread, xo, rco, *inner)
        outer = sch.fuse(*within, *spread)
        # a flat plane's epilogue goes per plane but where its 1×1 conv goes by tiles
        # (`plan_conv`: spans), and a row's per tile
        at = outer if flat and not plan.spans else xo
    elif plan.order == "row":
        sch.reorder(n, oo, *rows, rco, xo, *inner)
        outer = at = sch.fuse(*within, oo, *rows)
    elif plan.order == "band":
        band, row = sch.split(rows[0], [None, plan.band])
        sch.reorder(n, oo, band, rco, row, xo, *inner)
        outer = at = sch.fuse(*within, oo, band)
    else:  # plane
        sch.reorder(n, oo, rco, *rows, xo, *inner)
        outer = at = sch.fuse(*within, oo)
    tile_loops(sch, [ov, xi], oi)
    if len(window) == 3 and int(sch.get(window[2]).extent) == 1:
        # an unblocked input (an RGB stem): the window's columns are the innermost reduction
        sch.unroll(window[1])
    return (n if per_image else None), outer, at, rco

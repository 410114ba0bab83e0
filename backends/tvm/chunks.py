"""Which CPU builds run their network's trunk a few images at a time (`lower.build_module`'s
`chunk`): at a batch of several images, each layer's outputs for the whole batch go out to L3
(or memory) and come back for the next layer; an image at a time, the layers whose output for
an image fits in the core's L2 hand it on there. The price: every chunk reads the trunk's
weights again (they do not stay in L2 across the network), and launches every kernel again.

So a build for one thread takes chunks of one image when the bytes of the trunk's outputs
that fit in half of the core's L2, per image, come to at least `_GAIN` times the trunk's
weights (`chunk_images`) — the depthwise-separable networks, whose activations outweigh
their weights; not ResNets or VGG, whose weights outweigh what stays in L2. Measured (AVX-512
Xeon, 2 MB of L2, batch 32, one thread, interleaved builds, chunked against whole; median
ratio of times, best runs' ratio): MobileNet v1 0.86 (0.88), MNASNet 0.80 (0.86). Or when
all of the trunk's outputs per image come to at least `_GAIN_ALL` times its weights: with a
small L2 (Zen 3's 512 KB, where few outputs fit in half of it) a chunk's outputs still stay
in L3 where the whole batch's go out to memory. Two threads, batch 32, Zen 3 (32 MB of L3),
chunks of one image against the batch whole (interleaved builds, 10–20 runs, median of the
paired ratios): MobileNet v1 0.94, MobileNetV2 0.85, MNASNet 0.92, EfficientNet-B0 0.95,
DenseNet-121 0.90, RegNetY-400MF 0.96, SqueezeNet 1.1 0.88 (outputs 3.3–8.7 times the
weights); below the threshold GoogLeNet 0.97 (2.2 times) and ResNet-18 1.07 (0.74 times:
its 45 MB of weights read again per image); on an AVX-512 Xeon's 2 MB of L2 the first rule
already takes exactly these networks (of the 18 of `benchmarks/bench_tvm.py`).

A build for several threads takes the same chunks when they share them evenly: its threads
take whole chunks at once, each calling the trunk's kernels (compiled for one thread) on its
own images with buffers of its own (`trunk_threads`), one launch of the thread pool for the
whole trunk. Two threads, batch 32, the issue's benchmark (idle threads sleep), against the
batch whole (`bench_tvm.py --models mobilenet_v1,mnasnet1_0 --batch 32 --peers
archdsl,whole,ort --runs 12`, one run, median (fastest)): MobileNet v1 135.0 (125.7) ms
against 147.3 (142.9), MNASNet 79.1 (77.4) against 101.2 (93.7). Chunks run one after
another on several threads instead (each chunk launching every kernel on the thread pool
again, each kernel's work shared) had cost more than they saved where idle threads sleep:
MNASNet 1.04× the time of the batch whole, MobileNet v1 1.025×, EfficientNet-B0 1.11×
(`compile(..., chunk=N)` still makes them where the threads cannot share the chunks evenly).
ResNet-18 and ResNet-50 in chunks of two images one after another were slower even with
spinning threads (1.58× and 1.15×)."""

from __future__ import annotations

import math

import tvm

from archdsl.backends.tvm.lower import driven, trunk_end
from archdsl.backends.tvm.schedules.common import Machine
from archdsl.backends.tvm.weights import _weighted_nodes
from archdsl.ir import Graph

__all__ = ["chunk_images", "trunk_bytes"]

_GAIN = 2.0  # bytes kept in L2 (per image, times the cores) per byte of the trunk's weights
_GAIN_ALL = 3.0  # bytes of outputs per image (kept in L3) per byte of the trunk's weights


def trunk_bytes(graph: Graph, itemsize: int, l2: int) -> tuple[int, int, int] | None:
    """(the trunk's weights, its outputs per image that fit in half of `l2`, all its outputs
    per image) in bytes, None if the graph has no trunk (`lower.trunk_end`)."""
    nodes = [n for n in graph.nodes if n.op != "input"]
    end = trunk_end(graph)
    if end < 0:
        return None
    trunk = {n.id for n in nodes[:end + 1]}
    weights = sum(math.prod(shape) for node, tensors in _weighted_nodes(graph)
                  if node.id in trunk for shape in tensors.values())
    outputs = [math.prod(graph.node(i).shape) * itemsize for i in trunk]
    return weights * itemsize, sum(b for b in outputs if b <= l2 // 2), sum(outputs)


def chunk_images(graph: Graph, batch: int, target: tvm.target.Target,
                 itemsize: int) -> int | None:
    """The images per call of the trunk for a CPU `target`: one where that keeps enough in L2
    and the target's threads (one, or several that share the images evenly: `lower.driven`)
    take them; else None, the whole batch at once (see the module's docstring)."""
    if target.kind.name != "llvm" or batch == 1:
        return None
    machine = Machine.of(target)
    # several threads take whole chunks at once (`trunk_threads`), where they share them
    # evenly; a number unknown: whole
    if machine.threads == 0 or (machine.threads > 1
                                and not driven(graph, batch, 1, machine.threads)):
        return None
    sizes = trunk_bytes(graph, itemsize, machine.l2)
    if sizes is None:
        return None
    weights, kept, outputs = sizes
    return 1 if kept >= _GAIN * weights or outputs >= _GAIN_ALL * weights else None

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
ratio of times, best runs' ratio): MobileNet v1 0.86 (0.88), MNASNet 0.80 (0.86).

A build for several threads runs the batch whole: each chunk then launches every kernel on
the thread pool again, and where idle threads sleep (`TVM_THREAD_POOL_SPIN_COUNT=0`, as
`bench_tvm.py` runs every runtime) a launch costs more than the chunk saves — two threads,
chunks of one image per thread: MNASNet 1.04 (1.08), MobileNet v1 1.025 (1.02),
EfficientNet-B0 1.11 (1.06), MobileNetV2 0.97 (0.93). With TVM's default, spinning, threads
the same chunks took 0.67–0.93× the time (MNASNet 0.83–0.90, MobileNet v1 0.93, MobileNetV2
0.83, EfficientNet-B0 0.67, MobileNetV3-Large 0.90, ShuffleNetV2 0.93, SqueezeNet 1.1 0.92,
RegNetY-400MF 1.0, GoogLeNet 0.965, DenseNet-121 1.02): `compile(..., chunk=N)` asks for
them. ResNet-18 and ResNet-50 in chunks of two images were slower even so (1.58 and 1.15:
sixteen calls of a batch-2 build, spinning threads)."""

from __future__ import annotations

import math

import tvm

from archdsl.backends.tvm.lower import trunk_end
from archdsl.backends.tvm.schedules.common import Machine
from archdsl.backends.tvm.weights import _weighted_nodes
from archdsl.ir import Graph

__all__ = ["chunk_images", "trunk_bytes"]

_GAIN = 2.0  # bytes kept in L2 (per image, times the cores) per byte of the trunk's weights


def trunk_bytes(graph: Graph, itemsize: int, l2: int) -> tuple[int, int] | None:
    """(the trunk's weights, its outputs per image that fit in half of `l2`) in bytes, None
    if the graph has no trunk (`lower.trunk_end`)."""
    nodes = [n for n in graph.nodes if n.op != "input"]
    end = trunk_end(graph)
    if end < 0:
        return None
    trunk = {n.id for n in nodes[:end + 1]}
    weights = sum(math.prod(shape) for node, tensors in _weighted_nodes(graph)
                  if node.id in trunk for shape in tensors.values())
    outputs = (math.prod(graph.node(i).shape) * itemsize for i in trunk)
    return weights * itemsize, sum(b for b in outputs if b <= l2 // 2)


def chunk_images(graph: Graph, batch: int, target: tvm.target.Target,
                 itemsize: int) -> int | None:
    """The images per call of the trunk for a CPU `target`: one, for one thread, where that
    keeps enough in L2; else None, the whole batch at once (see the module's docstring)."""
    if target.kind.name != "llvm" or batch == 1:
        return None
    machine = Machine.of(target)
    if machine.threads != 1:  # several threads, or a number unknown
        return None
    sizes = trunk_bytes(graph, itemsize, machine.l2)
    if sizes is None:
        return None
    weights, kept = sizes
    return 1 if kept >= _GAIN * weights else None

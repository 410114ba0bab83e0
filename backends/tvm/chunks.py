"""Which CPU builds run their network's trunk a few images at a time (`lower.build_module`'s
`chunk`): at a batch of several images per core, each layer's outputs for the whole batch go
out to L3 (or memory) and come back for the next layer; in chunks of one image per core, the
layers whose output for an image fits in the core's L2 hand it on there. The price: every
chunk reads the trunk's weights again (they do not stay in L2 across the network), and every
kernel is launched once per chunk.

So a build takes chunks when its images per core are more than one, and the bytes of the
trunk's outputs that fit in half of a core's L2, per image, times the cores, come to at least
`_GAIN` times the trunk's weights (`chunk_images`) — the depthwise-separable networks, whose
activations outweigh their weights; not ResNets or VGG, whose weights outweigh what stays in
L2. Measured (AVX-512 Xeon, 2 MB of L2 a core, batch 32, interleaved builds, chunked
against whole; median ratio of times, best runs' ratio): two threads, MNASNet 0.90 (0.90)
and 0.83 (0.89), MobileNet v1 0.93 (0.96), MobileNetV2 0.83 (0.81), EfficientNet-B0 0.67
(0.90), MobileNetV3-Large 0.90 (0.91), ShuffleNetV2 0.93 (1.0), SqueezeNet 1.1 0.92 (0.94),
RegNetY-400MF 1.0 (0.94), GoogLeNet 0.965 (0.99), DenseNet-121 1.02 (0.81); one thread,
MobileNet v1 0.86 (0.88), MNASNet 0.80 (0.86); ResNet-18 1.58 (1.05) and ResNet-50 1.15
(1.02) as sixteen calls of a batch-2 build, which they do not take."""

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
    """The images per call of the trunk for a CPU `target` (one per core), or None: the
    whole batch at once (see the module's docstring)."""
    if target.kind.name != "llvm":
        return None
    machine = Machine.of(target)
    cores = max(machine.threads, 1)
    if batch <= cores or batch % cores:
        return None
    sizes = trunk_bytes(graph, itemsize, machine.l2)
    if sizes is None:
        return None
    weights, kept = sizes
    return cores if cores * kept >= _GAIN * weights else None

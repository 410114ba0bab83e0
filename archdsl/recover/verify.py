"""Is a recovered spec the imported network? Parse it, elaborate it and compare graphs.

Two graphs are the same network when every node has its counterpart: the same op,
attributes and shape, fed by counterparts in the same order (sums and products in any
order), and — for the nodes that hold tensors — the same name, which is its state_dict key.
Names of nodes without tensors (a ReLU, a sum) are free. Each node is summarised by a hash of
all that and of its inputs' summaries, so the comparison is one pass over each graph.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..ir import Graph
from ..ops import OPS
from .flat import FlatNet

_COMMUTATIVE = {"add", "mul"}


def _summary(op: str, attrs: dict[str, Any], shape: Any, name: str | None,
             inputs: list[int]) -> int:
    ins = sorted(inputs) if op in _COMMUTATIVE else inputs
    return hash((op, tuple(sorted((k, repr(v)) for k, v in attrs.items())),
                 tuple(shape) if shape is not None else None, name, tuple(ins)))


def flat_summaries(net: FlatNet) -> tuple[Counter[int], int]:
    h: dict[int, int] = {}
    for n in net.nodes:
        h[n.id] = _summary(n.op, n.attrs, n.shape, n.name if n.keep_name else None,
                           [h[i] for i in n.inputs])
    return Counter(h.values()), h[net.output]


def graph_summaries(graph: Graph) -> tuple[Counter[int], int]:
    h: dict[int, int] = {}
    for n in graph.nodes:
        ins = graph.inputs(n.id)
        shapes = [graph.node(i).shape for i in ins]
        keep = n.op != "input" and bool(OPS[n.op].tensors(n.attrs, shapes, n.shape))
        h[n.id] = _summary(n.op, n.attrs, n.shape, n.name if keep else None,
                           [h[i] for i in ins])
    return Counter(h.values()), h[graph.output_id]


def differences(graph: Graph, net: FlatNet) -> str | None:
    """None when the graph is the network; else what differs, for a bug report."""
    a, out_a = graph_summaries(graph)
    b, out_b = flat_summaries(net)
    if a == b and out_a == out_b:
        return None
    return (f"{sum((a - b).values())} node(s) of the spec have no counterpart, "
            f"{sum((b - a).values())} of the network none"
            + ("" if out_a == out_b else "; the outputs differ"))

"""The graph IR: a networkx DiGraph of typed nodes, plus the spec structure for formatting.

Every node knows its op, attributes, inferred output shape (per image, no batch axis),
scoped name (`layer1.0.conv1`) and the source span it came from. Edges carry the input
position (`index`), so concatenation order is explicit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .errors import Span
from .ops import OPS, OpShapeError, Shape


@dataclass
class Node:
    id: int
    name: str
    op: str
    attrs: dict[str, Any]
    shape: Shape | None
    span: Span | None
    layer: int  # id of the primary node of the spec layer that made this one (conv1 for bn1)

    @property
    def opdef(self):
        return OPS[self.op]

    @property
    def label(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def scope(self) -> tuple[str, ...]:
        return tuple(self.name.split(".")[:-1])


@dataclass
class NodeRef:
    """A primitive node in the structure tree."""

    id: int


@dataclass
class ScopeRef:
    """A named group (a stage, a block instance, a shortcut)."""

    label: str
    items: list


@dataclass
class JoinRef:
    """A join node and the branches feeding it; an empty branch is the identity."""

    id: int
    branches: list[list]


StructItem = NodeRef | ScopeRef | JoinRef


@dataclass
class Graph:
    """A typed architecture graph: the result of elaborating one `arch`."""

    name: str
    settings: dict[str, Any]
    g: nx.DiGraph = field(default_factory=nx.DiGraph)
    structure: list = field(default_factory=list)
    input_id: int = 0
    output_id: int = 0
    span: Span | None = None
    # `assert` conditions on the analysed totals, with the values they may refer to
    budgets: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    # what elaboration found suspicious but legal (archdsl.errors.ArchWarning), in source order
    warnings: list = field(default_factory=list)

    def node(self, nid: int) -> Node:
        return self.g.nodes[nid]["node"]

    @property
    def nodes(self) -> list[Node]:
        """All nodes in creation order, which is a topological order."""
        return [d["node"] for _, d in self.g.nodes(data=True)]

    def inputs(self, nid: int) -> list[int]:
        preds = self.g.in_edges(nid, data="index")
        return [src for src, _, _ in sorted(preds, key=lambda e: e[2])]

    def add_node(self, node: Node, inputs: list[int]) -> None:
        self.g.add_node(node.id, node=node)
        for i, src in enumerate(inputs):
            self.g.add_edge(src, node.id, index=i)

    @property
    def input_shape(self) -> Shape:
        return self.node(self.input_id).shape  # type: ignore[return-value]

    @property
    def output_shape(self) -> Shape | None:
        return self.node(self.output_id).shape

    def signature(self) -> list[tuple]:
        """What makes two graphs the same network: names, ops, attributes, shapes, wiring."""
        by_id = {n.id: n.name for n in self.nodes}
        return [(n.name, n.op, tuple(sorted(n.attrs.items(), key=lambda kv: kv[0])), n.shape,
                 tuple(by_id[i] for i in self.inputs(n.id)), by_id[n.layer])
                for n in self.nodes]


class IRError(Exception):
    """The graph breaks an invariant: a bug in archdsl, never a user mistake."""


def validate(graph: Graph) -> None:
    """Check the IR's invariants; run after every transformation in tests."""
    g = graph.g
    if not nx.is_directed_acyclic_graph(g):
        raise IRError("graph has a cycle")
    names: set[str] = set()
    order = list(nx.topological_sort(g))
    position = {nid: i for i, nid in enumerate(graph.g.nodes)}
    for nid in order:
        node = graph.node(nid)
        if node.name in names:
            raise IRError(f"duplicate node name {node.name}")
        names.add(node.name)
        if node.op not in OPS:
            raise IRError(f"{node.name}: unknown op {node.op}")
        ins = graph.inputs(nid)
        if any(position[i] >= position[nid] for i in ins):
            raise IRError(f"{node.name}: creation order is not topological")
        lo, hi = OPS[node.op].arity
        if len(ins) < lo or (hi and len(ins) > hi):
            raise IRError(f"{node.name}: {node.op} has {len(ins)} inputs")
        if node.layer not in g or graph.node(node.layer).layer != node.layer:
            raise IRError(f"{node.name}: layer {node.layer} is not a primary node")
        _check_shape(graph, node, ins)
    sinks = [n for n in g if g.out_degree(n) == 0]
    if graph.output_id not in sinks:
        raise IRError("the output node has consumers")


def _check_shape(graph: Graph, node: Node, ins: list[int]) -> None:
    if node.op == "input":
        return
    in_shapes = [graph.node(i).shape for i in ins]
    if node.shape is None or any(s is None for s in in_shapes):
        raise IRError(f"{node.name}: shape not inferred")
    try:
        expected = OPS[node.op].shape(node.attrs, in_shapes)
    except OpShapeError as exc:
        raise IRError(f"{node.name}: {exc.message}") from None
    if tuple(expected) != tuple(node.shape):
        raise IRError(f"{node.name}: shape {node.shape} but the op infers {expected}")

"""The graph IR: typed nodes, their wiring (a networkx DiGraph on demand), and the spec's
structure for formatting.

Every node knows its op, attributes, inferred output shape (per image, no batch axis),
scoped name (`layer1.0.conv1`) and the source span it came from. Edges carry the input
position (`index`), so concatenation order is explicit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    """A typed architecture graph: the result of elaborating one `arch`.

    Nodes are numbered in creation order (a topological order) and kept in plain lists, which
    is all the front end needs; `g` is the same graph as a networkx DiGraph (edges carry the
    input position, `index`), made on first use — importing networkx alone takes longer than
    elaborating a ResNet. Once made, `g` is the graph: edits to it are what `inputs` sees."""

    name: str
    settings: dict[str, Any]
    structure: list = field(default_factory=list)
    input_id: int = 0
    output_id: int = 0
    span: Span | None = None
    # `assert` conditions on the analysed totals, with the values they may refer to
    budgets: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    # the settings given explicitly (--set, keyword arguments), not from defaults
    given: dict[str, Any] = field(default_factory=dict)
    warnings: list[Any] = field(default_factory=list)  # ArchWarnings, each once
    _nodes: list[Node] = field(default_factory=list, repr=False)
    _inputs: list[list[int]] = field(default_factory=list, repr=False)
    _g: Any = field(default=None, repr=False)

    @property
    def g(self):
        """The graph as a networkx DiGraph (made on first use, then kept in step)."""
        if self._g is None:
            import networkx as nx
            g = nx.DiGraph()
            for node, ins in zip(self._nodes, self._inputs, strict=True):
                g.add_node(node.id, node=node)
                for i, src in enumerate(ins):
                    g.add_edge(src, node.id, index=i)
            self._g = g
        return self._g

    def node(self, nid: int) -> Node:
        return self._nodes[nid]

    @property
    def nodes(self) -> list[Node]:
        """All nodes in creation order, which is a topological order."""
        return list(self._nodes)

    @property
    def node_count(self) -> int:
        return len(self._nodes)

    def inputs(self, nid: int) -> list[int]:
        if self._g is not None:
            preds = self._g.in_edges(nid, data="index")
            return [src for src, _, _ in sorted(preds, key=lambda e: e[2])]
        return list(self._inputs[nid])

    def add_node(self, node: Node, inputs: list[int]) -> None:
        if node.id != len(self._nodes):
            raise IRError(f"node {node.id} added as number {len(self._nodes)}")
        self._nodes.append(node)
        self._inputs.append(list(inputs))
        if self._g is not None:
            self._g.add_node(node.id, node=node)
            for i, src in enumerate(inputs):
                self._g.add_edge(src, node.id, index=i)

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
    import networkx as nx
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

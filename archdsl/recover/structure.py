"""A flat graph → the nesting a spec writes: sequences, joins with their branches, scopes.

The dataflow is decomposed from the output back: a node with one input follows its input;
a join (add, mul, concat) follows the fork its branches leave from — its immediate dominator
— and each branch is decomposed the same way from that fork. This succeeds exactly on the
series-parallel graphs archdsl's `residual`/`concat`/`gate` nesting can write; a graph where
a value crosses from one branch into another stops with the node that does it.

Scopes (the module paths) are laid over the sequences afterwards: consecutive items under the
same module become a scope, so a block instance holds exactly its layers, and a join sits in
the scope that holds all of its branches (DenseNet's concatenation belongs to the layer that
adds the features, wherever its `torch.cat` was written).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from .flat import FlatNet


class StructureError(Exception):
    """The graph cannot be written with archdsl's nesting; `node` is where it fails."""

    def __init__(self, message: str, node: int) -> None:
        super().__init__(message)
        self.node = node


@dataclass
class NodeIt:
    id: int


@dataclass
class JoinIt:
    id: int
    branches: list[list]


@dataclass
class ScopeIt:
    label: str
    items: list
    path: tuple[str, ...] = ()


def decompose(net: FlatNet) -> list:
    """The output's sequence of NodeIt/JoinIt (branches nested), from the input."""
    g = nx.DiGraph()
    g.add_nodes_from(n.id for n in net.nodes)
    for n in net.nodes:
        for i in n.inputs:
            g.add_edge(i, n.id)
    idom = nx.immediate_dominators(g, net.nodes[0].id)
    seen: set[int] = set()
    inputs = {n.id: n.inputs for n in net.nodes}

    def seq(start: int, end: int) -> list:
        items: list = []
        v = end
        while v != start:
            if v in seen:
                raise StructureError("its output is used across branches (the graph is not "
                                     "series-parallel)", v)
            seen.add(v)
            ins = inputs[v]
            if len(ins) == 1:
                items.append(NodeIt(v))
                v = ins[0]
            elif not ins:
                raise StructureError("a branch does not start at its fork", v)
            else:
                fork = idom[v]
                items.append(JoinIt(v, [seq(fork, i) for i in ins]))
                v = fork
        items.reverse()
        return items

    return seq(net.nodes[0].id, net.output)


def item_path(net: FlatNet, item, cache: dict[int, tuple[str, ...]] | None = None
              ) -> tuple[str, ...]:
    """The scope an item is named in: a node's own; a join's, the common scope of what its
    branches hold (the join node itself is only a sum or a concatenation)."""
    if isinstance(item, NodeIt):
        return net.node(item.id).scope
    if cache is not None and id(item) in cache:
        return cache[id(item)]
    path = _join_path(net, item, cache)
    if cache is not None:
        cache[id(item)] = path
    return path


def _join_path(net: FlatNet, item: JoinIt, cache: dict | None) -> tuple[str, ...]:
    own = net.node(item.id).scope
    paths = [item_path(net, x, cache) for br in item.branches for x in br]
    if not paths:
        return own
    common = paths[0]
    for p in paths[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    # the module whose forward made the join, when it holds the branches (a residual's
    # block); but a concatenation with its own input belongs to what adds the new part
    # (DenseNet's torch.cat, written in the next layer or in the dense block)
    dense = net.node(item.id).op == "concat" and not item.branches[0]
    return own if common[:len(own)] == own and not dense else common


def group(net: FlatNet, items: list, base: tuple[str, ...] = (),
          cache: dict[int, tuple[str, ...]] | None = None) -> list:
    """Lay scopes over a sequence: consecutive items under the same module path become a
    ScopeIt; a join's branches are grouped within the join's own scope."""
    cache = {} if cache is None else cache
    out: list = []
    used: set[str] = set()
    i = 0
    while i < len(items):
        path = item_path(net, items[i], cache)
        rel = path[len(base):] if path[:len(base)] == base else ()
        if not rel:
            it = items[i]
            if isinstance(it, JoinIt):
                here = item_path(net, it, cache)
                it = JoinIt(it.id, [group(net, br, here, cache) for br in it.branches])
            out.append(it)
            i += 1
            continue
        head = rel[0]
        j = i
        while j < len(items) and \
                item_path(net, items[j], cache)[len(base):len(base) + 1] == (head,):
            j += 1
        if head in used:
            raise StructureError(f"module `{'.'.join(base + (head,))}` is called in two "
                                 "separate places", items[i].id)
        used.add(head)
        out.append(_scope(net, head, group(net, items[i:j], base + (head,), cache),
                          base + (head,)))
        i = j
    return out


def _scope(net: FlatNet, label: str, items: list, path: tuple[str, ...]):
    """A scope, or — for a module whose forward is one function of no weights
    (torchvision's StochasticDepth) — that node under the module's name."""
    if len(items) == 1 and isinstance(items[0], NodeIt):
        node = net.node(items[0].id)
        if node.name is None and not node.keep_name:
            node.name = ".".join(path)
            node.scope = path[:-1]
            return items[0]
    return ScopeIt(label, items, path)

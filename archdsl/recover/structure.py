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

from collections import Counter
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


def lift_out_of_layers(net: FlatNet) -> None:
    """A module that holds weights it applies itself (timm's BatchNormAct2d: F.batch_norm,
    then its `act` child) is a layer in archdsl, and a layer cannot also be a scope: the
    weightless work inside it moves out, beside the layer, under no name of its own."""
    layers = {n.name for n in net.nodes if n.keep_name}
    for node in net.nodes:
        for k in range(len(node.scope), 0, -1):
            if ".".join(node.scope[:k]) in layers and not node.keep_name:
                node.scope = node.scope[:k - 1]
                node.name = None
                break


def unshare(net: FlatNet) -> None:
    """What a module called more than once computes sits, nameless, in its parent's scope."""
    for node in net.nodes:
        for k in range(1, len(node.scope) + 1):
            if ".".join(node.scope[:k]) in net.shared and not node.keep_name:
                node.scope, node.name = node.scope[:k - 1], None
                break


def name_function_modules(net: FlatNet) -> None:
    """A module whose forward is one function of no weights (torchvision's StochasticDepth,
    calling stochastic_depth()) is that node, under the module's name."""
    inside: Counter[tuple[str, ...]] = Counter()
    for node in net.nodes:
        for k in range(1, len(node.scope) + 1):
            inside[node.scope[:k]] += 1
    for node in net.nodes:
        if node.scope and node.name is None and inside[node.scope] == 1 and \
                ".".join(node.scope) in net.classes:
            node.name = ".".join(node.scope)
            node.scope = node.scope[:-1]


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


class _Paths:
    """Which scope each item is named in (joins' computed once)."""

    def __init__(self, net: FlatNet) -> None:
        self.net = net
        self.cache: dict[int, tuple[str, ...]] = {}
        self.under: Counter[tuple[str, ...]] = Counter()  # scope → nodes within it
        for node in net.nodes:
            for k in range(len(node.scope) + 1):
                self.under[node.scope[:k]] += 1

    def of(self, item) -> tuple[str, ...]:
        """A node's own scope; a join's, where its sum or concatenation is written."""
        if isinstance(item, NodeIt):
            return self.net.node(item.id).scope
        if id(item) not in self.cache:
            self.cache[id(item)] = self._join(item)
        return self.cache[id(item)]

    def _join(self, item: JoinIt) -> tuple[str, ...]:
        own = self.net.node(item.id).scope
        # a function called by the parent's forward in the middle of a block's modules
        # (F.gelu between two Linear children) can sit anywhere: it has no name to keep
        items = [x for br in item.branches for x in br]
        paths = [self.of(x) for x in items if not self.free(x)] or \
            [self.of(x) for x in items]
        if not paths:
            return own
        common = paths[0]
        for p in paths[1:]:
            n = 0
            while n < min(len(common), len(p)) and common[n] == p[n]:
                n += 1
            common = common[:n]
        # The module whose forward made the join, when the branches' common scope lies
        # wholly inside the join (InvertedResidual's `conv` Sequential holds just the body);
        # otherwise that common scope: it holds the join (a block written as a ModuleDict
        # and driven by its parent's forward), or the join concatenates its own input with
        # what the scope adds (DenseNet's torch.cat, written in the next layer).
        # Two branches opening the same scope there (a ModuleList of branches) also put it
        # in their common scope.
        dense = self.net.node(item.id).op == "concat" and not item.branches[0]
        inside = self.under[common] == sum(
            1 for n in _nodes(item.branches) if self.net.node(n).scope[:len(common)] == common)
        if common[:len(own)] == own and inside and not dense and \
                not self._shared_heads(item, own):
            return own
        return common

    def free(self, item) -> bool:
        """A node whose scope does not matter: no weights, no module of its own."""
        if not isinstance(item, NodeIt):
            return False
        node = self.net.node(item.id)
        return node.name is None and not node.keep_name

    def _shared_heads(self, item: JoinIt, base: tuple[str, ...]) -> bool:
        seen: set[str] = set()
        for br in item.branches:
            heads = {p[len(base)] for p in map(self.of, br) if len(p) > len(base)}
            if heads & seen:
                return True
            seen |= heads
        return False


def _nodes(branches: list[list]):
    for br in branches:
        for x in br:
            yield x.id
            if isinstance(x, JoinIt):
                yield from _nodes(x.branches)


def group(net: FlatNet, items: list) -> list:
    """Lay scopes over a sequence: consecutive items under the same module path become a
    ScopeIt; a join's branches are grouped within the join's own scope."""
    return _group(_Paths(net), items, ())


def _group(paths: _Paths, items: list, base: tuple[str, ...]) -> list:
    out: list = []
    used: set[str] = set()
    i = 0
    while i < len(items):
        path = paths.of(items[i])
        rel = path[len(base):] if path[:len(base)] == base else ()
        if not rel:
            it = items[i]
            if isinstance(it, JoinIt):
                it = JoinIt(it.id, [_group(paths, br, paths.of(it)) for br in it.branches])
            out.append(it)
            i += 1
            continue
        head = rel[0]
        j = i
        while j < len(items):
            if paths.of(items[j])[len(base):len(base) + 1] == (head,):
                j += 1
                continue
            # free nodes between two items of the scope go in with them
            k = j
            while k < len(items) and paths.free(items[k]):
                k += 1
            if k == j or k == len(items) or \
                    paths.of(items[k])[len(base):len(base) + 1] != (head,):
                break
            j = k
        if head in used:
            raise StructureError(f"module `{'.'.join(base + (head,))}` is called in two "
                                 "separate places", items[i].id)
        used.add(head)
        out.append(ScopeIt(head, _group(paths, items[i:j], base + (head,)), base + (head,)))
        i = j
    return out

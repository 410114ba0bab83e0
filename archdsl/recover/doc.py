"""The scoped tree (structure.py) → statements (forms.py), with labels and attachments.

A conv/FC/linear followed in its sequence by a norm and/or activation becomes one layer
(`conv3-64 norm=bn act=relu`, `conv1-64 norm=bn eps=0.001`: one row of `stats`, as a paper
counts it) where their attributes can be written on it, and
wherever elaboration then names the norm as the module is named; joins take the form a person
writes: `residual {}` (a sum with the identity, or with a projection where the shape
changes), `gate {}` (a product with the identity), `dense {}` (a concatenation with it).
"""

from __future__ import annotations

from collections import Counter

from ..layer_attrs import routable_for
from ..ops import OPS, attachable
from .flat import FlatNet, FlatNode
from .forms import Group, Join, Layer, Stmt
from .naming import Sim, name_layer
from .structure import JoinIt, NodeIt, ScopeIt


def build(net: FlatNet, items: list) -> list[Stmt]:
    return _scope(net, items, (), 0)


def _scope(net: FlatNet, items: list, path: tuple[str, ...], prev: int) -> list[Stmt]:
    return _seq(net, items, path, Sim(_wishes(net, items)), prev)


def _wish(node: FlatNode) -> str | None:
    return node.name.rsplit(".", 1)[-1] if node.name else None


def _wishes(net: FlatNet, items: list) -> Counter[str]:
    """The labels the items of one scope want (joins' branches are named in the scope)."""
    out: Counter[str] = Counter()
    for it in items:
        if isinstance(it, ScopeIt):
            out[it.label] += 1
        elif isinstance(it, NodeIt):
            wish = _wish(net.node(it.id))
            if wish is not None:
                out[wish] += 1
        else:
            for br in it.branches:
                out += _wishes(net, br)
    return out


def _seq(net: FlatNet, items: list, path: tuple[str, ...], sim: Sim, prev: int) -> list[Stmt]:
    out: list[Stmt] = []
    i = 0
    while i < len(items):
        it = items[i]
        if isinstance(it, NodeIt):
            layer = _layer(net, it, _followers(net, items, i), sim)
            out.append(layer)
            i += len(layer.ids)
            prev = layer.ids[-1]
            continue
        if isinstance(it, ScopeIt):
            sim.release(it.label)
            auto = it.label == sim.peek()
            sim.claim(it.label)
            body = _scope(net, it.items, it.path, prev)
            out.append(Group(label=it.label, body=body, cls=net.classes.get(".".join(it.path)),
                             auto=auto))
            prev = _last(it.items, prev)
        else:
            out.append(_join(net, it, path, sim, prev))
            prev = it.id
        i += 1
    return out


def _last(items: list, default: int) -> int:
    if not items:
        return default
    last = items[-1]
    return _last(last.items, default) if isinstance(last, ScopeIt) else last.id


def _followers(net: FlatNet, items: list, i: int) -> list[FlatNode]:
    """The norm and then the activation that may attach to items[i] (at their defaults)."""
    primary = net.node(items[i].id)
    if not OPS[primary.op].attaches:
        return []
    out: list[FlatNode] = []
    for category in ("norm", "act"):
        j = i + 1 + len(out)
        if j < len(items) and isinstance(items[j], NodeIt):
            node = net.node(items[j].id)
            if node.op in attachable(category) and _writable(primary.op, out + [node]):
                out.append(node)
    return out


def _writable(primary: str, chosen: list[FlatNode]) -> bool:
    """Can the attributes of these attached ops be written on the layer? Those not at their
    defaults must be ones the layer passes on (`conv1-64 norm=bn eps=0.001`), not its own
    (a conv's `k`, not LRN's), and of one of them only."""
    routable = routable_for(primary)
    seen = Counter(k for f in chosen for k in OPS[f.op].attrs)
    return all(v == _defaults(f.op).get(k) or (k in routable and seen[k] == 1)
               for f in chosen for k, v in f.attrs.items())


def attached_attrs(primary: str, chosen: list[FlatNode]) -> dict:
    """The attributes of the attached ops that the layer writes for them."""
    routable = routable_for(primary)
    seen = Counter(k for f in chosen for k in OPS[f.op].attrs)
    return {k: v for f in chosen for k, v in f.attrs.items() if k in routable and seen[k] == 1}


def _defaults(op: str) -> dict:
    from ..ops import REQUIRED
    return {k: s.default for k, s in OPS[op].attrs.items() if s.default is not REQUIRED}


def _layer(net: FlatNet, it: NodeIt, followers: list[FlatNode], sim: Sim) -> Layer:
    node = net.node(it.id)
    for f in [node] + followers:
        sim.release(_wish(f))
    options = [followers[:n] for n in range(len(followers), -1, -1)]
    for option in options:
        trial = sim.copy()
        named = name_layer(trial, _wish(node), node.keep_name, node.op)
        if named is None:
            continue
        label, name = named
        if all(_attach_ok(trial, f, name, label is not None) for f in option):
            sim.adopt(trial)
            ins = net.node(node.inputs[0]).shape if node.inputs else None
            for f in followers:
                wish = _wish(f)
                if f not in option and wish is not None:
                    sim.reserved[wish] += 1  # given back: named on its own when its turn comes
            return Layer(label=label, op=node.op, attrs=dict(node.attrs), in_shape=ins,
                         attach=[f.op for f in option], ids=[node.id] + [f.id for f in option],
                         attach_attrs=attached_attrs(node.op, option))
    raise AssertionError(f"{node.name}: no label fits")  # a keep-name node always can


def _attach_ok(sim: Sim, node: FlatNode, primary: str, labelled: bool) -> bool:
    name = sim.attached(primary, labelled, node.op)
    if node.keep_name:
        return name == _wish(node)
    return sim.reserved[name] <= 0 or name == _wish(node)


def _join(net: FlatNet, it: JoinIt, path: tuple[str, ...], sim: Sim, prev: int) -> Join:
    node = net.node(it.id)
    branches = it.branches
    empty = [not b for b in branches]
    kind, body, shortcut = node.op, branches, None
    if len(branches) == 2 and node.op == "add" and any(empty) and not all(empty):
        kind, body = "residual", [branches[empty.index(False)]]
    elif len(branches) == 2 and node.op == "add" and not any(empty):
        k = _projection(net, branches, prev)
        # computed before the body (RegNet's `proj(x) + f(x)`), it is written first: an add
        if k is not None and _first(branches[k]) > _first(branches[1 - k]):
            kind, body = "residual", [branches[1 - k]]
            shortcut = branches[k][0]
    elif len(branches) == 2 and node.op == "mul" and any(empty) and not all(empty):
        kind, body = "gate", [branches[empty.index(False)]]
    elif len(branches) == 2 and node.op == "concat" and empty[0] and not empty[1]:
        kind, body = "dense", [branches[1]]
    stmts = [_seq(net, b, path, sim, prev) for b in body]
    short = None
    if shortcut is not None:
        sim.release(shortcut.label)
        sim.claim(shortcut.label)
        short = (shortcut.label, _scope(net, shortcut.items, shortcut.path, prev))
    label = None if sim.free(sim.peek()) else sim.invent(node.op)
    if label is None:
        sim.auto()
    return Join(label=label, kind=kind, branches=stmts, shortcut=short)


def _projection(net: FlatNet, branches: list[list], prev: int) -> int | None:
    """Which branch of a two-branch sum is a residual's projection shortcut: a single scope
    (torchvision's `downsample`), beside a body that changes the shape (archdsl uses the
    shortcut only then)."""
    fork = net.node(prev).shape
    fits = [k for k in (1, 0) if len(branches[k]) == 1 and isinstance(branches[k][0], ScopeIt)
            and net.node(_last(branches[1 - k], prev)).shape != fork]
    # of two that could be, the lighter one (RegNet's `proj(x) + f(x)`)
    return min(fits, key=lambda k: _count(branches[k])) if fits else None


def _first(items: list) -> int:
    """The first node of a branch, in the order the network computes them."""
    it = items[0]
    return _first(it.items) if isinstance(it, ScopeIt) else \
        min([it.id] + [_first(b) for b in it.branches if b]) if isinstance(it, JoinIt) else it.id


def _count(items: list) -> int:
    n = 0
    for it in items:
        if isinstance(it, ScopeIt):
            n += _count(it.items)
        elif isinstance(it, JoinIt):
            n += 1 + sum(_count(b) for b in it.branches)
        else:
            n += 1
    return n

"""From a traced module to a `FlatNet`: each fx node's value, mapped onto archdsl ops.

A traced value is one of: `Ten` (the output of an archdsl node, held by PyTorch in some
layout), `Param` (a parameter read with get_attr), `Expanded` (a parameter broadcast over the
batch), `Opaque` (something archdsl cannot express), or a plain Python value (`x.shape[0]`).
Layouts say how PyTorch holds an archdsl shape (per image, no batch axis):

- `std`: as archdsl writes it — N×C×H×W for a map, N×L×D for tokens, N×D for a vector;
- `last`: a C×H×W map held channels-last, N×H×W×C (ConvNeXt's permuted blocks);
- `cl`: a C×H×W map with its pixels flattened, N×C×(H·W) (on the way to tokens);
- `flat`: any value flattened to N×(C·H·W); an FC layer takes the value itself, and a
  flatten node is made only when something else needs the vector;
- `grouped` / `shuffled`: a C×H×W map viewed as N×G×(C/G)×H×W, and that transposed to
  N×(C/G)×G×H×W (a channel shuffle half done: viewed back as N×C×H×W it is one).

Some values are made into nodes only when something uses them, so that what reads them can
choose the node: `Part` (channels start to end of a map: `x[:, 1:3]`, a chunk), `Picked`
(`x[:, i]`, one channel without its axis), `Scaled` (a value times a number plus a number).
torchvision's `transform_input` — each channel picked, scaled, shifted and concatenated
again — is then one `affine` node.

The handlers for modules and functions (modules.py, functions.py) return values; every value
a handler makes is checked against the shape PyTorch computed for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from archdsl.ops import OpShapeError, Shape, fmt_shape
from archdsl.recover.flat import FlatNet, Unmapped


class Unmappable(Exception):
    """This node has no archdsl equivalent; `reason` says what it does, `suggestion` what
    to do about it."""

    def __init__(self, reason: str, suggestion: str = "") -> None:
        super().__init__(reason)
        self.reason, self.suggestion = reason, suggestion


@dataclass(frozen=True)
class Ten:
    nid: int
    layout: str = "std"
    groups: int = 0  # of the `grouped` and `shuffled` layouts


@dataclass(frozen=True)
class Part:
    """Channels `start` to `end` of `src` (features of tokens), not made yet."""

    src: Ten
    start: int
    end: int
    scope: tuple[str, ...] = ()


@dataclass(frozen=True)
class Picked:
    """`x[:, i]`: channel i of a map without its channel axis (unsqueezed, a Part)."""

    src: Ten
    index: int
    scope: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scaled:
    """`src * scale + shift` with numbers, not made yet (an `affine` when it is)."""

    src: Ten | Part
    scale: float
    shift: float
    scope: tuple[str, ...] = ()


PENDING = (Part, Picked, Scaled)


@dataclass(frozen=True)
class Param:
    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Expanded:
    param: Param


@dataclass(frozen=True)
class Opaque:
    """The value of an unmapped node (a partial import goes on past it)."""

    what: str = ""


class Builder:
    """Maps the nodes of one traced graph in order; `net` is the result."""

    def __init__(self, gm: fx.GraphModule, values: dict[fx.Node, Any], input_shape: Shape,
                 name: str, original: nn.Module | None = None) -> None:
        self.gm, self.recorded, self.original = gm, values, original
        self.net = FlatNet.start(name, input_shape)
        self.values: dict[fx.Node, Any] = {}
        self.used_names: set[str] = set()
        self.flat_nodes: dict[int, int] = {}  # map nid → its flatten node, made once
        self.concats: dict[tuple[int, ...], int] = {}  # leaves → concat node
        self.node: fx.Node | None = None  # the fx node being mapped
        self.made: dict[Any, Ten] = {}  # pending value → its node, made once

    # ------------------------------------------------------------------ nodes
    def shape(self, t: Ten) -> Shape:
        return self.net.nodes[t.nid].shape

    def op_of(self, t: Ten) -> str:
        return self.net.nodes[t.nid].op

    def emit(self, op: str, attrs: dict[str, Any], inputs: list[Ten], name: str | None = None,
             scope: tuple[str, ...] | None = None, layout: str = "std") -> Ten:
        """Add an archdsl node; its shape comes from the op's declaration."""
        if name is not None and name in self.used_names:
            raise Unmappable("the module is called more than once (shared weights)",
                             "archdsl gives every layer its own weights; unshare them")
        if scope is None and name is None:
            scope = self.scope_of(self.node)
            self._note_shared(self.node)
        try:
            node = self.net.add(op, attrs, [t.nid for t in inputs], name, scope)
        except OpShapeError as exc:
            raise Unmappable(f"archdsl's {op} rejects it: {exc.message}") from None
        if node.keep_name:
            self.used_names.add(str(name))
        return Ten(node.id, layout)

    def module_name(self) -> str | None:
        return self.node.target if self.node is not None and self.node.op == "call_module" \
            else None  # type: ignore[return-value]

    @staticmethod
    def scope_of(node: fx.Node | None) -> tuple[str, ...]:
        stack = node.meta.get("nn_module_stack") if node is not None else None
        if not stack:
            return ()
        path = list(stack.values())[-1][0]
        if node.op == "call_module":  # the module itself is the last entry
            path = ".".join(node.target.split(".")[:-1])  # type: ignore[union-attr]
        return tuple(p for p in str(path).split(".") if p)

    def constant(self, param: str, default: float = 1e-6) -> float:
        """A parameter's value when all its entries are equal (a fresh model's init), which
        becomes its op's `init` (layerscale, prelu); otherwise `default`."""
        if self.original is not None:
            try:
                t = self.original.get_parameter(param)
            except AttributeError:
                t = None
            if t is not None and t.device.type != "meta" and t.numel():
                first = t.detach().flatten()[0]
                if bool((t == first).all()):
                    return _shortest(first)
        return default

    def _note_shared(self, node: fx.Node | None) -> None:
        """torch.fx keys a module's second and later calls `path@N`."""
        for key, (path, _) in (node.meta.get("nn_module_stack") or {}).items() \
                if node is not None else ():
            if "@" in str(key):
                self.net.shared.add(str(path))

    # ------------------------------------------------------------------ layouts
    def std(self, v: Any, what: str = "this op") -> Ten:
        """A value in archdsl's own layout (a `flat` view becomes a flatten node)."""
        t = self.tensor(v, what)
        if t.layout == "std":
            return t
        if t.layout == "flat":
            if t.nid not in self.flat_nodes:
                src = self.net.nodes[t.nid]
                self.flat_nodes[t.nid] = self.emit("flatten", {}, [Ten(t.nid)],
                                                   scope=src.scope).nid
            return Ten(self.flat_nodes[t.nid])
        raise Unmappable(f"{what} needs an N×C×H×W map, N×L×D tokens or a vector; this input "
                         f"is held {_LAYOUTS[t.layout]}")

    def std_map(self, v: Any, what: str) -> Ten:
        t = self.std(v, what)
        if len(self.shape(t)) != 3:
            raise Unmappable(f"{what} needs an N×C×H×W map, got "
                             f"N×{fmt_shape(self.shape(t))}")
        return t

    def tensor(self, v: Any, what: str = "this op") -> Ten:
        if isinstance(v, Ten):
            return v
        if isinstance(v, PENDING):
            if v not in self.made:
                self.made[v] = self._make(v, what)
            return self.made[v]
        if isinstance(v, Opaque):
            raise _Downstream()
        if isinstance(v, (Param, Expanded)):
            raise Unmappable(f"{what} reads a parameter directly",
                             "archdsl knows parameters only as parts of its layers "
                             "(class_token, pos_embedding, layerscale)")
        raise Unmappable(f"{what} needs a tensor, got {type(v).__name__}")

    def _make(self, v: Any, what: str) -> Ten:
        if isinstance(v, Picked):
            raise Unmappable(f"{what} reads one channel of a map without its channel axis",
                             "archdsl keeps the axis: x[:, i:i + 1], or unsqueeze(x[:, i], 1)")
        if isinstance(v, Part):
            return self.emit("slice", {"start": v.start, "end": v.end}, [Ten(v.src.nid)],
                             scope=v.scope, layout=v.src.layout)
        src = self.tensor(v.src, what)
        return self.emit("affine", {"scale": (v.scale,), "shift": (v.shift,)}, [Ten(src.nid)],
                         scope=v.scope, layout=src.layout)

    def torch_shape(self, v: Ten) -> tuple[int, ...]:
        """How PyTorch holds this value for a batch of N, without N."""
        shape = self.shape(v)
        if v.layout == "last":
            return (shape[1], shape[2], shape[0])
        if v.layout == "cl":
            return (shape[0], shape[1] * shape[2])
        if v.layout == "flat":
            return (math.prod(shape),)
        if v.layout in ("grouped", "shuffled"):
            g, c = v.groups, shape[0] // v.groups
            return (g, c, *shape[1:]) if v.layout == "grouped" else (c, g, *shape[1:])
        return tuple(shape)

    # ------------------------------------------------------------------ concatenation
    def concat(self, items: list[Ten]) -> Ten:
        """torch.cat along channels, re-associated onto earlier concatenations: DenseNet's
        cat([x0, y1, y2]) after cat([x0, y1]) = c1 is cat(c1, y2), as `dense {}` writes it."""
        leaves: list[int] = []
        for t in items:
            leaves.extend(self.leaves(t.nid))
        key = tuple(leaves)
        if key in self.concats:
            return Ten(self.concats[key])
        for j in range(len(leaves) - 1, 1, -1):
            prefix = self.concats.get(tuple(leaves[:j]))
            if prefix is not None:
                rest = self._regroup(items, j)
                if rest is not None:
                    items = [Ten(prefix)] + rest
                    break
        out = self.emit("concat", {}, items)
        self.concats[key] = out.nid
        return out

    def leaves(self, nid: int) -> list[int]:
        node = self.net.nodes[nid]
        if node.op != "concat":
            return [nid]
        return [leaf for i in node.inputs for leaf in self.leaves(i)]

    def _regroup(self, items: list[Ten], j: int) -> list[Ten] | None:
        """The items after the first j leaves, if j falls between items."""
        count = 0
        for k, t in enumerate(items):
            if count == j:
                return items[k:]
            count += len(self.leaves(t.nid))
        return None


def _shortest(value: torch.Tensor) -> float:
    """The shortest decimal that is this value in its dtype: a float32 0.1 is 0.1 (not
    0.10000000149011612), as the spec would write it and the backend would store it."""
    for digits in range(1, 18):
        x = float(f"{float(value):.{digits}g}")
        if torch.tensor(x, dtype=value.dtype) == value:
            return x
    return float(value)


class _Downstream(Exception):
    """An input is the value of an unmapped node: this one is not reported on its own."""


_LAYOUTS = {"last": "channels-last (N×H×W×C)", "cl": "as N×C×(H·W)",
            "flat": "flattened", "std": "as archdsl's", "grouped": "in groups (N×G×C/G×H×W)",
            "shuffled": "in transposed groups (N×C/G×G×H×W)"}


def describe_shapes(builder: Builder, node: fx.Node) -> str:
    """`in → out` shapes of a traced node, with the batch axis, for reports."""
    def one(v: Any) -> str:
        if isinstance(v, torch.Tensor):
            return "×".join(str(d) for d in v.shape)
        if isinstance(v, (tuple, list)) and v and isinstance(v[0], torch.Tensor):
            return one(v[0])
        return "?"
    ins = [one(builder.recorded.get(a)) for a in node.all_input_nodes
           if isinstance(builder.recorded.get(a), (torch.Tensor, tuple, list))]
    return f"{' + '.join(ins) or '—'} → {one(builder.recorded.get(node))}"


def report(builder: Builder, node: fx.Node, exc: Unmappable, op: str) -> None:
    if builder.net.cut is None:
        builder.net.cut = len(builder.net.nodes) - 1
    where = node.target if node.op == "call_module" else \
        ".".join(builder.scope_of(node)) or node.name
    for u in builder.net.unmapped:
        if u.op == op and u.reason == exc.reason:
            u.count += 1
            return
    builder.net.unmapped.append(Unmapped(str(where), op, describe_shapes(builder, node),
                                         exc.reason, exc.suggestion))

"""Layers in paper notation, as architecture tables print them: `conv3-64`, `conv7-64/2`,
`dwconv3/2`, `maxpool`, `maxpool3/2`, `FC-4096`, `LRN`, `soft-max`.

Shared by the diff (`diff.py`) and the configuration table (`paper_table.py`). Unlike
`formatter.layer_text` (every attribute explicit, for round trips), this is the short form a
paper uses: the kernel, the channels and a stride other than 1; padding and bias are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .formatter import attr_value
from .ir import Graph, JoinRef, Node, NodeRef, ScopeRef
from .ops import OPS, Shape


@dataclass
class Layer:
    """One spec layer: its primary node and the nodes attached to it (`norm=bn act=relu`)."""

    primary: Node
    attached: list[Node]
    in_shapes: tuple[Shape | None, ...]

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def shape(self) -> Shape | None:
        return self.primary.shape

    @cached_property
    def content(self) -> str:
        """What makes two layers the same apart from their names: op, attributes, attached
        norm/activation (with theirs), input and output shapes."""
        def attrs(n: Node) -> tuple:
            return tuple(sorted((k, repr(v)) for k, v in n.attrs.items()))
        return repr((self.primary.op, attrs(self.primary),
                     tuple((n.op, attrs(n)) for n in self.attached), self.in_shapes, self.shape))

    @property
    def norm(self) -> str:
        return next((n.op for n in self.attached if OPS[n.op].category == "norm"), "none")

    @property
    def act(self) -> str:
        return next((n.op for n in self.attached if OPS[n.op].category == "act"), "none")


def layers(graph: Graph) -> dict[str, Layer]:
    """The spec layers of a graph by name, in order (the rows of `Stats.rows`)."""
    by_primary: dict[int, Layer] = {}
    for node in graph.nodes:
        if node.op == "input":
            continue
        if node.layer == node.id:
            ins = tuple(graph.node(i).shape for i in graph.inputs(node.id))
            by_primary[node.id] = Layer(node, [], ins)
        else:
            by_primary[node.layer].attached.append(node)
    return {lay.name: lay for lay in by_primary.values()}


def notation(node: Node, in_shape: Shape | None = None, stride: bool = True) -> str:
    """A node in paper notation; `stride=False` leaves the stride out (block summaries)."""
    a = node.attrs
    op = node.op
    if op == "conv":
        k, out, s, g = a["k"], a["out"], a.get("stride", 1), a.get("groups", 1)
        cin = in_shape[0] if in_shape else None
        k = attr_value("k", k)
        if g > 1 and g == cin:
            text = f"dwconv{k}" + ("" if out == cin else f"-{out}")
        else:
            text = f"conv{k}-{out}"
        if stride and s != 1:
            text += f"/{attr_value('stride', s)}"
        if g > 1 and g != cin:
            text += f" groups={g}"
        if a.get("dilation", 1) != 1:
            text += f" dilation={a['dilation']}"
        return text
    if op == "fc":
        return f"FC-{a['out']}"
    if op == "linear":
        return f"linear-{a['out']}"
    if op == "attention":
        return f"attention({a['heads']})"
    if op == "window_attention":
        shift = f" shift={_size(a['shift'])}" if a["shift"] else ""
        v2 = (f" position_bias={a['position_bias']}" if a["position_bias"] != "table" else "") \
            + (" cosine=true" if a["cosine"] else "") \
            + (" partition=grid" if a["partition"] == "grid" else "")
        return f"window_attention({a['heads']}) window={_size(a['window'])}{shift}{v2}"
    if op == "patch_merging":
        return f"patch_merging-{a['out']}"
    if op in ("maxpool", "avgpool"):
        k, s = a["k"], a["stride"]
        if k == 2 and s == 2:
            return op
        return f"{op}{attr_value('k', k)}" + (f"/{attr_value('stride', s)}" if stride else "")
    if op == "adaptive_avgpool":
        return f"adaptive_avgpool({attr_value('size', a['size'])})"
    if op == "lrn":
        return "LRN"
    if op == "softmax":
        return "soft-max"
    if op == "dropout":
        p = a.get("p", 0.5)
        return "dropout" if p == 0.5 else f"dropout({p:g})"
    return call_notation(node)


def call_notation(node: Node) -> str:
    """Any other op as it is called, with its positional arguments where they are not the
    defaults: `channel_shuffle(2)`, `slice(0, 58)`, `leakyrelu(0.2)`, `relu`."""
    opdef = OPS[node.op]
    args = [(k, node.attrs.get(k)) for k in opdef.positional]
    if all(v == opdef.attrs[k].default for k, v in args):
        return node.op
    return f"{node.op}({', '.join(attr_value(k, v) for k, v in args)})"


def _size(value: int | tuple[int, int]) -> str:
    """A window or shift as written: `7`, or `{[7, 9]}` (height, width)."""
    return str(value) if isinstance(value, int) else "{[" + ", ".join(map(str, value)) + "]}"


def layer_notation(layer: Layer, stride: bool = True) -> str:
    return notation(layer.primary, layer.in_shapes[0] if layer.in_shapes else None, stride)


def shortcut_ids(graph: Graph) -> set[int]:
    """Nodes on the side branches of residual joins: every branch of an `add` after a
    non-empty first one (a residual's shortcut projection). Papers' tables leave them out."""
    out: set[int] = set()

    def ids(items: list) -> list[int]:
        found: list[int] = []
        for it in items:
            if isinstance(it, NodeRef):
                found.append(it.id)
            elif isinstance(it, ScopeRef):
                found += ids(it.items)
            elif isinstance(it, JoinRef):
                found.append(it.id)
                for b in it.branches:
                    found += ids(b)
        return found

    def walk(items: list) -> None:
        for it in items:
            if isinstance(it, ScopeRef):
                walk(it.items)
            elif isinstance(it, JoinRef):
                if graph.node(it.id).op == "add" and it.branches and it.branches[0]:
                    for b in it.branches[1:]:
                        out.update(ids(b))
                for b in it.branches:
                    walk(b)

    walk(graph.structure)
    return out


def branch_ids(graph: Graph) -> set[int]:
    """Nodes inside any join's branches (not directly in a scope's sequence)."""
    out: set[int] = set()

    def walk(items: list, inside: bool) -> None:
        for it in items:
            if isinstance(it, NodeRef):
                if inside:
                    out.add(it.id)
            elif isinstance(it, ScopeRef):
                walk(it.items, inside)
            elif isinstance(it, JoinRef):
                for b in it.branches:
                    walk(b, True)

    walk(graph.structure, False)
    return out


def arch_labels(archs: list[Any]) -> list[str]:
    """Column/side labels that tell the architectures apart: the name, plus the settings in
    which architectures of the same name differ (`mobilenet_v1 (alpha=0.5)`); where those
    are the same, the settings given to each (`small (w=8)` beside `small`), and where those
    are too, the file each came from (`small (old/small.arch)`)."""
    from .formatter import spec_value

    def differing(get) -> list[str]:
        return [f"{k}={spec_value(v)}" for k, v in get(a).items()
                if any(get(b).get(k) != v for b in same)]

    labels = []
    for a in archs:
        same = [b for b in archs if b.name == a.name and b is not a]
        parts = differing(lambda x: x.settings)
        if same and not parts:
            parts = [f"{k}={spec_value(v)}" for k, v in a.graph.given.items()]
        if same and not parts and any(_file(b) != _file(a) for b in same):
            parts = [_file(a)]
        labels.append(a.name + (f" ({', '.join(parts)})" if parts else ""))
    return labels


def _file(arch: Any) -> str:
    return str(getattr(arch.program, "file", "") or "")

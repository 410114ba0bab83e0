"""The canonical formatter: a typed graph printed back as spec text.

Everything is explicit — every item labelled, every attribute written, blocks and repetition
expanded — so `parse(format(g))` elaborates to the same graph (tested across the zoo).
"""

from __future__ import annotations

from typing import Any

from .ir import Graph, JoinRef, Node, NodeRef, ScopeRef
from .ops import OPS, fmt_axes
from .syntax import VALID_LABEL

INDENT = "  "


def format_graph(graph: Graph) -> str:
    lines = [f"# canonical form of `{graph.name}`"]
    if graph.settings:
        lines.append("# settings: " + ", ".join(f"{k}={spec_value(v)}" for k, v in
                                                graph.settings.items()))
    lines.append(f"arch {graph.name}")
    lines.append("input " + "x".join(str(d) for d in graph.input_shape))
    lines.extend(_items(graph, graph.structure, 0))
    return "\n".join(lines) + "\n"


def _items(graph: Graph, items: list, depth: int) -> list[str]:
    pad = INDENT * depth
    out: list[str] = []
    i = 0
    while i < len(items):
        it = items[i]
        if isinstance(it, NodeRef):
            node = graph.node(it.id)
            attached = _attached(graph, items, i)
            out.append(pad + f"{label_text(node.label)}: {layer_text(node)}" + "".join(
                f" {key}={graph.node(ref.id).op}" + "".join(
                    f" {k}={attr_value(k, v)}" for k, v in sorted(extra.items()))
                for key, ref, extra in attached))
            i += 1 + len(attached)
            continue
        if isinstance(it, ScopeRef):
            out.append(pad + f"{label_text(it.label)}: (")
            out.extend(_items(graph, it.items, depth + 1))
            out.append(pad + ")")
        elif isinstance(it, JoinRef):
            node = graph.node(it.id)
            out.append(pad + f"{label_text(node.label)}: {node.op} {{")
            for b, branch in enumerate(it.branches):
                if b:
                    out.append(pad + "|")
                out.extend(_items(graph, branch, depth + 1))
            out.append(pad + "}")
        i += 1
    return out


def _attached(graph: Graph, items: list, i: int) -> list[tuple[str, NodeRef, dict]]:
    """The norm/act nodes after items[i] that belong to its layer, with their attributes that
    differ from the op's defaults, so they can be written `norm=bn eps=0.001 act=relu` and keep
    their layer grouping: each such attribute is one only that node takes (the layer passes it
    on), else the node is written as a layer of its own."""
    primary = graph.node(items[i].id)
    if not OPS[primary.op].attaches:
        return []
    found: list[tuple[str, NodeRef, dict]] = []
    for key, category in (("norm", "norm"), ("act", "act")):
        j = i + 1 + len(found)
        if j < len(items) and isinstance(items[j], NodeRef):
            node = graph.node(items[j].id)
            if node.layer == primary.id and OPS[node.op].category == category:
                found.append((key, items[j], {k: v for k, v in node.attrs.items()
                                              if v != _defaults(node.op).get(k)}))
    kinds = [graph.node(ref.id).op for _, ref, _ in found]
    for n, (_, _, extra) in enumerate(found):
        takers = (sum(k in OPS[kind].attrs for kind in kinds) for k in extra)
        if any(k in OPS[primary.op].attrs for k in extra) or any(t > 1 for t in takers):
            return found[:n]
    return found


def _defaults(op: str) -> dict[str, Any]:
    from .ops import REQUIRED
    return {k: s.default for k, s in OPS[op].attrs.items() if s.default is not REQUIRED}


def layer_text(node: Node) -> str:
    """One node as a layer token with every attribute explicit: conv3-64/2 pad=1 ..."""
    op = OPS[node.op]
    a = dict(node.attrs)
    text = node.op
    if op.kernel:
        text += attr_value(op.kernel, a.pop(op.kernel))
    if op.dash:
        text += f"-{a.pop(op.dash)}"
    if op.slash and not isinstance(a[op.slash], tuple):  # a per-axis stride: stride=1x2
        text += f"/{a.pop(op.slash)}"
    rest = " ".join(f"{k}={attr_value(k, v)}" for k, v in sorted(a.items()))
    return f"{text} {rest}" if rest else text


def attr_value(key: str, v: Any) -> str:
    """An attribute's value as spec text: per-axis pairs as the paper writes them (`k=1x7`,
    and padding as PyTorch does, `pad=0,3`)."""
    if isinstance(v, tuple) and len(v) == 2 and all(type(x) is int for x in v):
        return fmt_axes(v, "," if key == "pad" else "x")
    return spec_value(v)


def label_text(label: str) -> str:
    """A label as spec text writes it: quoted unless it is a name or an index
    (a dashed name like torchvision's RegNet `block1-0` needs no quotes)."""
    return label if VALID_LABEL.match(label) else f'"{label}"'


def spec_value(v: Any) -> str:
    """A value as spec text would write it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return v if v.isidentifier() else f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(spec_value(x) for x in v) + "]"
    return str(v)

"""The canonical formatter: a typed graph printed back as spec text.

Everything is explicit — every item labelled, every attribute written, blocks and repetition
expanded — so `parse(format(g))` elaborates to the same graph (tested across the zoo).
"""

from __future__ import annotations

from typing import Any

from .ir import Graph, JoinRef, Node, NodeRef, ScopeRef
from .ops import OPS

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
            out.append(pad + f"{node.label}: {layer_text(node)}" +
                       "".join(f" {k}={graph.node(a.id).op}" for k, a in attached))
            i += 1 + len(attached)
            continue
        if isinstance(it, ScopeRef):
            out.append(pad + f"{it.label}: (")
            out.extend(_items(graph, it.items, depth + 1))
            out.append(pad + ")")
        elif isinstance(it, JoinRef):
            node = graph.node(it.id)
            out.append(pad + f"{node.label}: {node.op} {{")
            for b, branch in enumerate(it.branches):
                if b:
                    out.append(pad + "|")
                out.extend(_items(graph, branch, depth + 1))
            out.append(pad + "}")
        i += 1
    return out


def _attached(graph: Graph, items: list, i: int) -> list[tuple[str, NodeRef]]:
    """The norm/act nodes after items[i] that belong to its layer and have default attributes,
    so they can be written as `norm=bn act=relu` and keep their layer grouping."""
    primary = graph.node(items[i].id)
    if not OPS[primary.op].attaches:
        return []
    found: list[tuple[str, NodeRef]] = []
    for key, category in (("norm", "norm"), ("act", "act")):
        j = i + 1 + len(found)
        if j < len(items) and isinstance(items[j], NodeRef):
            node = graph.node(items[j].id)
            if node.layer == primary.id and OPS[node.op].category == category and \
                    node.attrs == _defaults(node.op):
                found.append((key, items[j]))
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
        text += str(a.pop(op.kernel))
    if op.dash:
        text += f"-{a.pop(op.dash)}"
    if op.slash:
        text += f"/{a.pop(op.slash)}"
    # an attribute value that is not one token (a list: `window={[7, 9]}`) goes in braces
    rest = " ".join(f"{k}={{{spec_value(v)}}}" if isinstance(v, (list, tuple))
                    else f"{k}={spec_value(v)}" for k, v in sorted(a.items()))
    return f"{text} {rest}" if rest else text


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

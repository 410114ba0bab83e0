"""The network as a Graphviz drawing: one box per layer (or per block/stage), edges labelled
with the tensor shapes flowing on them, joins as small ⊕ / ⊗ / concat nodes, scopes as clusters.

    >>> from archdsl.drawing import draw, render
    >>> render(draw(archdsl.load("specs/resnet50.arch"), depth=2), Path("resnet50.svg"))

A *layer* is one spec statement, as in `stats`: `conv1` with its `bn1` and `relu1` is one box,
`conv1: conv 7×7/2, 64 + bn + relu`. With `depth=N` the layers are grouped by the first N parts
of their names, like `Stats.rollup(N)`: `layer1.0` becomes one block box, `layer1` one cluster.
Writing SVG, PNG or PDF needs Graphviz's `dot` program; writing `.dot` needs nothing.
"""

from __future__ import annotations

import html
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphviz

from .analysis import Conventions, Row, analyse
from .atomic import atomic_path, check_output
from .errors import UsageError
from .ir import Graph, JoinRef, Node, NodeRef, ScopeRef
from .notation import call_notation
from .numfmt import human
from .ops import OPS, fmt_axes, fmt_shape
from .windows import pair

# suffix → what dot is asked for (None: the source itself, no `dot` needed)
FORMATS: dict[str, str | None] = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": None,
                                  ".gv": None}
INSTALL_HINT = ("install Graphviz, which provides `dot` (apt-get install graphviz, "
                "brew install graphviz, conda install graphviz, or "
                "https://graphviz.org/download/), or write a .dot file, which needs no Graphviz")

PNG_DPI = 144
JOIN_SYMBOLS = {"add": "⊕", "mul": "⊗"}
FONT = "Helvetica,Arial,sans-serif"
# fill colours by op category: weighted layers stand out, cheap ones stay pale
FILLS = {"conv": "#dbe9f6", "linear": "#fde3c8", "attention": "#f9d6d5", "pool": "#dcefd9",
         "norm": "#eeeeee", "scale": "#eeeeee", "act": "#f4f4f4", "regularizer": "#f4f4f4",
         "shape": "#f4f4f4", "sequence": "#f4f4f4", "block": "#e6e0f3"}


@dataclass
class _Group:
    """What becomes one box (or join node): a layer, or the layers of one block/stage."""

    key: str  # the Graphviz node id: the layer's name, or the block's name prefix
    nodes: list[Node] = field(default_factory=list)
    primaries: list[Node] = field(default_factory=list)  # the primary node of each layer in it

    @property
    def single_layer(self) -> bool:
        return len(self.primaries) == 1 and self.primaries[0].name == self.key

    @property
    def op(self) -> str:
        return self.primaries[0].op if self.single_layer else "block"

    @property
    def scope(self) -> tuple[str, ...]:
        return tuple(self.key.split(".")[:-1])


def draw(arch_or_graph: Any, depth: int | None = None, *,
         conventions: Conventions | None = None) -> graphviz.Digraph:
    """A Graphviz drawing of an architecture (an `Architecture` or its `Graph`).

    `depth=None` draws one box per layer; `depth=N` one box per block/stage, grouping layers
    by the first N parts of their names (as `Stats.rollup(N)`); scopes that are not collapsed
    are drawn as clusters. Boxes show parameters and MACs (or FLOPs, as `conventions` says);
    edges the shapes they carry."""
    graph: Graph = getattr(arch_or_graph, "graph", arch_or_graph)
    if not isinstance(graph, Graph):
        raise TypeError(f"draw() takes an Architecture or a Graph, not {type(arch_or_graph)}")
    if depth is not None and depth < 1:
        raise UsageError(f"depth must be at least 1, got {depth}", None,
                         "leave it out to draw every layer")
    stats = analyse(graph, conventions=conventions)
    cost = ("FLOPs", 2) if stats.conventions.count == "flops" else ("MACs", 1)
    rows = {r.name: r for r in stats.rollup(depth)}

    groups: dict[str, _Group] = {}
    group_of: dict[int, _Group] = {}
    for node in graph.nodes:
        primary = graph.node(node.layer)
        parts = primary.name.split(".")
        key = primary.name if depth is None or node.op == "input" else ".".join(parts[:depth])
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(key)
        group.nodes.append(node)
        if node.id == node.layer:
            group.primaries.append(node)
        group_of[node.id] = group

    dot = graphviz.Digraph(name=graph.name)
    totals = stats.totals
    summary = f"{human(totals['params'])} params · {human(cost[1] * totals['macs'])} {cost[0]}"
    dot.attr(rankdir="TB", nodesep="0.3", ranksep="0.3", fontname=FONT, fontsize="14",
             labelloc="t", newrank="true", outputorder="edgesfirst",
             label=_html(f"<B>{_esc(graph.name)}</B>"
                         f"<BR/><FONT POINT-SIZE=\"10\">{_esc(_settings(graph))}"
                         f"{_esc(summary)}"
                         "</FONT>"))
    dot.attr("node", shape="box", style="rounded,filled", fontname=FONT, fontsize="10",
             margin="0.12,0.04", height="0.3", penwidth="0.8", color="#555555")
    dot.attr("edge", fontname=FONT, fontsize="8", fontcolor="#666666", color="#777777",
             arrowsize="0.6", penwidth="0.8")

    # the boxes, nested in clusters by scope
    tree = _Scope(())
    for group in groups.values():
        tree.add(group)
    _emit(dot, tree, graph, rows, cost, top=True)

    # the output, as its own node
    out_id = "output"
    while out_id in groups:
        out_id += "_"
    out_shape = fmt_shape(graph.output_shape)
    dot.node(out_id, _html(f"<B>output</B><BR/><FONT POINT-SIZE=\"9\">{out_shape}</FONT>"),
             shape="ellipse", style="filled", fillcolor="#333333", fontcolor="white",
             tooltip=f"output {out_shape}")

    # the edges: each tensor that crosses from one box to another, labelled with its shape
    # the main path (a tensor's first consumer, through its first input) is weighted to run
    # straight down; shortcuts and side branches bend around it. A concat's branches are
    # peers: none is the main path, so the concat sits centred below them
    position = {nid: i for i, nid in enumerate(graph.g.nodes)}
    concats = _concat_branches(graph)
    peers = {n for join, heads in concats for n in (join, *heads)}
    seen: set[tuple[int, str]] = set()
    for node in graph.nodes:
        dst = group_of[node.id]
        for index, src_id in enumerate(graph.inputs(node.id)):
            src = group_of[src_id]
            if src is dst or (src_id, dst.key) in seen:
                continue
            seen.add((src_id, dst.key))
            first_use = min(graph.g.successors(src_id), key=position.__getitem__)
            main = index == 0 and first_use == node.id and node.id not in peers
            _edge(dot, src.key, dst.key, graph.node(src_id), weight=4 if main else 1)
    _edge(dot, group_of[graph.output_id].key, out_id, graph.node(graph.output_id), weight=4)
    for join, heads in concats:  # the branches start side by side
        keys = list(dict.fromkeys(group_of[h].key for h in heads))
        if len(keys) > 1 and group_of[join].key not in keys:
            with dot.subgraph() as row:
                row.attr(rank="same")
                for key in keys:
                    row.node(key)
    return dot


def render(dot: graphviz.Digraph, path: Path, inputs=()) -> Path:
    """Write a drawing to `path`, in the format its suffix names (.svg .png .pdf .dot/.gv),
    atomically: a failed render leaves any existing file as it was (archdsl.atomic; never
    onto one of `inputs`)."""
    path = check_output(path, inputs)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"cannot write a drawing as `{path.name}`: unknown suffix "
                         f"`{path.suffix or '(none)'}`", None,
                         "use one of " + ", ".join(FORMATS))
    fmt = FORMATS[suffix]
    if fmt is None:
        data = dot.source.encode("utf-8")
    else:
        if fmt == "png":  # screen resolution is too coarse for 8-point edge labels
            dot = dot.copy()
            dot.attr(dpi=str(PNG_DPI))
        try:
            data = dot.pipe(format=fmt, quiet=True)
        except graphviz.ExecutableNotFound:
            raise UsageError(f"writing {path.name} needs Graphviz's `dot` program, which is not "
                             "installed (or not on PATH)", None, INSTALL_HINT) from None
        except (subprocess.CalledProcessError, OSError) as exc:
            detail = getattr(exc, "stderr", None)
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise UsageError(f"Graphviz `dot` failed writing {path.name}: "
                             f"{(detail or str(exc)).strip()}", None) from None
    with atomic_path(path, inputs) as tmp:
        tmp.write_bytes(data)
    return path


# ---------------------------------------------------------------- boxes and clusters

@dataclass
class _Scope:
    path: tuple[str, ...]
    items: list = field(default_factory=list)  # _Group | _Scope, in order of appearance
    children: dict[str, _Scope] = field(default_factory=dict)

    def add(self, group: _Group) -> None:
        scope = self
        for part in group.scope:
            child = scope.children.get(part)
            if child is None:
                child = scope.children[part] = _Scope(scope.path + (part,))
                scope.items.append(child)
            scope = child
        scope.items.append(group)


def _emit(dot: graphviz.Digraph, scope: _Scope, graph: Graph, rows: dict[str, Row],
          cost: tuple[str, int], top: bool = False) -> None:
    for item in scope.items:
        if isinstance(item, _Group):
            _box(dot, item, graph, rows, cost)
        elif len(item.items) == 1 and isinstance(item.items[0], _Group):
            _emit(dot, item, graph, rows, cost)  # a scope of one box: its name says it all
        else:
            name = ".".join(item.path)
            with dot.subgraph(name="cluster_" + name) as sub:
                sub.attr(label=name, labeljust="l", style="rounded,dashed" if not top else
                         "rounded", color="#999999", fontcolor="#444444", fontsize="10",
                         margin="10", penwidth="0.8")
                _emit(sub, item, graph, rows, cost)


def _box(dot: graphviz.Digraph, group: _Group, graph: Graph, rows: dict[str, Row],
         cost_kind: tuple[str, int]) -> None:
    first = group.primaries[0]
    if first.op == "input":
        shape = fmt_shape(first.shape)
        dot.node(group.key, _html(f"<B>input</B><BR/><FONT POINT-SIZE=\"9\">{shape}</FONT>"),
                 shape="ellipse", style="filled", fillcolor="#333333", fontcolor="white",
                 tooltip=f"{first.name} {shape}")
        return
    row = rows.get(group.key)
    op = group.op
    if group.single_layer and OPS[op].category == "join":
        symbol = JOIN_SYMBOLS.get(op)
        tip = f"{group.key}: {op} → {fmt_shape(first.shape)}"
        if symbol is not None:
            dot.node(group.key, symbol, shape="circle", style="filled", fillcolor="white",
                     width="0.3", height="0.3", fixedsize="true", fontsize="16", margin="0",
                     tooltip=tip)
        else:
            dot.node(group.key, op, shape="box", style="rounded,filled", fillcolor="white",
                     fontsize="8", width="0.5", height="0.2", margin="0.04,0.02", tooltip=tip)
        return
    if len(group.primaries) == 1:  # a layer, or a block of one layer (a shortcut's conv+bn)
        name, what = _short(group.key), _describe(first, graph)
        title = f"<B>{_esc(name)}</B>" + ("" if what == name else f": {_esc(what)}")
        extra = [n.op for n in group.nodes if n.id != first.id]
        if extra:
            title += _esc(" + " + " + ".join(extra))
        fill = FILLS.get(OPS[first.op].category, "#f4f4f4")
    else:
        title = f"<B>{_esc(_short(group.key))}</B>"
        counts = Counter(n.op for n in group.primaries)
        title += "<BR/>" + _esc(" · ".join(o if c == 1 else f"{c} {o}"
                                           for o, c in counts.items()))
        fill = FILLS["block"]
    cost = _cost(row, cost_kind)
    label = title + (f"<BR/><FONT POINT-SIZE=\"8\" COLOR=\"#555555\">{_esc(cost)}</FONT>"
                     if cost else "")
    dot.node(group.key, _html(label), fillcolor=fill,
             tooltip=f"{group.key}" + (f" ({cost})" if cost else ""))


def _edge(dot: graphviz.Digraph, src: str, dst: str, tensor: Node, weight: int) -> None:
    shape = fmt_shape(tensor.shape)
    dot.edge(src, dst, label=f" {shape}", tooltip=f"{src} → {dst}: {shape}", weight=str(weight))


def _concat_branches(graph: Graph) -> list[tuple[int, list[int]]]:
    """Each concat join, with the first node of each of its (non-empty) branches."""
    out: list[tuple[int, list[int]]] = []

    def first(items: list) -> int | None:
        for item in items:
            if isinstance(item, NodeRef):
                return item.id
            if isinstance(item, ScopeRef):
                found = first(item.items)
            else:
                found = next((f for b in item.branches if (f := first(b)) is not None), item.id)
            if found is not None:
                return found
        return None

    def walk(items: list) -> None:
        for item in items:
            if isinstance(item, ScopeRef):
                walk(item.items)
            elif isinstance(item, JoinRef):
                for branch in item.branches:
                    walk(branch)
                if graph.node(item.id).op == "concat":
                    out.append((item.id, [f for b in item.branches
                                          if (f := first(b)) is not None]))

    walk(graph.structure)
    return out


def _describe(node: Node, graph: Graph) -> str:
    """What a layer does, as papers print it: `conv 7×7/2, 64`, `maxpool 3×3/2`, `fc 1000`."""
    a, op = node.attrs, node.op
    if op == "conv":
        text = f"conv {fmt_axes(a['k'])}" + (f"/{fmt_axes(a['stride'], collapse=True)}"
                                             if a["stride"] != 1 else "")
        ins = graph.inputs(node.id)
        cin = graph.node(ins[0]).shape[0] if ins and graph.node(ins[0]).shape else None
        if a["groups"] > 1 and a["groups"] == cin:
            text = "dw" + text + ("" if a["out"] == cin else f", {a['out']}")
        else:
            text += f", {a['out']}" + (f", {a['groups']} groups" if a["groups"] > 1 else "")
        if a.get("dilation", 1) != 1:
            text += f", dilation {a['dilation']}"
        return text
    if op in ("fc", "linear"):
        return f"{op} {a['out']}"
    if op == "attention":
        return f"attention, {a['heads']} heads"
    if op == "window_attention":
        (wh, ww), (sh, sw) = pair(a["window"]), pair(a["shift"])
        return (f"{a['partition']} attention {wh}×{ww}, {a['heads']} heads"
                + (f", shift {sh}×{sw}" if sh or sw else ""))
    if op == "patch_merging":
        return f"patch merging, {a['out']}"
    if op in ("maxpool", "avgpool"):
        return f"{op} {fmt_axes(a['k'])}/{fmt_axes(a['stride'], collapse=True)}"
    if op == "adaptive_avgpool":
        return f"adaptive_avgpool {fmt_axes(a['size'])}"
    if op == "dropout":
        return f"dropout {a['p']:g}"
    return call_notation(node)


def _cost(row: Row | None, kind: tuple[str, int]) -> str:
    if row is None:
        return ""
    parts = []
    if row.params:
        parts.append(f"{human(row.params)} params")
    if row.macs:
        parts.append(f"{human(kind[1] * row.macs)} {kind[0]}")
    return " · ".join(parts)


def _short(name: str) -> str:
    """A box's name inside its cluster: the last part (`conv1`), or the last two when the last
    is an index (`layer1.0`, `downsample.0`, `features.3`)."""
    parts = name.split(".")
    if len(parts) > 1 and parts[-1].isdigit():
        return ".".join(parts[-2:])
    return parts[-1]


def _settings(graph: Graph) -> str:
    from .formatter import spec_value
    if not graph.settings:
        return ""
    return ", ".join(f"{k}={spec_value(v)}" for k, v in graph.settings.items()) + " · "


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _html(text: str) -> str:
    return f"<{text}>"

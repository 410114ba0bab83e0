"""What changed between two architectures: two specs, or one spec under two parameter settings.

    >>> d = diff_archs(archdsl.load("specs/vgg.arch", arch="vgg_a"),
    ...                archdsl.load("specs/vgg.arch", arch="vgg_b"))
    >>> [x.name for x in d.added]
    ['features.2', 'features.7']

Layers (spec statements, the rows of `stats`) are matched first by name, then by content.
Names alone are not enough: layers without a label take consecutive indices, as torchvision's
do (`features.0`, `features.2`, ...), so one layer inserted near the start renumbers all that
follow it. The two layer sequences are therefore aligned in passes, each on the stretches the
previous pass left unmatched (the longest in-order matching where the keys are unique, as
names are; difflib's longest common runs otherwise, up to a size: archdsl/sequences.py):

1. same name and same content (op, attributes, attached norm/activation, input and output
   shapes) — the unchanged layers;
2. same content, and the same name once numeric parts are ignored (`features.#`) — unchanged
   layers that were only renumbered (listed in `renamed`, not as changes);
3. same name, where the name was written (`conv1`, `layer1.0.conv2`) rather than an automatic
   index (`features.8`) — changed layers; then the same content in the same scope under
   another name (`avgpool` and `0`: a layer one spec labels and the other leaves to its
   index) — renamed, unchanged;
4. same op, and the same name once numeric parts are ignored — changed layers, paired in
   order (`features.6` → `features.8` when a norm was added).

What is left over is removed (from the first) or added (in the second). A layer is *changed*
when its op, its attributes, its attached norm/activation, or its input or output shape differ
(an FC layer whose input grew is changed: it has more weights). Changes are described in paper
notation: `conv3-64 → conv3-128`, `shape 64×56×56 → 128×56×56`.

Sizes are compared per stage (`Stats.rollup(depth)`, stages matched by name) and in total.
The library never prints: `diff_table` gives a rich renderable, `diff_markdown` a string and
`diff_dict` a JSON-able dict.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .analysis import Conventions, analyse
from .columns import Column
from .notation import Layer, arch_labels, layer_notation, layers
from .numfmt import human
from .ops import Shape, fmt_shape, same_pad
from .report import FittedTable, capped, plain
from .report import md_cell as _md
from .sequences import matching_pairs, merge_order

# attributes that paper notation (conv3-64/2, maxpool3/2, FC-4096, ...) already shows, or that
# the input/output shapes explain (a depthwise conv's groups = its input channels)
_SHOWN = {"conv": {"k", "out", "stride", "groups", "dilation"}, "fc": {"out"},
          "maxpool": {"k", "stride"}, "avgpool": {"k", "stride"},
          "adaptive_avgpool": {"size"}, "dropout": {"p"}}


@dataclass
class LayerDiff:
    """One layer added, removed or changed. `*_a` describe it in the first architecture,
    `*_b` in the second (None/0 where it is absent)."""

    kind: str  # added | removed | changed
    name_a: str | None
    name_b: str | None
    text_a: str | None = None
    text_b: str | None = None
    shape_a: Shape | None = None
    shape_b: Shape | None = None
    params_a: int = 0
    params_b: int = 0
    macs_a: int = 0
    macs_b: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.name_a and self.name_b and self.name_a != self.name_b:
            return f"{self.name_a} → {self.name_b}"
        return self.name_b or self.name_a or ""

    @property
    def dparams(self) -> int:
        return self.params_b - self.params_a

    @property
    def dmacs(self) -> int:
        return self.macs_b - self.macs_a


@dataclass
class SizeDiff:
    """Params and MACs of one stage (or the whole network) in both architectures."""

    name: str
    params_a: int
    params_b: int
    macs_a: int
    macs_b: int
    in_a: bool = True
    in_b: bool = True

    @property
    def dparams(self) -> int:
        return self.params_b - self.params_a

    @property
    def dmacs(self) -> int:
        return self.macs_b - self.macs_a

    @property
    def pct_params(self) -> float | None:
        return _pct(self.params_a, self.params_b)

    @property
    def pct_macs(self) -> float | None:
        return _pct(self.macs_a, self.macs_b)

    @property
    def same(self) -> bool:
        return self.in_a == self.in_b and not self.dparams and not self.dmacs


@dataclass
class ArchDiff:
    a: str  # labels: the architecture's name (+ the settings telling them apart)
    b: str
    depth: int | None
    layers: list[LayerDiff]
    renamed: list[tuple[str, str]]  # unchanged layers matched under another name
    stages: list[SizeDiff]
    total: SizeDiff

    @property
    def added(self) -> list[LayerDiff]:
        return [x for x in self.layers if x.kind == "added"]

    @property
    def removed(self) -> list[LayerDiff]:
        return [x for x in self.layers if x.kind == "removed"]

    @property
    def changed(self) -> list[LayerDiff]:
        return [x for x in self.layers if x.kind == "changed"]

    @property
    def is_empty(self) -> bool:
        """No layer added, removed or changed, and the same size everywhere."""
        return not self.layers and self.total.same and all(s.same for s in self.stages)

    @property
    def summary(self) -> str:
        if self.is_empty:
            return "no differences"
        parts = [f"{len(self.added)} added", f"{len(self.removed)} removed",
                 f"{len(self.changed)} changed"]
        return ", ".join(parts) + " layers"


def _pct(a: int, b: int) -> float | None:
    return (b - a) / a * 100 if a else None


# ---------------------------------------------------------------- diffing

def diff_archs(a: Any, b: Any, depth: int | None = 1,
               conventions: Conventions | None = None) -> ArchDiff:
    """The differences between two `Architecture`s (see the module doc for the matching);
    sizes are counted under `conventions` (default: all parameters, MACs)."""
    la, lb = list(layers(a.graph).values()), list(layers(b.graph).values())
    sa, sb = analyse(a.graph, conventions=conventions), analyse(b.graph, conventions=conventions)
    rows_a = {r.name: r for r in sa.rows}
    rows_b = {r.name: r for r in sb.rows}

    out: list[LayerDiff] = []
    renamed: list[tuple[str, str]] = []
    for x, y in _align(la, lb):
        if x is not None and y is not None:
            if _content(x) == _content(y):
                if x.name != y.name:
                    renamed.append((x.name, y.name))
                continue
            ra, rb = rows_a[x.name], rows_b[y.name]
            out.append(LayerDiff("changed", x.name, y.name, layer_notation(x),
                                 layer_notation(y), x.shape, y.shape, ra.params, rb.params,
                                 ra.macs, rb.macs, _details(x, y)))
        elif x is not None:
            r = rows_a[x.name]
            out.append(LayerDiff("removed", x.name, None, layer_notation(x), None, x.shape,
                                 None, r.params, 0, r.macs, 0))
        elif y is not None:
            r = rows_b[y.name]
            out.append(LayerDiff("added", None, y.name, None, layer_notation(y), None,
                                 y.shape, 0, r.params, 0, r.macs))

    ga = {r.name: r for r in sa.rollup(depth)}
    gb = {r.name: r for r in sb.rollup(depth)}
    stages = []
    for name in merge_order(list(ga), list(gb)):
        ra, rb = ga.get(name), gb.get(name)
        stages.append(SizeDiff(name, ra.params if ra else 0, rb.params if rb else 0,
                               ra.macs if ra else 0, rb.macs if rb else 0,
                               ra is not None, rb is not None))
    ta, tb = sa.totals, sb.totals
    total = SizeDiff("total", ta["params"], tb["params"], ta["macs"], tb["macs"])
    label_a, label_b = arch_labels([a, b])
    return ArchDiff(label_a, label_b, depth, out, renamed, stages, total)


def _skeleton(name: str) -> str:
    return ".".join("#" if p.isdigit() else p for p in name.split("."))


def _scope(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _content(x: Layer) -> str:
    return x.content


def _semantic_name(x: Layer) -> Hashable:
    """The name, if it was written (`conv1`, `layer1.0.conv2`); an automatic index
    (`features.8`) says nothing once an earlier layer was inserted, so it never matches."""
    return x.name if not x.name.rsplit(".", 1)[-1].isdigit() else object()


_PASSES: list[Callable[[Layer], Hashable]] = [
    lambda x: (x.name, _content(x)),
    lambda x: (_skeleton(x.name), _content(x)),
    _semantic_name,
    lambda x: (_scope(x.name), _content(x)),
    lambda x: (_skeleton(x.name), x.primary.op),
]


def _align(a: list[Layer], b: list[Layer]) -> list[tuple[Layer | None, Layer | None]]:
    """Pairs (x, y), (x, None) for a removed layer, (None, y) for an added one, in order."""
    out: list[tuple[Layer | None, Layer | None]] = []

    def run(i1: int, i2: int, j1: int, j2: int, level: int) -> None:
        if i1 == i2 or j1 == j2 or level == len(_PASSES):
            out.extend((x, None) for x in a[i1:i2])
            out.extend((None, y) for y in b[j1:j2])
            return
        key = _PASSES[level]
        anchors = matching_pairs([key(x) for x in a[i1:i2]], [key(y) for y in b[j1:j2]])
        pi = pj = 0
        for i, j in anchors + [(i2 - i1, j2 - j1)]:
            if i > pi or j > pj:
                run(i1 + pi, i1 + i, j1 + pj, j1 + j, level + 1)
            if i < i2 - i1:
                out.append((a[i1 + i], b[j1 + j]))
            pi, pj = i + 1, j + 1

    run(0, len(a), 0, len(b), 0)
    return out


def _value(v: Any) -> str:
    from .formatter import spec_value
    return spec_value(v)


def _details(x: Layer, y: Layer) -> list[str]:
    """How layer x became layer y, in paper notation."""
    out: list[str] = []
    ta, tb = layer_notation(x), layer_notation(y)
    if ta != tb:
        out.append(f"{ta} → {tb}")
    shown = _SHOWN.get(x.primary.op, set()) if x.primary.op == y.primary.op else set()
    if x.primary.op == y.primary.op:
        pa, pb = x.primary.attrs, y.primary.attrs
        for k in sorted(set(pa) | set(pb)):
            if k in shown or pa.get(k) == pb.get(k) or (k == "pad" and _same_pad(pa)
                                                         and _same_pad(pb)):
                continue
            out.append(f"{k}={_value(pa.get(k, '—'))} → {k}={_value(pb.get(k, '—'))}")
    for what in ("norm", "act"):
        va, vb = getattr(x, what), getattr(y, what)
        if va != vb:
            out.append(f"{what}={va} → {what}={vb}")
    if [n.op for n in x.attached] == [n.op for n in y.attached]:
        for na, nb in zip(x.attached, y.attached, strict=True):
            for k in sorted(set(na.attrs) | set(nb.attrs)):
                if na.attrs.get(k) != nb.attrs.get(k):
                    out.append(f"{na.op} {k}={_value(na.attrs.get(k, '—'))} → "
                               f"{_value(nb.attrs.get(k, '—'))}")
    if x.in_shapes != y.in_shapes:
        out.append("input " + _shapes(x.in_shapes) + " → " + _shapes(y.in_shapes))
    if x.shape != y.shape:
        out.append(f"shape {fmt_shape(x.shape)} → {fmt_shape(y.shape)}")
    return out


def _same_pad(a: dict) -> bool:
    """`pad` is the kernel's `same` padding (conv3 pad=1, conv1 pad=0): not worth a mention."""
    return "k" in a and a.get("pad") == same_pad(a)


def _shapes(shapes: tuple) -> str:
    return " + ".join(fmt_shape(s) for s in shapes)


# ---------------------------------------------------------------- rendering

_MARK = {"added": "+", "removed": "−", "changed": "~"}
_STYLE = {"added": "green", "removed": "red", "changed": "yellow"}


def _signed(n: int) -> str:
    return f"{n:+,}"


def _signed_human(n: int) -> str:
    return ("+" if n > 0 else "") + human(n) if n else "0"


def _pct_text(p: float | None, a_present: bool = True) -> str:
    if p is None:
        return "new" if not a_present else "—"
    return f"{p:+.1f}%"


def _layer_cells(x: LayerDiff) -> list[str]:
    if x.kind == "added":
        change = f"{x.text_b}, {fmt_shape(x.shape_b)}"
    elif x.kind == "removed":
        change = f"{x.text_a}, {fmt_shape(x.shape_a)}"
    else:
        change = "; ".join(x.details)
    return [_MARK[x.kind], x.name, change, _signed(x.dparams), _signed_human(x.dmacs)]


def _stage_cells(s: SizeDiff) -> list[str]:
    return [s.name, f"{s.params_a:,}" if s.in_a else "—", f"{s.params_b:,}" if s.in_b else "—",
            _signed(s.dparams), _pct_text(s.pct_params, s.in_a),
            human(s.macs_a) if s.in_a else "—", human(s.macs_b) if s.in_b else "—",
            _signed_human(s.dmacs), _pct_text(s.pct_macs, s.in_a)]


_LAYER_HEADERS = ["", "Layer", "Change", "ΔParams", "ΔMACs"]
_STAGE_HEADERS = ["Stage", "Params A", "Params B", "ΔParams", "Params Δ%", "MACs A", "MACs B",
                  "ΔMACs", "MACs Δ%"]


def diff_table(d: ArchDiff) -> Group:
    """A rich renderable: the layer changes, then sizes per stage with the total as footer."""
    parts: list[Any] = [Text.assemble(plain(d.a, "bold"), " → ", plain(d.b, "bold"),
                                      f": {d.summary}")]
    if d.layers:
        t = Table(title="Layers", title_justify="left")
        for h in _LAYER_HEADERS:
            t.add_column(h, justify="right" if h.startswith("Δ") else "left",
                         overflow="fold", no_wrap=h in ("", "ΔParams", "ΔMACs"))
        capped(t, d.layers, lambda x: [plain(c, _STYLE[x.kind] or "")
                                       for c in _layer_cells(x)], "layers")
        parts.append(t)
    if d.renamed:
        parts.append(Text(f"{len(d.renamed)} unchanged layers renumbered "
                          f"(e.g. {d.renamed[0][0]} → {d.renamed[0][1]})", style="dim"))
    parts.append(FittedTable(
        "Size" + (f" by stage (depth {d.depth})" if d.depth else " by layer"), "Stage",
        [s.name for s in d.stages], _SIZE_COLUMNS, [c.header for c in _SIZE_COLUMNS],
        [_size_values(s) for s in d.stages], footer=_size_values(d.total),
        notes=[f"A = {d.a}, B = {d.b}; MACs = multiply-accumulates"],
        styles=[None if s.same else "bold" for s in d.stages],
        in_full="--format json or markdown"))
    return Group(*parts)


# the size table's columns; when even short numbers do not fit, the percentages go first
_SIZE_COLUMNS = [Column(k, h, kind, "", drop=drop) for (k, kind, drop), h in zip((
    ("params_a", "count", 2), ("params_b", "count", 2), ("dparams", "delta", 0),
    ("pct_params", "pct", 3), ("macs_a", "count", 1), ("macs_b", "count", 1),
    ("dmacs", "delta", 0), ("pct_macs", "pct", 3)), _STAGE_HEADERS[1:], strict=True)]


def _size_values(s: SizeDiff) -> list[Any]:
    def pct(p: float | None) -> float | str:
        return p if p is not None else ("new" if not s.in_a else "—")
    return [s.params_a if s.in_a else None, s.params_b if s.in_b else None, s.dparams,
            pct(s.pct_params), s.macs_a if s.in_a else None, s.macs_b if s.in_b else None,
            s.dmacs, pct(s.pct_macs)]


def diff_markdown(d: ArchDiff) -> str:
    lines = [f"### {_md(d.a)} → {_md(d.b)}", "", f"{d.summary}."]
    if d.layers:
        lines += ["", "| " + " | ".join(_LAYER_HEADERS) + " |",
                  "|---|---|---|---:|---:|"]
        lines += ["| " + " | ".join(_md(c) for c in _layer_cells(x)) + " |" for x in d.layers]
    if d.renamed:
        lines += ["", f"{len(d.renamed)} unchanged layers renumbered "
                      f"(e.g. `{d.renamed[0][0]}` → `{d.renamed[0][1]}`)."]
    lines += ["", "| " + " | ".join(_STAGE_HEADERS) + " |", "|---|" + "---:|" * 8]
    lines += ["| " + " | ".join(_md(c) for c in _stage_cells(s)) + " |" for s in d.stages]
    lines.append("| **total** | " + " | ".join(_stage_cells(d.total)[1:]) + " |")
    lines += ["", f"_A = {_md(d.a)}, B = {_md(d.b)}; MACs = multiply-accumulates_"]
    return "\n".join(lines) + "\n"


def _size_dict(s: SizeDiff) -> dict[str, Any]:
    return {"name": s.name, "in_a": s.in_a, "in_b": s.in_b,
            "params": {"a": s.params_a, "b": s.params_b, "delta": s.dparams,
                       "pct": s.pct_params},
            "macs": {"a": s.macs_a, "b": s.macs_b, "delta": s.dmacs, "pct": s.pct_macs}}


def diff_dict(d: ArchDiff) -> dict[str, Any]:
    """The diff as plain JSON-able data."""
    def shape(s: Shape | None) -> list[int] | None:
        return list(s) if s is not None else None
    return {
        "a": d.a, "b": d.b, "depth": d.depth, "empty": d.is_empty,
        "summary": {"added": len(d.added), "removed": len(d.removed),
                    "changed": len(d.changed), "renamed": len(d.renamed)},
        "layers": [{"kind": x.kind, "name_a": x.name_a, "name_b": x.name_b,
                    "text_a": x.text_a, "text_b": x.text_b, "shape_a": shape(x.shape_a),
                    "shape_b": shape(x.shape_b), "params_a": x.params_a,
                    "params_b": x.params_b, "dparams": x.dparams, "macs_a": x.macs_a,
                    "macs_b": x.macs_b, "dmacs": x.dmacs, "details": list(x.details)}
                   for x in d.layers],
        "renamed": [list(p) for p in d.renamed],
        "stages": [_size_dict(s) for s in d.stages],
        "total": _size_dict(d.total),
    }

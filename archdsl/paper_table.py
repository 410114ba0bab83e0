"""A paper's configuration table, regenerated from specs: one column per architecture, one
row per stage, cells in paper notation — VGG's Table 1 (`conv3-64 ×2`, `maxpool`, `FC-4096`)
or ResNet's (`[conv1-64, conv3-64, conv1-256] ×3`).

    >>> t = config_table(archdsl.load_all("specs/vgg.arch"))
    >>> print(paper_table_markdown(t))

Stages. A layer belongs to the stage named by the first `depth` parts of its scoped name,
like `Stats.rollup(depth)` (`layer2`, `avgpool`, `classifier`). Within one such scope, a
pooling layer (max/average/global pooling) that sits directly in it — not inside a block or a
join branch — ends a stage: it is the last line of that stage's cell, and the layers after it
start the next stage. VGG writes all its convolutions in one `features` scope, so its stages
are the conv runs closed by a max-pool (`features 1` … `features 5`); a scope split this way
has its stages numbered. Rows are aligned across architectures by that key (scope, number),
in the order the architectures have them; a stage an architecture lacks is an empty cell.

Cells. Each layer is written in paper notation (`notation.py`); a block instance (a sub-scope,
`layer2.0`) is written as its layers in brackets, `[conv1-128, conv3-128, conv1-512]`, without
strides and without the residual shortcut (papers list those in the text). Repeated
consecutive entries are counted: `conv3-256 ×4`, `[conv3-64, conv3-64] ×2`. Activations,
dropout, joins and reshapes are left out, as in papers (soft-max is kept); a stage with
nothing else shows what it has. The table starts with the input shape and ends with the MACs
(G; FLOPs under `Conventions(count="flops")`) and parameters (M) of each architecture.

Which architectures: the caller's list. `load_all("specs/vgg.arch")` also gives the `*_bn`
variants, whose cells equal their plain twins' (normalization is not shown) and only differ
in the params row; leave them out for the paper's six columns.

Renderers: `paper_table_rich` (a rich Table), `paper_table_markdown` (cells with `<br>`
between lines) and `paper_table_latex` (a `tabular` with `\\hline` between stages; a cell's
lines become consecutive table rows, so it needs no extra LaTeX package).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.table import Table

from .analysis import Conventions, analyse
from .notation import Layer, arch_labels, branch_ids, layer_notation, layers, shortcut_ids
from .ops import OPS, fmt_shape
from .report import capped, plain
from .report import md_cell as _md
from .sequences import merge_order

SHOWN_CATEGORIES = ("conv", "linear", "attention", "pool", "norm")
TIMES = "×"

NOTES = [
    "within a scope, a pooling layer ends a stage",
    "[...] = one block (strides and residual shortcuts not shown)",
    "×n = n consecutive identical entries",
    "activations and dropout not shown",
]


@dataclass
class PaperRow:
    label: str
    cells: list[list[str]]  # per column: the cell's lines
    kind: str = "stage"  # input | stage | macs | params


@dataclass
class PaperTable:
    columns: list[str]
    rows: list[PaperRow]
    depth: int
    notes: list[str] = field(default_factory=lambda: list(NOTES))

    def cell(self, label: str, column: str) -> list[str]:
        """The lines of one cell, by row label and column header."""
        row = next(r for r in self.rows if r.label == label)
        return row.cells[self.columns.index(column)]

    @property
    def stage_labels(self) -> list[str]:
        return [r.label for r in self.rows if r.kind == "stage"]


def config_table(archs: list[Any], depth: int = 1, names: list[str] | None = None,
                 conventions: Conventions | None = None) -> PaperTable:
    """The configuration table of some `Architecture`s, one column each (`names` overrides
    the column headers, which are otherwise the architectures' names; `conventions` how the
    totals are counted)."""
    if depth < 1:
        raise ValueError("depth must be at least 1")
    columns = list(names) if names is not None else arch_labels(archs)
    if len(columns) != len(archs):
        raise ValueError(f"{len(archs)} architectures but {len(columns)} names")
    per_arch = [_stages(a.graph, depth) for a in archs]
    keys: list[tuple[str, int]] = []
    for stages in per_arch:
        keys = merge_order(keys, list(stages))
    counts: dict[str, int] = {}
    for group, i in keys:
        counts[group] = max(counts.get(group, 0), i + 1)

    rows = [PaperRow("input", [[fmt_shape(a.graph.input_shape)] for a in archs], "input")]
    for key in keys:
        group, i = key
        label = group if counts[group] == 1 else f"{group} {i + 1}"
        rows.append(PaperRow(label, [stages.get(key, []) for stages in per_arch]))
    totals = [analyse(a.graph, conventions=conventions).totals for a in archs]
    cost = "flops" if conventions is not None and conventions.count == "flops" else "macs"
    rows.append(PaperRow("FLOPs (G)" if cost == "flops" else "MACs (G)",
                         [[_num(t[cost] / 1e9, 2)] for t in totals], "macs"))
    rows.append(PaperRow("params (M)", [[_num(t["params"] / 1e6, 1)] for t in totals],
                         "params"))
    return PaperTable(columns, rows, depth)


def _num(x: float, decimals: int) -> str:
    """132.9, 7.61; small values keep three significant digits (LeNet-5: 0.0617 M)."""
    return f"{x:.{decimals}f}" if x >= 1 or x == 0 else f"{x:.3g}"


def _stages(graph, depth: int) -> dict[tuple[str, int], list[str]]:
    """Stage key (scope, number within it) → the cell's lines, in order."""
    in_branch = branch_ids(graph)
    shortcut = shortcut_ids(graph)
    members: dict[tuple[str, int], list[Layer]] = {}
    current: dict[str, int] = {}
    closed: set[str] = set()
    for lay in layers(graph).values():
        parts = lay.name.split(".")
        group = ".".join(parts[:depth])
        if group in closed:
            current[group] = current.get(group, 0) + 1
            closed.discard(group)
        members.setdefault((group, current.setdefault(group, 0)), []).append(lay)
        if OPS[lay.primary.op].category == "pool" and len(parts) == depth + 1 \
                and lay.primary.id not in in_branch:
            closed.add(group)
    return {key: _cell(lays, depth, shortcut) for key, lays in members.items()}


def _shown(lay: Layer) -> bool:
    return OPS[lay.primary.op].category in SHOWN_CATEGORIES or lay.primary.op == "softmax"


def _cell(lays: list[Layer], depth: int, shortcut: set[int]) -> list[str]:
    entries: list[str] = []
    i = 0
    while i < len(lays):
        parts = lays[i].name.split(".")
        if len(parts) <= depth + 1:  # a layer directly in the stage's scope
            if lays[i].primary.id not in shortcut and _shown(lays[i]):
                entries.append(layer_notation(lays[i]))
            i += 1
            continue
        block = parts[:depth + 1]  # a block instance: its layers, in brackets
        inner: list[str] = []
        while i < len(lays) and lays[i].name.split(".")[:depth + 1] == block:
            if lays[i].primary.id not in shortcut and _shown(lays[i]):
                inner.append(layer_notation(lays[i], stride=False))
            i += 1
        if inner:
            entries.append("[" + ", ".join(inner) + "]")
    if not entries:  # nothing a paper would show: say what is there
        entries = [layer_notation(x) for x in lays]
    return _count_runs(entries)


def _count_runs(entries: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(entries):
        j = i
        while j < len(entries) and entries[j] == entries[i]:
            j += 1
        out.append(entries[i] + (f" {TIMES}{j - i}" if j - i > 1 else ""))
        i = j
    return out


# ---------------------------------------------------------------- renderers

def paper_table_rich(t: PaperTable) -> PaperTableRich:
    return PaperTableRich(t)


@dataclass
class PaperTableRich:
    """The table as rich renders it, at the width it is given: a cell line is never broken;
    when the architectures do not all fit side by side, they come in several tables of as
    many columns as fit, each with the stage names (`Configurations (columns 1–4 of 10)`)."""

    table: PaperTable

    def __rich_console__(self, console: Any, options: Any):
        groups = self.groups(options.max_width)
        for k, group in enumerate(groups):
            yield self._part(group, k == len(groups) - 1, len(groups) > 1)

    def groups(self, width: int) -> list[list[int]]:
        t = self.table
        label = max([cell_len(r.label) for r in t.rows] + [0]) + 3  # padding, one rule
        widths = [max([cell_len(t.columns[j])] + [cell_len(x) for r in t.rows for x in r.cells[j]])
                  + 3 for j in range(len(t.columns))]
        groups: list[list[int]] = [[]]
        for j, w in enumerate(widths):
            if groups[-1] and 1 + label + sum(widths[i] for i in groups[-1]) + w > width:
                groups.append([])
            groups[-1].append(j)
        return groups

    def _part(self, group: list[int], last: bool, several: bool) -> Table:
        t = self.table
        title = "Configurations" + (f" (columns {group[0] + 1}–{group[-1] + 1} of "
                                    f"{len(t.columns)})" if several else "")
        table = Table(title=title, show_lines=True, caption_justify="left",
                      caption=plain("; ".join(t.notes), "table.caption") if last else None)
        table.add_column("", no_wrap=True, style="bold")
        for j in group:
            table.add_column(plain(t.columns[j]), justify="center", no_wrap=True)
        capped(table, t.rows, lambda row: [plain(row.label),
                                           *(plain("\n".join(row.cells[j])) for j in group)],
               "stages")
        return table


def paper_table_markdown(t: PaperTable) -> str:
    lines = ["| | " + " | ".join(_md(c) for c in t.columns) + " |",
             "|---|" + ":---:|" * len(t.columns)]
    for row in t.rows:
        label = f"**{_md(row.label)}**" if row.kind in ("macs", "params") else _md(row.label)
        lines.append(f"| {label} | " +
                     " | ".join("<br>".join(_md(x) for x in cell) for cell in row.cells) + " |")
    lines += ["", "_" + "; ".join(t.notes) + "_"]
    return "\n".join(lines) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
          TIMES: r"$\times$", "→": r"$\rightarrow$", "[": "{[}", "]": "{]}"}


def latex_escape(text: str) -> str:
    """Text safe in a LaTeX table cell (`[` is braced so that it never reads as the optional
    argument of a preceding `\\\\`)."""
    return "".join(_LATEX.get(ch, ch) for ch in text)


def paper_table_latex(t: PaperTable) -> str:
    """A `tabular` environment: a header row, then each stage as consecutive rows (one per
    line of its tallest cell) with `\\hline` between stages."""
    n = len(t.columns)
    out = ["% " + "; ".join(t.notes),
           r"\begin{tabular}{l|" + "c" * n + "}", r"\hline",
           " & ".join([""] + [latex_escape(c) for c in t.columns]) + r" \\", r"\hline"]
    for row in t.rows:
        height = max((len(cell) for cell in row.cells), default=0) or 1
        for k in range(height):
            label = latex_escape(row.label) if k == 0 else ""
            cells = [latex_escape(cell[k]) if k < len(cell) else "" for cell in row.cells]
            out.append(" & ".join([label] + cells) + r" \\")
        out.append(r"\hline")
    out.append(r"\end{tabular}")
    return "\n".join(out) + "\n"

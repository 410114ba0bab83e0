"""Rendering stats for people: rich tables, and Markdown for docs (JSON and CSV, for programs,
are writers.py's).

The library never prints: these functions return renderables or strings. A table fits the
width it is rendered at (`FittedTable`): numbers are never cut — a count column switches from
every digit (138,357,544) to papers' style (138.4M) first, then, if the table is still too
wide, the least needed columns go and the caption says which. Which columns exist is
`columns.COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from .analysis import COUNTS, Conventions, Stats
from .columns import COLUMNS, TRAINING_KEYS, Column, choose, hidden
from .errors import printable
from .latency import definition as latency_definition
from .limits import MAX_TABLE_ROWS
from .numfmt import compact, grouped, human  # noqa: F401  (human: re-exported)
from .ops import fmt_shape
from .training import definitions as training_definitions
from .writers import kind_rows, settings_text


def plain(text: str, style: str = "") -> Text:
    """Text for a rich table (a cell, a title, a caption): never read as markup (a spec's
    string `"[link=...]x[/link]"` would become a hyperlink, `"[/x]"` an error), control
    characters shown as symbols (issue #13)."""
    return Text(printable(text), style=style)


def md_cell(text: str) -> str:
    """Text for a Markdown table cell: `|` and `\\` escaped, one line, control characters
    shown as symbols."""
    return printable(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def capped(table: Table, rows: Sequence, cells, what: str = "rows") -> None:
    """Add `cells(row)` for each of `rows` to a rich table, at most MAX_TABLE_ROWS of them;
    the caption says how many more there are. Rich takes milliseconds a row (a table of
    24,000 layers took 50 s); the text formats are not capped."""
    for row in rows[:MAX_TABLE_ROWS]:
        table.add_row(*cells(row))
    if len(rows) > MAX_TABLE_ROWS:
        note = plain(f"… and {len(rows) - MAX_TABLE_ROWS:,} more {what}, not shown (all of "
                     "them: --format csv, markdown or json)", "table.caption")
        caption = table.caption
        table.caption = note if caption is None else Text.assemble(
            caption if isinstance(caption, Text) else plain(str(caption)), "\n", note)


def conventions_text(conv: Conventions, keys: Sequence[str] = COUNTS) -> str:
    """The caption defining each count column in `keys`, as the conventions in force
    define it (Grosse & Ba's CSC421 lecture, as DESIGN.md states them)."""
    cost = ("MACs = multiply-accumulates of conv/FC/attention (FLOPs = 2 × MACs)"
            if conv.count == "macs" else "FLOPs = 2 × multiply-accumulates of conv/FC/attention")
    definitions = {
        "units": "units = layer outputs per image",
        "weights": "weights = multiplicative weights only",
        "params": _params_text(conv),
        "connections": "connections = units × fan-in (conv, FC, pooling; attention: its MACs)",
        "macs": cost,
    }
    return "; ".join(text for key, text in definitions.items() if key in keys)


def _params_text(conv: Conventions) -> str:
    left_out = [w for w, on in (("biases", conv.bias), ("norm scale/shift", conv.norm)) if not on]
    if not left_out:
        return "params = all trainable parameters (weights + biases + norm scale/shift)"
    return "params = trainable parameters WITHOUT " + " and ".join(left_out)


CONVENTIONS = conventions_text(Conventions())


def arch_label(stats: Stats) -> str:
    """A row's name: the architecture, and the parameters given to it (`--set`, keyword
    arguments) — not the defaults every row shares."""
    return stats.name + (f" ({settings_text(stats.given)})" if stats.given else "")


def _signed(write):
    return lambda v: (("+" if v > 0 else "") + write(v)) if v else "0"


# how each kind of column writes a value: (every digit, short) — a kind with no short form
# is written the same either way
WRITERS: dict[str, tuple[Any, Any]] = {
    "count": (grouped, compact),
    "delta": (_signed(grouped), _signed(compact)),  # a signed difference: +10,803,912
    "mib": (lambda v: f"{v / 2**20:.1f}", None),
    "ms": (lambda v: f"{v:.2f}" if v >= 1 else f"{v:.3g}", None),  # 12.34, 0.0412
    "pct": (lambda v: v if isinstance(v, str) else f"{v:+.1f}%", None),
    "shape": (fmt_shape, None),
    "text": (str, None),
}


def cell(column: Column, value: Any, short: bool = False) -> str:
    """One value as its column writes it; `short`: a count in papers' style (138.4M)."""
    if value is None:
        return "—" if column.kind != "shape" else "?"
    exact, brief = WRITERS[column.kind]
    return (brief if short and brief else exact)(value)


_POW = {"K": "10³", "M": "10⁶", "G": "10⁹", "T": "10¹²"}
EXACT, ABBREVIATED, SHORT = 0, 1, 2  # a column's forms: as is; short header; short numbers


@dataclass
class FittedTable:
    """A table that fits the width it is rendered at (a rich renderable).

    `values[i][j]` is row i's value for `columns[j]`; `footer` (a totals row) likewise.
    `notes` become the caption, after which the table says what it left out."""

    title: str
    key: str  # the first column's header: Architecture, Layer
    labels: list[str]
    columns: list[Column]
    headers: list[str]
    values: list[list[Any]]
    footer: list[Any] | None = None
    notes: list[str] = field(default_factory=list)
    more: list[str] | None = None  # the columns --columns could add (None: no --columns)
    styles: list[str | None] | None = None  # per row (rich styles), if any
    in_full: str = "--format csv"  # what shows every number in full, and every column
    _made: dict = field(default_factory=dict, repr=False)  # (column, short) → cells, width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.render(options.max_width)

    def render(self, width: int) -> Table:
        return self._table(self.layout(width), width)

    # ---- layout: which columns, in which form
    def layout(self, width: int) -> dict[int, int]:
        """The columns to show (by index), each with its form, for a table at most `width`
        wide: the widest column is shortened first, a step at a time (its header, then its
        numbers); only when all are as short as they get do columns go, by `Column.drop`.
        When even that is too wide, the narrowest table there is."""
        shown = list(range(len(self.columns)))
        while True:
            form = dict.fromkeys(shown, EXACT)
            while self._width(form) > width:
                steps = [j for j in shown if self._next(j, form[j]) is not None]
                if not steps:
                    break
                j = max(steps, key=lambda j: (self._col_width(j, form[j]), -j))
                form[j] = self._next(j, form[j])  # type: ignore[assignment]
            droppable = [j for j in shown if self.columns[j].drop]
            if self._width(form) <= width or not droppable:
                return form
            shown.remove(max(droppable, key=lambda j: (self.columns[j].drop, j)))

    def _next(self, j: int, level: int) -> int | None:
        """The next shorter form of column j, if it has one."""
        col = self.columns[j]
        if level == EXACT and col.abbrev:
            return ABBREVIATED
        return SHORT if level < SHORT and WRITERS[col.kind][1] else None

    def _header(self, j: int, level: int) -> str:
        col = self.columns[j]
        return col.abbrev if level != EXACT and col.abbrev else self.headers[j]

    def _cells(self, j: int, level: int) -> list[str]:
        key = (j, level == SHORT)
        if key not in self._made:  # layout asks again and again: format each column once
            col, short = self.columns[j], level == SHORT
            out = [cell(col, row[j], short) for row in self.values]
            if self.footer is not None:
                out.append(cell(col, self.footer[j], short))
            self._made[key] = (out, max(map(cell_len, out), default=0))
        return self._made[key][0]

    def _col_width(self, j: int, level: int) -> int:
        self._cells(j, level)
        return max(cell_len(self._header(j, level)), self._made[(j, level == SHORT)][1])

    def _label_widths(self) -> tuple[int, int]:
        """The first column's narrowest width (its longest word: a name is never split) and
        its natural width."""
        texts = [self.key, *self.labels, *(["total"] if self.footer is not None else [])]
        words = [w for t in texts for w in t.split()]
        return max(map(cell_len, words)), max(map(cell_len, texts))

    def _width(self, form: dict[int, int]) -> int:
        # each column is padded by one space either side; n + 1 vertical rules
        fixed = sum(self._col_width(j, level) + 2 for j, level in form.items())
        return fixed + self._label_widths()[0] + 2 + len(form) + 2

    # ---- the rich table
    def _caption(self, form: dict[int, int]) -> str:
        lines = list(self.notes)
        short = [j for j, level in form.items() if level == SHORT]
        used = [u for u in _POW if any(c.endswith(u) for j in short for c in self._cells(j, SHORT))]
        if used:
            lines.append(", ".join(used) + " = " + ", ".join(_POW[u] for u in used)
                         + f": numbers shortened to fit ({self.in_full} for every digit)")
        abbrev = [f"{self.columns[j].abbrev} = {self.headers[j]}" for j, level in form.items()
                  if level != EXACT and self.columns[j].abbrev]
        if abbrev:
            lines.append("; ".join(abbrev))
        dropped = [self.headers[j] for j in range(len(self.columns)) if j not in form]
        if dropped:
            choose = ", --columns" if self.more is not None else ""
            lines.append("not shown at this width: " + ", ".join(dropped)
                         + f" (a wider terminal{choose} or {self.in_full})")
        if self.more:
            lines.append("more columns: " + ", ".join(self.more) + " (--columns or --wide)")
        return "\n".join(lines)

    def _table(self, form: dict[int, int], width: int) -> Table:
        narrow, natural = self._label_widths()
        room = width - (self._width(form) - narrow)
        total = self.footer is not None
        table = Table(title=plain(self.title, "table.title"),
                      caption=plain(self._caption(form), "table.caption"),
                      caption_justify="left", show_footer=total)
        table.add_column(self.key, footer="total" if total else "",
                         width=max(narrow, min(natural, room)), overflow="fold")
        for j, level in form.items():
            col = self.columns[j]
            table.add_column(self._header(j, level), no_wrap=True,
                             justify="left" if col.kind == "text" else "right",
                             footer=self._cells(j, level)[-1] if total else "")
        rows = [self._cells(j, level) for j, level in form.items()]
        capped(table, range(len(self.labels)), lambda i: [
            plain(self.labels[i], (self.styles[i] or "") if self.styles else ""),
            *(plain(cells[i], (self.styles[i] or "") if self.styles else "")
              for cells in rows)], f"{self.key.lower()}s")
        return table


def _notes(stats: Stats, columns: list[Column], dtypes: list[str],
           all_stats: Sequence[Stats] = ()) -> list[str]:
    notes = [conventions_text(stats.conventions, [c.key for c in columns])]
    if any(c.key in TRAINING_KEYS for c in columns):
        notes.append(training_definitions(stats.extra.get("batch", 1)))
    if any(c.key == "latency_ms" for c in columns):
        notes.append(latency_definition(all_stats or [stats]))
    if any(c.kind == "mib" for c in columns):
        notes.append(f"MB = 2^20 bytes as {', '.join(dtypes)}")
    return notes


def comparison_table(all_stats: Sequence[Stats], columns: list[Column] | None = None
                     ) -> FittedTable:
    """One row per architecture (and --set combination)."""
    columns = columns if columns is not None else choose(None, False, per_layer=False)
    first = all_stats[0]
    return FittedTable(
        "Architectures", "Architecture", [arch_label(s) for s in all_stats], columns,
        [c.title(first) for c in columns],
        [[c.arch(s) for c in columns] for s in all_stats],  # type: ignore[misc]
        notes=_notes(first, columns, sorted({s.dtype for s in all_stats}), all_stats),
        more=hidden(columns, per_layer=False))


def layer_table(stats: Stats, depth: int | None = None,
                columns: list[Column] | None = None) -> FittedTable:
    """One row per layer (or per block/stage with `depth`), with the totals as footer."""
    columns = columns if columns is not None else choose(None, False, per_layer=True)
    rows = stats.rollup(depth)
    totals = [stats.output if c.kind == "shape" else
              c.arch(stats) if c.arch is not None and c.kind == "count" else None
              for c in columns]
    return FittedTable(
        arch_label(stats), "Layer", [r.name for r in rows], columns,
        [c.title(stats) for c in columns],
        [[c.layer(stats, r) for c in columns] for r in rows],  # type: ignore[misc]
        footer=[t if t is not None else "" for t in totals],
        notes=_notes(stats, columns, [stats.dtype]),
        more=hidden(columns, per_layer=True))


# the per-kind table's columns: those of the registry with these keys
KIND_COLUMNS = ("params", "macs", "train_macs", "kept_mb", "trainable")


def kinds_table(stats: Stats) -> FittedTable:
    """One row per kind of op (OpDef.category: conv, linear, attention, norm...), with the
    totals as footer: where the parameters, the cost and the training memory are."""
    columns = [COLUMNS[k] for k in KIND_COLUMNS]
    factor = 2 if stats.conventions.count == "flops" else 1
    rows = [[r["params"], r["macs"] * factor, r["train_macs"] * factor, r["kept_bytes"],
             r["trainable"]] for _, r in kind_rows(stats)]
    return FittedTable(
        f"{arch_label(stats)} by kind of op", "Kind", [k for k, _ in kind_rows(stats)],
        columns, [c.title(stats) for c in columns], rows,
        footer=[sum(col) for col in zip(*rows, strict=True)] if rows else None,
        notes=_notes(stats, columns, [stats.dtype]))


def kinds_markdown(stats: Stats) -> str:
    t = kinds_table(stats)
    return "\n".join([f"### {t.title}", "", *_md_rows(t), "", *(f"_{n}_" for n in t.notes),
                      ""]) + "\n"


def _md_rows(t: FittedTable) -> list[str]:
    cols = range(len(t.columns))
    lines = ["| " + " | ".join([t.key, *t.headers]) + " |",
             "|---|" + "".join("---|" if t.columns[j].kind == "text" else "---:|" for j in cols)]
    lines += ["| " + " | ".join(map(md_cell, [label, *(cell(t.columns[j], row[j])
                                                      for j in cols)])) + " |"
              for label, row in zip(t.labels, t.values, strict=True)]
    if t.footer is not None:
        lines.append("| **total** | " + " | ".join(cell(t.columns[j], t.footer[j])
                                                  for j in cols) + " |")
    return lines


def to_markdown(all_stats: Sequence[Stats], per_layer: bool, depth: int | None = None,
                columns: list[Column] | None = None) -> str:
    """The table's columns (every digit), as Markdown."""
    lines: list[str] = []
    if per_layer:
        for s in all_stats:
            t = layer_table(s, depth, columns)
            lines += [f"### {md_cell(t.title)}", "", *_md_rows(t), ""]
    else:
        t = comparison_table(all_stats, columns)
        lines += [*_md_rows(t), ""]
    lines += [f"_{n}_" for n in t.notes]
    return "\n".join(lines) + "\n"

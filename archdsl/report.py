"""Rendering stats: rich tables for people; JSON, CSV and Markdown for programs and docs.

The library never prints: these functions return renderables or strings.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .analysis import COUNTS, Conventions, Row, Stats
from .errors import printable
from .limits import MAX_TABLE_ROWS
from .ops import fmt_shape


def cell(text: str, style: str = "") -> Text:
    """Text for a rich table (a cell, a title): never read as markup (a spec's string
    `"[link=...]x[/link]"` would become a hyperlink, `"[/x]"` an error), control
    characters shown as symbols."""
    return Text(printable(text), style=style)


def capped(table: Table, rows: list, cells, what: str = "rows") -> None:
    """Add `cells(row)` for each of `rows` to a rich table, at most MAX_TABLE_ROWS of them,
    then a row saying how many more there are: Rich takes milliseconds a row (a table of
    24,000 layers took 50 s); the text formats are not capped."""
    for row in rows[:MAX_TABLE_ROWS]:
        table.add_row(*cells(row))
    if len(rows) > MAX_TABLE_ROWS:
        more = len(rows) - MAX_TABLE_ROWS
        table.add_row(Text(f"… {more:,} more {what} (all of them: --format csv, markdown or "
                           "json)", style="dim"))


def md_cell(text: str) -> str:
    """Text for a Markdown table cell: `|` and `\\` escaped, one line, control characters
    shown as symbols."""
    return printable(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def conventions_text(conv: Conventions) -> str:
    """The header line naming every column's definition, as in force."""
    cost = ("MACs = multiply-accumulates of conv/FC/attention (FLOPs = 2 × MACs)"
            if conv.count == "macs" else "FLOPs = 2 × multiply-accumulates of conv/FC/attention")
    return ("units = layer outputs per image; weights = multiplicative weights only; "
            f"{conv.describe()}; connections = units × fan-in (conv, FC, pooling; attention: "
            f"its MACs); {cost}")


CONVENTIONS = conventions_text(Conventions())


def human(n: float, unit: str = "") -> str:
    """12_345_678 → 12.35M (papers' style)."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def _settings(stats: Stats) -> str:
    from .formatter import spec_value
    return ", ".join(f"{k}={spec_value(v)}" for k, v in stats.settings.items())


def _cost(stats: Stats) -> tuple[str, int]:
    """The cost column's title and its factor over MACs."""
    return ("FLOPs", 2) if stats.conventions.count == "flops" else ("MACs", 1)


def _layer_columns(stats: Stats) -> list[tuple[str, str]]:
    return [("Layer", "name"), ("Op", "op"), ("Output", "shape"), ("Units", "units"),
            ("Weights", "weights"), ("Params", "params"), ("Connections", "connections"),
            (_cost(stats)[0], "macs")]


def layer_table(stats: Stats, depth: int | None = None) -> Table:
    title = f"{stats.name}" + (f" ({_settings(stats)})" if stats.settings else "")
    table = Table(title=cell(title, "table.title"), caption=conventions_text(stats.conventions) +
                  f"; bytes as {stats.dtype}", show_footer=True, caption_justify="left")
    totals = stats.totals
    factor = _cost(stats)[1]
    for header, key in _layer_columns(stats):
        numeric = key in COUNTS
        footer = f"{totals[key] * (factor if key == 'macs' else 1):,}" if numeric else (
            "total" if key == "name" else "")
        if key == "shape":
            footer = fmt_shape(stats.output)
        table.add_column(header, footer=footer, justify="right" if numeric else "left",
                         no_wrap=key != "name", min_width=12 if key == "name" else None,
                         overflow="fold")
    capped(table, stats.rollup(depth), lambda row: map(cell, _layer_cells(row, factor)),
           "layers")
    return table


def _layer_cells(row: Row, factor: int = 1) -> list[str]:
    op = "+".join(row.ops) if row.op != "block" else "block"
    return [row.name, op, fmt_shape(row.shape)] + [
        f"{getattr(row, k) * (factor if k == 'macs' else 1):,}"
        for k in ("units", "weights", "params", "connections", "macs")]


def _cmp_columns(stats: Stats) -> list[str]:
    return ["Architecture", "Input", "Output", "Params", "Params (M)", "Weights", "Units",
            "Connections", f"{_cost(stats)[0]} (G)", "Param MB", "Act. MB"]


def _cmp_cells(stats: Stats) -> list[str]:
    t = stats.totals
    name = stats.name + (f" ({_settings(stats)})" if stats.settings else "")
    cost = t["macs"] * _cost(stats)[1]
    return [name, fmt_shape(stats.input), fmt_shape(stats.output), f"{t['params']:,}",
            f"{t['params'] / 1e6:.1f}", f"{t['weights']:,}", f"{t['units']:,}",
            f"{t['connections']:,}", f"{cost / 1e9:.3f}",
            f"{t['param_bytes'] / 2**20:.1f}", f"{t['activation_bytes'] / 2**20:.1f}"]


def comparison_table(all_stats: Sequence[Stats]) -> Group:
    first = all_stats[0]
    table = Table(title="Architectures", caption=conventions_text(first.conventions),
                  caption_justify="left")
    for col in _cmp_columns(first):
        table.add_column(col, justify="left" if col == "Architecture" else "right",
                         no_wrap=col != "Architecture", overflow="fold",
                         min_width=16 if col == "Architecture" else None)
    for s in all_stats:
        table.add_row(*map(cell, _cmp_cells(s)))
    dtypes = sorted({s.dtype for s in all_stats})
    return Group(table, Text(f"MB = 2^20 bytes as {', '.join(dtypes)}", style="dim"))


def to_json(all_stats: Sequence[Stats], depth: int | None = None) -> str:
    data = [s.to_dict(depth) for s in all_stats]
    return json.dumps(data[0] if len(data) == 1 else data, indent=2)


def to_csv(all_stats: Sequence[Stats], per_layer: bool, depth: int | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if per_layer:
        w.writerow(["arch", "layer", "op", "shape", *COUNTS])
        for s in all_stats:
            for r in s.rollup(depth):
                w.writerow([s.name, r.name, r.op, fmt_shape(r.shape).replace("×", "x"),
                            *(getattr(r, k) for k in COUNTS)])
    else:
        keys = list(all_stats[0].totals) if all_stats else []
        w.writerow(["arch", "settings", "input", "output", *keys])
        for s in all_stats:
            t = s.totals
            w.writerow([s.name, _settings(s), fmt_shape(s.input).replace("×", "x"),
                        fmt_shape(s.output).replace("×", "x"), *(t[k] for k in keys)])
    return buf.getvalue()


def to_markdown(all_stats: Sequence[Stats], per_layer: bool, depth: int | None = None) -> str:
    lines: list[str] = []
    first = all_stats[0]
    if per_layer:
        factor = _cost(first)[1]
        for s in all_stats:
            lines += [f"### {md_cell(s.name)}", "",
                      "| " + " | ".join(h for h, _ in _layer_columns(s)) + " |",
                      "|" + "---|" * 3 + "---:|" * 5]
            lines += ["| " + " | ".join(map(md_cell, _layer_cells(r, factor))) + " |"
                      for r in s.rollup(depth)]
            t = {**s.totals, "macs": s.totals["macs"] * factor}
            lines.append("| **total** | | " + fmt_shape(s.output) + " | " +
                         " | ".join(f"{t[k]:,}" for k in ("units", "weights", "params",
                                                         "connections", "macs")) + " |")
            lines.append("")
    else:
        cols = _cmp_columns(first)
        lines += ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
        lines += ["| " + " | ".join(map(md_cell, _cmp_cells(s))) + " |" for s in all_stats]
        lines.append("")
    lines.append(f"_{conventions_text(first.conventions)}_")
    return "\n".join(lines) + "\n"

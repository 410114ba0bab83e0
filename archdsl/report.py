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

from .analysis import COUNTS, Row, Stats
from .ops import fmt_shape

CONVENTIONS = (
    "units = layer outputs per image; weights = multiplicative weights only; "
    "params = all trainable parameters (weights + biases + norm scale/shift); "
    "connections = units × fan-in (conv, FC, pooling); MACs = multiply-accumulates of conv/FC "
    "(FLOPs = 2 × MACs)"
)

_LAYER_COLUMNS = [("Layer", "name"), ("Op", "op"), ("Output", "shape"), ("Units", "units"),
                  ("Weights", "weights"), ("Params", "params"), ("Connections", "connections"),
                  ("MACs", "macs")]


def human(n: float, unit: str = "") -> str:
    """12_345_678 → 12.35M (papers' style)."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def _settings(stats: Stats) -> str:
    from .formatter import spec_value
    return ", ".join(f"{k}={spec_value(v)}" for k, v in stats.settings.items())


def layer_table(stats: Stats, depth: int | None = None) -> Table:
    title = f"{stats.name}" + (f" ({_settings(stats)})" if stats.settings else "")
    table = Table(title=title, caption=CONVENTIONS + f"; bytes as {stats.dtype}",
                  show_footer=True, caption_justify="left")
    totals = stats.totals
    for header, key in _LAYER_COLUMNS:
        numeric = key in COUNTS
        footer = f"{totals[key]:,}" if numeric else ("total" if key == "name" else "")
        if key == "shape":
            footer = fmt_shape(stats.output)
        table.add_column(header, footer=footer, justify="right" if numeric else "left",
                         no_wrap=key != "name", min_width=12 if key == "name" else None,
                         overflow="fold")
    for row in stats.rollup(depth):
        table.add_row(*_layer_cells(row))
    return table


def _layer_cells(row: Row) -> list[str]:
    op = "+".join(row.ops) if row.op != "block" else "block"
    return [row.name, op, fmt_shape(row.shape)] + [f"{getattr(row, k):,}" for k in
                                                   ("units", "weights", "params", "connections",
                                                    "macs")]


_CMP_COLUMNS = ["Architecture", "Input", "Output", "Params", "Params (M)", "Weights", "Units",
                "Connections", "MACs (G)", "FLOPs (G)", "Param MB", "Act. MB"]


def _cmp_cells(stats: Stats) -> list[str]:
    t = stats.totals
    name = stats.name + (f" ({_settings(stats)})" if stats.settings else "")
    return [name, fmt_shape(stats.input), fmt_shape(stats.output), f"{t['params']:,}",
            f"{t['params'] / 1e6:.1f}", f"{t['weights']:,}", f"{t['units']:,}",
            f"{t['connections']:,}", f"{t['macs'] / 1e9:.3f}", f"{t['flops'] / 1e9:.3f}",
            f"{t['param_bytes'] / 2**20:.1f}", f"{t['activation_bytes'] / 2**20:.1f}"]


def comparison_table(all_stats: Sequence[Stats]) -> Group:
    table = Table(title="Architectures", caption=CONVENTIONS, caption_justify="left")
    for col in _CMP_COLUMNS:
        table.add_column(col, justify="left" if col in ("Architecture",) else "right",
                         no_wrap=col != "Architecture", overflow="fold",
                         min_width=16 if col == "Architecture" else None)
    for s in all_stats:
        table.add_row(*_cmp_cells(s))
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
    if per_layer:
        for s in all_stats:
            lines += [f"### {s.name}", "", "| " + " | ".join(h for h, _ in _LAYER_COLUMNS) + " |",
                      "|" + "---|" * 3 + "---:|" * 5]
            lines += ["| " + " | ".join(_layer_cells(r)) + " |" for r in s.rollup(depth)]
            t = s.totals
            lines.append("| **total** | | " + fmt_shape(s.output) + " | " +
                         " | ".join(f"{t[k]:,}" for k in ("units", "weights", "params",
                                                         "connections", "macs")) + " |")
            lines.append("")
    else:
        lines += ["| " + " | ".join(_CMP_COLUMNS) + " |",
                  "|---|" + "---:|" * (len(_CMP_COLUMNS) - 1)]
        lines += ["| " + " | ".join(_cmp_cells(s)) + " |" for s in all_stats]
        lines.append("")
    lines.append(f"_{CONVENTIONS}_")
    return "\n".join(lines) + "\n"

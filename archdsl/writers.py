"""The machine formats of `archdsl stats`: JSON (docs/json-schema.md) and CSV — every count,
every digit, written straight out (no rich: these are what scripts and pipes read)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from .analysis import COUNTS, Row, Stats
from .ops import fmt_shape


def to_json(all_stats: Sequence[Stats], depth: int | None = None) -> str:
    """One object per architecture (a list when there are several), indented, with each
    layer on one line: as readable, and fast — json's C encoder only runs without
    indentation, and a layer's line is made from one format string (a 10,000-layer spec:
    20 ms for its layers instead of 170)."""
    docs = [_json_object(s, depth, "  " if len(all_stats) > 1 else "") for s in all_stats]
    if len(docs) == 1:
        return docs[0] + "\n"
    return "[\n  " + ",\n  ".join(docs) + "\n]\n"


def _json_object(stats: Stats, depth: int | None, indent: str) -> str:
    """`stats.to_dict(depth)` as JSON text (tests check the two agree)."""
    inner = indent + "  "
    fields = [f"{inner}{json.dumps(key)}: {json.dumps(value)}"
              for key, value in stats.to_dict(depth, layers=False).items()]
    rows = stats.rollup(depth)
    layers = f",\n{inner}  ".join(map(_layer_line, rows))
    fields.append(f'{inner}"layers": ' + (f"[\n{inner}  {layers}\n{inner}]" if rows else "[]"))
    return "{\n" + ",\n".join(fields) + "\n" + indent + "}"


_ENC = json.encoder.encode_basestring_ascii  # what json.dumps does to a str, in C
_LINE = ('{{"name": {}, "op": {}, "shape": {}, '
         + ", ".join(f'"{k}": {{}}' for k in COUNTS) + "}}")


def _layer_line(r: Row) -> str:
    """One entry of `layers`, as json.dumps writes `Stats.to_dict`'s."""
    shape = "null" if r.shape is None else "[" + ", ".join(map(str, r.shape)) + "]"
    return _LINE.format(_ENC(r.name), _ENC(r.op), shape, *(int(getattr(r, k)) for k in COUNTS))


def to_csv(all_stats: Sequence[Stats], per_layer: bool, depth: int | None = None) -> str:
    """Every count, every digit (machine-readable; `--columns` does not apply)."""
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
            w.writerow([s.name, settings_text(s.settings), fmt_shape(s.input).replace("×", "x"),
                        fmt_shape(s.output).replace("×", "x"), *(t[k] for k in keys)])
    return buf.getvalue()




def settings_text(settings: dict[str, Any]) -> str:
    """`alpha=0.5, classes=10`, values as spec text writes them."""
    from .formatter import spec_value
    return ", ".join(f"{k}={spec_value(v)}" for k, v in settings.items())

"""The machine formats of `archdsl stats`: JSON (docs/json-schema.md) and CSV — every count,
every digit, written straight out (no rich: these are what scripts and pipes read)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from .analysis import COUNTS, Stats
from .ops import fmt_shape


def to_json(all_stats: Sequence[Stats], depth: int | None = None) -> str:
    """One object per architecture (a list when there are several), indented, with each
    layer on one line: as readable, and json's C encoder only runs without indentation
    (a 10,000-layer spec: 40 ms instead of 170)."""
    docs = [_json_object(s.to_dict(depth), "  " if len(all_stats) > 1 else "")
            for s in all_stats]
    if len(docs) == 1:
        return docs[0] + "\n"
    return "[\n  " + ",\n  ".join(docs) + "\n]\n"


def _json_object(data: dict[str, Any], indent: str) -> str:
    inner = indent + "  "
    fields = []
    for key, value in data.items():
        if key == "layers":
            items = f",\n{inner}  ".join(map(json.dumps, value))
            text = f"[\n{inner}  {items}\n{inner}]" if value else "[]"
        else:
            text = json.dumps(value)
        fields.append(f"{inner}{json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(fields) + "\n" + indent + "}"


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

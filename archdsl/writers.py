"""The machine formats of `archdsl stats`: JSON (docs/json-schema.md) and CSV — every count,
every digit, written straight out (no rich: these are what scripts and pipes read)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from .analysis import COUNTS, DTYPE_BYTES, Row, Stats
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
    """`stats.to_dict(depth)` as JSON text (tests check the two agree), with `training`
    (totals, and per layer) when the training costs were counted (stats --training...)."""
    inner = indent + "  "
    head = stats.to_dict(depth, layers=False)
    if "training" in stats.extra:
        head["training"] = training_totals(stats)
    if "latency" in stats.extra:
        head["latency"] = stats.extra["latency"].to_dict()
    fields = [f"{inner}{json.dumps(key)}: {json.dumps(value)}" for key, value in head.items()]
    rows = stats.rollup(depth)
    lines = map(_layer_line, rows)
    if "training" in stats.extra:
        lines = (line[:-1] + ", " + json.dumps(training_fields(stats, r))[1:]
                 for line, r in zip(lines, rows, strict=True))
    layers = f",\n{inner}  ".join(lines)
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
    train = bool(all_stats) and "training" in all_stats[0].extra
    if per_layer:
        extra = list(_TRAIN_LAYER) if train else []
        w.writerow(["arch", "layer", "op", "shape", *COUNTS, *extra])
        for s in all_stats:
            for r in s.rollup(depth):
                fields = training_fields(s, r) if train else {}
                w.writerow([s.name, r.name, r.op, fmt_shape(r.shape).replace("×", "x"),
                            *(getattr(r, k) for k in COUNTS), *(fields[k] for k in extra)])
    else:
        keys = list(all_stats[0].totals) if all_stats else []
        extra = [k for k in training_totals(all_stats[0]) if k != "kinds"] if train else []
        timed = bool(all_stats) and "latency" in all_stats[0].extra
        w.writerow(["arch", "settings", "input", "output", *keys, *extra,
                    *(["latency_ms", "latency_target"] if timed else [])])
        for s in all_stats:
            t = s.totals
            more = training_totals(s) if train else {}
            lat = [s.extra["latency"].to_dict()[k] for k in ("ms", "target")] if timed else []
            w.writerow([s.name, settings_text(s.settings), fmt_shape(s.input).replace("×", "x"),
                        fmt_shape(s.output).replace("×", "x"), *(t[k] for k in keys),
                        *(more[k] for k in extra), *lat])
    return buf.getvalue()




def training_totals(stats: Stats) -> dict[str, Any]:
    """The training facts of a whole network (docs/json-schema.md: `training`)."""
    t = stats.extra["training"]
    batch = stats.extra.get("batch", 1)
    size = DTYPE_BYTES[stats.dtype]
    return {"batch": batch, "trainable": t.trainable, "frozen": t.frozen,
            "train_macs": t.train_macs, "train_flops": 2 * t.train_macs,
            "kept_bytes_per_image": t.kept, "kept_bytes": t.kept_for(batch),
            "grad_bytes": t.trainable * size, "sgd_bytes": t.memory(batch, "sgd"),
            "adam_bytes": t.memory(batch, "adam"), "kinds": dict(kind_rows(stats))}


_TRAIN_LAYER = ("trainable", "frozen", "train_macs", "kept_bytes_per_image", "kept_bytes")


def training_fields(stats: Stats, row: Row) -> dict[str, int]:
    """A layer's (or rolled-up block's) training facts."""
    from .training import of_layers
    c = of_layers(stats, row.name)
    batch = stats.extra.get("batch", 1)
    return {"trainable": c.trainable, "frozen": c.frozen, "train_macs": c.train_macs,
            "kept_bytes_per_image": c.kept, "kept_bytes": c.kept * batch + c.kept_per_batch}


def kind_rows(stats: Stats) -> list[tuple[str, dict[str, int]]]:
    """The training costs by kind of op (conv, linear, norm...), the costliest first."""
    t = stats.extra["training"]
    batch = stats.extra.get("batch", 1)
    rows = [(kind, {"nodes": k.nodes, "params": k.params, "macs": k.macs,
                    "train_macs": k.train_macs, "trainable": k.trainable, "frozen": k.frozen,
                    "kept_bytes_per_image": k.kept,
                    "kept_bytes": k.kept * batch + k.kept_per_batch})
            for kind, k in t.kinds.items()]
    return sorted(rows, key=lambda r: (-r[1]["macs"], -r[1]["params"], r[0]))


_KIND_KEYS = ("nodes", "params", "macs", "train_macs", "trainable", "frozen",
              "kept_bytes_per_image", "kept_bytes")


def kinds_json(all_stats: Sequence[Stats]) -> str:
    docs = [{"name": s.name, "settings": dict(s.settings), "batch": s.extra.get("batch", 1),
             "kinds": dict(kind_rows(s))} for s in all_stats]
    return json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n"


def kinds_csv(all_stats: Sequence[Stats]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch", "kind", *_KIND_KEYS])
    for s in all_stats:
        for kind, row in kind_rows(s):
            w.writerow([s.name, kind, *(row[k] for k in _KIND_KEYS)])
    return buf.getvalue()


def settings_text(settings: dict[str, Any]) -> str:
    """`alpha=0.5, classes=10`, values as spec text writes them."""
    from .formatter import spec_value
    return ", ".join(f"{k}={spec_value(v)}" for k, v in settings.items())

"""The columns `archdsl stats` can show: one entry each, in one place.

A column names its key (what `--columns` takes), its header, what kind of value it holds (which
decides how it is written and how it shrinks to fit a terminal), and where its value comes
from: an architecture's `Stats` (the comparison table) and/or one `Row` (the per-layer table).
Adding a column — a measured latency, a training-memory estimate — is one entry in `COLUMNS`;
values that analysis does not count come through `Stats.extra` (see analysis.Stats).

Kinds: `count` (every digit, or 138.4M when the terminal is narrow), `mib` (bytes shown in
MiB), `ms` (milliseconds), `shape` (3×224×224) and `text`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import latency, training
from .analysis import DTYPE_BYTES, Row, Stats
from .errors import UsageError, did_you_mean


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: str  # count | mib | ms | shape | text
    doc: str
    arch: Callable[[Stats], Any] | None = None  # the value for a whole architecture
    layer: Callable[[Stats, Row], Any] | None = None  # the value for one layer (or block)
    default: bool = False  # shown by the comparison table without --columns
    layer_default: bool = False  # shown by the per-layer table without --columns
    abbrev: str | None = None  # a shorter header, for narrow terminals
    # when a table does not fit even with short numbers, columns go in this order (highest
    # first); 0: never (the architecture or layer name never goes either)
    drop: int = 0
    # measured by an option of its own (--latency), not counted: never in --wide, nor among
    # the columns a table says it could show
    measured: bool = False

    def title(self, stats: Stats) -> str:
        """The header as in force: the cost columns say MACs or FLOPs (--count)."""
        if self.key in ("macs", "train_macs"):
            return self.header.replace("MACs", _cost(stats)[0])
        return self.header


def _cost(stats: Stats) -> tuple[str, int]:
    return ("FLOPs", 2) if stats.conventions.count == "flops" else ("MACs", 1)


def _total(key: str) -> Callable[[Stats], int]:
    return lambda s: s.totals[key] * (_cost(s)[1] if key == "macs" else 1)


def _of_row(key: str) -> Callable[[Stats, Row], int]:
    return lambda s, r: getattr(r, key) * (_cost(s)[1] if key == "macs" else 1)


def _count(key: str, header: str, doc: str, default: bool, drop: int,
           abbrev: str | None = None) -> Column:
    return Column(key, header, "count", doc, arch=_total(key), layer=_of_row(key),
                  default=default, layer_default=True, abbrev=abbrev, drop=drop)


def _train(key: str, header: str, kind: str, doc: str, arch, layer=None,
           abbrev: str | None = None) -> Column:
    """A training column (archdsl.training; the CLI counts it when one is asked for)."""
    return Column(key, header, kind, doc, arch=lambda s: arch(s, s.extra["training"]),
                  layer=None if layer is None else
                  (lambda s, r: layer(s, training.of_layers(s, r.name))), abbrev=abbrev, drop=2)


def _batch(s: Stats) -> int:
    return s.extra.get("batch", 1)


def _bytes(s: Stats, values: int) -> int:
    return values * DTYPE_BYTES[s.dtype]


TRAINING = [
    _train("trainable", "Trainable", "count", "parameters that train (all, or what --freeze "
           "leaves)", lambda s, t: t.trainable, lambda s, c: c.trainable),
    _train("frozen", "Frozen", "count", "parameters --freeze fixes",
           lambda s, t: t.frozen, lambda s, c: c.frozen),
    _train("train_macs", "Train MACs", "count", "forward + backward multiply-accumulates",
           lambda s, t: t.train_macs * _cost(s)[1], lambda s, c: c.train_macs * _cost(s)[1]),
    _train("kept_img_mb", "Kept MB/img", "mib", "activations kept for backward, per image",
           lambda s, t: t.kept, lambda s, c: c.kept, abbrev="Kept/img"),
    _train("kept_mb", "Kept MB", "mib", "activations kept for backward, per batch (--batch)",
           lambda s, t: t.kept_for(_batch(s)),
           lambda s, c: c.kept * _batch(s) + c.kept_per_batch),
    _train("grad_mb", "Grad MB", "mib", "parameter gradients",
           lambda s, t: _bytes(s, t.trainable), lambda s, c: _bytes(s, c.trainable)),
    _train("sgd_mb", "SGD MB", "mib", "training memory with SGD and momentum, per batch",
           lambda s, t: t.memory(_batch(s), "sgd")),
    _train("adam_mb", "Adam MB", "mib", "training memory with Adam, per batch",
           lambda s, t: t.memory(_batch(s), "adam")),
]
TRAINING_KEYS = frozenset(c.key for c in TRAINING)


COLUMNS: dict[str, Column] = {c.key: c for c in [
    Column("input", "Input", "shape", "the input shape, per image",
           arch=lambda s: s.input, default=True, drop=4),
    Column("op", "Op", "text", "the ops of the layer (conv+bn+relu), or block",
           layer=lambda s, r: "+".join(r.ops) if r.op != "block" else "block",
           layer_default=True, drop=1),
    Column("output", "Output", "shape", "the output shape, per image",
           arch=lambda s: s.output, layer=lambda s, r: r.shape, default=True,
           layer_default=True, drop=3),
    _count("units", "Units", "output activations (C·H·W per image)", False, 6),
    _count("weights", "Weights", "multiplicative weights only", False, 7),
    _count("params", "Params", "all trainable parameters", True, 0),
    _count("connections", "Connections", "units × fan-in", False, 8, "Conn."),
    _count("macs", "MACs", "multiply-accumulates (FLOPs with --count flops)", True, 0),
    Column("param_mb", "Param MB", "mib", "parameter memory (--dtype)",
           arch=lambda s: s.totals["param_bytes"], default=True, drop=5),
    Column("act_mb", "Act. MB", "mib", "activation memory, every layer output (--dtype)",
           arch=lambda s: s.totals["activation_bytes"], default=True, drop=5),
    *TRAINING,
    Column("latency_ms", "Latency ms", "ms", "measured: median milliseconds per batch of the "
           "network compiled with TVM (stats --latency TARGET)", arch=latency.of,
           measured=True),
]}


def choose(names: str | None, wide: bool, per_layer: bool) -> list[Column]:
    """The columns a table shows: those named (`--columns params,macs`, in that order), all
    (`--wide`), or the default ones."""
    usable = {k: c for k, c in COLUMNS.items() if (c.layer if per_layer else c.arch)}
    if names is None:
        if wide:
            return [c for c in usable.values() if not c.measured]
        return [c for c in usable.values() if (c.layer_default if per_layer else c.default)]
    chosen = []
    for key in (k.strip() for k in names.split(",") if k.strip()):
        if key not in usable:
            other = "the comparison table" if per_layer else "--per-layer"
            why = f" (only {other} has it)" if key in COLUMNS else ""
            raise UsageError(f"no column `{key}`{why}", None, did_you_mean(key, usable)
                             or "columns: " + ", ".join(usable))
        if usable[key] not in chosen:
            chosen.append(usable[key])
    if not chosen:
        raise UsageError("--columns names no column", None, "columns: " + ", ".join(usable))
    return chosen


def hidden(shown: list[Column], per_layer: bool) -> list[str]:
    """The columns this table could show but does not (listed under it)."""
    return [k for k, c in COLUMNS.items() if (c.layer if per_layer else c.arch)
            and c not in shown and not c.measured]

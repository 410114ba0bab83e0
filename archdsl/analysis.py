"""Per-layer and total size/cost of an architecture, asking each op's declaration (archdsl/ops/).

A *layer* is one spec statement: `conv3-64` with `norm=bn act=relu` is one layer made of three
nodes (conv, bn, relu), as a paper's table shows it. Its units are the layer's output; its
params add up all its nodes (conv weights + bias + bn scale/shift).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._perf import gc_paused
from .ir import Graph
from .ops import OPS, Shape

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}
COUNTS = ("params", "weights", "units", "connections", "macs")


@dataclass
class Row:
    """One layer (or, rolled up, one block or stage) of a stats table."""

    name: str
    op: str
    shape: Shape | None
    params: int = 0
    weights: int = 0
    units: int = 0
    connections: int = 0
    macs: int = 0
    ops: list[str] = field(default_factory=list)

    def add(self, other: Row) -> None:
        for key in COUNTS:
            setattr(self, key, getattr(self, key) + getattr(other, key))


@dataclass(frozen=True)
class Conventions:
    """Which counting convention is in force (to match a paper's): whether params include
    biases and normalization scale/shift, and whether cost is shown as MACs or FLOPs."""

    bias: bool = True
    norm: bool = True
    count: str = "macs"  # macs | flops (FLOPs = 2 × MACs)


@dataclass
class Stats:
    name: str
    settings: dict[str, Any]
    input: Shape
    output: Shape | None
    rows: list[Row]
    dtype: str = "float32"
    conventions: Conventions = field(default_factory=lambda: Conventions())
    # the parameters given explicitly (--set, keyword arguments): what tells rows apart
    given: dict[str, Any] = field(default_factory=dict)
    # values measured or estimated outside this module (a latency, say), for columns.py
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def totals(self) -> dict[str, int]:
        t = {k: sum(getattr(r, k) for r in self.rows) for k in COUNTS}
        size = DTYPE_BYTES[self.dtype]
        t["flops"] = 2 * t["macs"]
        t["param_bytes"] = t["params"] * size
        t["activation_bytes"] = t["units"] * size
        return t

    def rollup(self, depth: int | None) -> list[Row]:
        """Rows grouped by the first `depth` parts of their scoped names (None: every layer)."""
        if depth is None:
            return self.rows
        out: dict[str, Row] = {}
        for r in self.rows:
            parts = r.name.split(".")
            key = ".".join(parts[:depth])
            if key not in out:
                op = r.op if len(parts) <= depth else "block"
                out[key] = Row(key, op, r.shape, ops=[])
            else:
                out[key].op = "block"
            agg = out[key]
            agg.add(r)
            agg.shape = r.shape
            agg.ops.extend(o for o in r.ops if o not in agg.ops)
        return list(out.values())

    def to_dict(self, depth: int | None = None, layers: bool = True) -> dict[str, Any]:
        """The stable JSON form (see docs/json-schema.md); `layers=False` leaves out the
        per-layer list (writers.to_json writes it itself, faster)."""
        out = {
            "conventions": {"bias": self.conventions.bias, "norm": self.conventions.norm,
                            "count": self.conventions.count},
            "name": self.name,
            "settings": dict(self.settings),
            "input": list(self.input),
            "output": list(self.output) if self.output is not None else None,
            "dtype": self.dtype,
            "totals": self.totals,
        }
        if layers:
            out["layers"] = [{"name": r.name, "op": r.op,
                              "shape": list(r.shape) if r.shape is not None else None,
                              **{k: getattr(r, k) for k in COUNTS}} for r in self.rollup(depth)]
        return out


def analyse(graph: Graph, dtype: str = "float32",
            conventions: Conventions | None = None) -> Stats:
    """Count every layer of a typed graph."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}")
    with gc_paused():
        return _analyse(graph, dtype, conventions or Conventions())


def _analyse(graph: Graph, dtype: str, conv: Conventions) -> Stats:
    rows: dict[int, Row] = {}
    for node in graph.nodes:
        if node.op == "input":
            continue
        op = OPS[node.op]
        ins = [graph.node(i).shape for i in graph.inputs(node.id)]
        out = node.shape
        counts = Row(node.name, node.op, out, ops=[node.op])
        if out is not None and all(s is not None for s in ins):
            counts.params = op.params(node.attrs, ins, out)
            if op.category == "norm" and not conv.norm:
                counts.params = 0
            elif op.category != "norm" and not conv.bias:
                counts.params -= op.biases(node.attrs, ins, out)
            counts.weights = op.weights(node.attrs, ins, out)
            counts.connections = op.connections(node.attrs, ins, out)
            counts.macs = op.macs(node.attrs, ins, out)
            counts.units = op.units(out)
        if node.layer == node.id:
            rows[node.id] = counts
        else:
            row = rows[node.layer]
            counts.units = 0  # a layer's units are its primary output (bn/relu work in place)
            row.add(counts)
            row.ops.append(node.op)
    return Stats(graph.name, dict(graph.settings), graph.input_shape, graph.output_shape,
                 list(rows.values()), dtype, conv, dict(graph.given))

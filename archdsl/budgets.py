"""A spec's `assert` lines (`assert params <= 5M`), checked against the analysed totals.

Kept apart from analysis, which only counts: this evaluates spec expressions and words the
errors (numbers written as people read them)."""

from __future__ import annotations

from typing import Any

from .analysis import Stats, analyse
from .errors import ArchError, ValueError_
from .expr import evaluate
from .ir import Graph
from .numfmt import grouped, human


def budget_values(stats: Stats) -> dict[str, Any]:
    """The names an `assert` line may use, besides the architecture's parameters."""
    return {**stats.totals, "input": list(stats.input),
            "output": list(stats.output) if stats.output is not None else None}


def check_budgets(graph: Graph, stats: Stats | None = None) -> list[ArchError]:
    """Evaluate the spec's `assert` lines against the analysed totals."""
    errors: list[ArchError] = []
    measured = budget_values(stats or analyse(graph))
    for expr, env in graph.budgets:
        values = {**env, **measured}
        try:
            ok = evaluate(expr, values)
        except ArchError as exc:
            errors.append(exc)
            continue
        if not ok:
            names = sorted({n for n in _names(expr) if n in measured})
            actual = ", ".join(f"{n} = {_show(measured[n])}" for n in names)
            errors.append(ValueError_(f"budget not met: {actual}" if actual else
                                      "budget not met", expr.span,
                                      "the condition after `assert` is false"))
    return errors


def _names(expr) -> list[str]:
    out: list[str] = []
    if getattr(expr, "op", None) == "var":
        out.append(expr.args[0])
    for a in getattr(expr, "args", ()):
        if hasattr(a, "op"):
            out += _names(a)
        elif isinstance(a, tuple):
            out += [n for x in a if hasattr(x, "op") for n in _names(x)]
    return out


def _show(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 1000:
        return f"{grouped(v)} ({human(v)})"
    return str(v)

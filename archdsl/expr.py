"""Evaluation of `{...}` expressions: archdsl's own small interpreter, never Python's eval."""

from __future__ import annotations

import math
import operator
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

from .errors import NameError_, ValueError_, did_you_mean
from .syntax import Expr

Value = Any  # int | float | bool | str | list


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of `divisor`, never below 90% of `v`.

    The rounding rule of MobileNetV2/EfficientNet (TF-slim `_make_divisible`, as torchvision uses).
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _round_half_even(x: float, ndigits: int | None = None) -> float | int:
    return round(x, ndigits) if ndigits is not None else round(x)


# The longest list an expression may make (range, comprehensions, zip): specs need tens of
# entries (a list per stage or per block); a million would only cost memory and time.
MAX_LIST = 100_000


def _range(*args: int) -> list[int]:
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise TypeError("range takes integers")
    r = range(*args)
    if len(r) > MAX_LIST:
        raise ValueError(f"a list of {len(r):,} items is longer than the limit of {MAX_LIST:,}")
    return list(r)


def _log(x: float, base: float | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


def _lists(*seqs) -> list:
    if not all(isinstance(s, list) for s in seqs):
        raise TypeError("takes lists")
    return list(seqs)


FUNCTIONS: dict[str, Callable[..., Value]] = {
    "int": lambda x: int(x),
    "float": lambda x: float(x),
    "round": _round_half_even,
    "ceil": lambda x: math.ceil(x),
    "floor": lambda x: math.floor(x),
    "min": min,
    "max": max,
    "abs": abs,
    "sqrt": math.sqrt,
    "log": _log,
    "log2": math.log2,
    "log10": math.log10,
    "exp": math.exp,
    "len": len,
    "sum": lambda xs: sum(_lists(xs)[0]),
    "range": _range,
    "enumerate": lambda xs: [[i, x] for i, x in enumerate(_lists(xs)[0])],
    "zip": lambda *xs: [list(t) for t in zip(*_lists(*xs), strict=False)],
    "make_divisible": make_divisible,
    "error": None,  # handled in _call
}

_BINOPS: dict[str, Callable[[Value, Value], Value]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


def evaluate(e: Expr, env: Mapping[str, Value]) -> Value:
    """Evaluate an expression; names resolve in `env`. Raises ArchError with the span."""
    return _EVAL[e.op](e, env)


def evaluate_value(e: Expr, env: Mapping[str, Value]) -> Value:
    """A parameter default, argument or `let` value: a lone bare word that names nothing is
    taken as a word (`norm = none`), as in attributes."""
    return _sym(e, env) if e.op == "var" else evaluate(e, env)


def _num(e: Expr, env) -> Value:
    return e.args[0]


def _var(e: Expr, env) -> Value:
    name = e.args[0]
    if name in env:
        return env[name]
    if name in ("true", "false"):
        return name == "true"
    raise NameError_(f"unknown name `{name}`", e.span,
                     did_you_mean(name, list(env) + ["true", "false"]))


def _sym(e: Expr, env) -> Value:
    """A bare word in `attr=word`: a parameter's value if one is named so, else the word itself."""
    name = e.args[0]
    if name in env:
        return env[name]
    if name in ("true", "false"):
        return name == "true"
    return name


def _call(e: Expr, env) -> Value:
    fname, args = e.args
    if fname == "error":  # error("message"): a spec's own check, reported at the call
        values = [evaluate(a, env) for a in args]
        raise ValueError_(" ".join(str(v) for v in values) or "error() called", e.span)
    fn = FUNCTIONS.get(fname)
    if fn is None:
        raise NameError_(f"unknown function `{fname}`", e.span, did_you_mean(fname, FUNCTIONS))
    values = [evaluate(a, env) for a in args]
    try:
        result = fn(*values)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise ValueError_(f"`{fname}` cannot take {_show(values)}: {exc}", e.span) from None
    if isinstance(result, float) and not math.isfinite(result):
        raise ValueError_(f"`{fname}({_show(values)})` is not a finite number", e.span)
    return result


def _binop(e: Expr, env) -> Value:
    op, left, right = e.args
    a, b = evaluate(left, env), evaluate(right, env)
    if op not in ("==", "!=") and not (_is_num(a) and _is_num(b)):
        raise ValueError_(f"cannot compute {_show([a])} {op} {_show([b])}", e.span)
    if op == "**" and abs(b) > 64:
        raise ValueError_(f"exponent {b!r} is too large", e.span)
    try:
        result = _BINOPS[op](a, b)
    except ZeroDivisionError:
        raise ValueError_("division by zero", e.span) from None
    except (TypeError, OverflowError):
        raise ValueError_(f"cannot compute {_show([a])} {op} {_show([b])}", e.span) from None
    if isinstance(result, float) and not math.isfinite(result):
        raise ValueError_(f"{_show([a])} {op} {_show([b])} is not a finite number", e.span)
    if isinstance(result, complex):
        raise ValueError_(f"{_show([a])} {op} {_show([b])} is not a real number", e.span)
    return result


def _is_num(v: Value) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _neg(e: Expr, env) -> Value:
    v = evaluate(e.args[0], env)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError_(f"cannot negate {_show([v])}", e.span)
    return -v


def _index(e: Expr, env) -> Value:
    seq, idx = evaluate(e.args[0], env), evaluate(e.args[1], env)
    if not isinstance(seq, (list, str)):
        raise ValueError_(f"cannot index {_show([seq])}", e.span)
    if isinstance(idx, bool) or not isinstance(idx, int) or not -len(seq) <= idx < len(seq):
        raise ValueError_(f"index {_show([idx])} out of range for a list of {len(seq)}", e.span)
    return seq[idx]


def _listcomp(e: Expr, env) -> Value:
    """[element for a, b in iterable if condition]: the names are bound for each item (a list
    of as many values when there are several names, as zip and enumerate make)."""
    element, names, iterable, condition = e.args
    items = evaluate(iterable, env)
    if not isinstance(items, list):
        raise ValueError_(f"cannot iterate over {_show([items])}", iterable.span,
                          "iterate over a list, e.g. range(n)")
    out = []
    for item in items:
        if len(names) == 1:
            bound = {names[0]: item}
        elif isinstance(item, list) and len(item) == len(names):
            bound = dict(zip(names, item, strict=True))
        else:
            raise ValueError_(f"cannot unpack {_show([item])} into {len(names)} names",
                              e.span)
        inner = ChainMap(bound, env)
        if condition is None or evaluate(condition, inner):
            out.append(evaluate(element, inner))
    return out


def _ifelse(e: Expr, env) -> Value:
    cond, a, b = e.args
    return evaluate(a, env) if evaluate(cond, env) else evaluate(b, env)


_EVAL: dict[str, Callable[[Expr, Mapping[str, Value]], Value]] = {
    "num": _num,
    "str": _num,
    "var": _var,
    "sym": _sym,
    "call": _call,
    "binop": _binop,
    "neg": _neg,
    "not": lambda e, env: not evaluate(e.args[0], env),
    "and": lambda e, env: evaluate(e.args[0], env) and evaluate(e.args[1], env),
    "or": lambda e, env: evaluate(e.args[0], env) or evaluate(e.args[1], env),
    "list": lambda e, env: [evaluate(a, env) for a in e.args],
    "index": _index,
    "ifelse": _ifelse,
    "listcomp": _listcomp,
}


def _show(values: list) -> str:
    return ", ".join(repr(v) for v in values)


def as_int(value: Value, what: str, span, minimum: int | None = 1) -> int:
    """A value that must be an integer (channels, kernel, repeat count...), with a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError_(f"{what} must be an integer, got {value!r}", span)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError_(f"{what} must be an integer, got {value:g}", span,
                              "round it explicitly: int(...), round(...) or make_divisible(...)")
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError_(f"{what} must be at least {minimum}, got {value}", span)
    return value

"""Evaluation of `{...}` expressions: archdsl's own small interpreter, never Python's eval."""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from .errors import ArchError, NameError_, ValueError_, did_you_mean
from .limits import MAX_INT_BITS, MAX_STEPS, exceeded
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


# ---------------------------------------------------------------- the work budget

class WorkLimit(Exception):
    """The work budget of an elaboration is spent: `error` says where. Not an ArchError, so
    that nothing on the way up collects it and goes on working."""

    def __init__(self, error: ArchError) -> None:
        super().__init__(error.message)
        self.error = error


class Meter:
    """Counts the work of one elaboration: statements, repetitions, expression operations,
    values copied. Everything that costs time in proportion to the input, and that a small
    spec can multiply, is charged here."""

    def __init__(self, limit: int | None = None) -> None:
        self.used, self.limit = 0, MAX_STEPS if limit is None else limit
        self.where = None  # the span of the statement being worked on

    def charge(self, n: int, span=None) -> None:
        self.used += n
        if span is not None:
            self.where = span
        if self.used > self.limit:
            raise WorkLimit(ValueError_(
                f"elaborating this architecture takes more than {self.limit:,} steps",
                self.where, exceeded("elaboration steps (statements, repetitions and "
                                     "expression operations)", self.limit)))


_METER: ContextVar[Meter | None] = ContextVar("archdsl_meter", default=None)


@contextlib.contextmanager
def metered(limit: int | None = None) -> Iterator[Meter]:
    """Charge the evaluations and elaboration steps inside to one new Meter."""
    meter = Meter(limit)
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def charge(n: int, span=None) -> None:
    """Charge `n` units of work to the current Meter (none outside `metered`)."""
    meter = _METER.get()
    if meter is not None:
        meter.charge(n, span)


def charge_copy(values: Mapping) -> None:
    """Charge copying a scope's names: cheap per name (a step costs about as much as copying
    64), but a spec can make many names and copy them at every repetition."""
    charge(1 + len(values) // 64)


def evaluate(e: Expr, env: Mapping[str, Value]) -> Value:
    """Evaluate an expression; names resolve in `env`. Raises ArchError with the span."""
    meter = _METER.get()
    if meter is not None:
        meter.charge(1)
    return _EVAL[e.op](e, env)


def _sized(value: Value, e: Expr) -> Value:
    """An operation's result, if it is within MAX_INT_BITS (every operation is checked, so
    that no integer ever grows large enough to take long to compute or print)."""
    if isinstance(value, int) and not isinstance(value, bool) and \
            value.bit_length() > MAX_INT_BITS:
        raise ValueError_(f"this integer has {value.bit_length()} bits", e.span,
                          exceeded("the size of integers in expressions", MAX_INT_BITS,
                                   " bits"))
    return value


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
        text = " ".join(v if isinstance(v, str) else short_repr(v) for v in values)
        raise ValueError_((text if len(text) <= 400 else text[:400] + "…") or
                          "error() called", e.span)
    fn = FUNCTIONS.get(fname)
    if fn is None:
        raise NameError_(f"unknown function `{fname}`", e.span, did_you_mean(fname, FUNCTIONS))
    values = [evaluate(a, env) for a in args]
    charge(sum(len(v) for v in values if isinstance(v, (list, str))))
    try:
        result = _sized(fn(*values), e)
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
    if op == "**":
        _check_power(a, b, e)
    if isinstance(a, (list, str)) or isinstance(b, (list, str)):
        charge(len(a) if isinstance(a, (list, str)) else 1)  # comparing them is not O(1)
    try:
        result = _sized(_BINOPS[op](a, b), e)
    except ZeroDivisionError:
        raise ValueError_("division by zero", e.span) from None
    except (TypeError, OverflowError):
        raise ValueError_(f"cannot compute {_show([a])} {op} {_show([b])}", e.span) from None
    if isinstance(result, float) and not math.isfinite(result):
        raise ValueError_(f"{_show([a])} {op} {_show([b])} is not a finite number", e.span)
    if isinstance(result, complex):
        raise ValueError_(f"{_show([a])} {op} {_show([b])} is not a real number", e.span)
    return result


def _check_power(a: Value, b: Value, e: Expr) -> None:
    """Refuse a power whose result would exceed MAX_INT_BITS before computing it: Python
    would take hours over `((9**64)**64)**64`."""
    if abs(b) > 64:
        raise ValueError_(f"exponent {b!r} is too large", e.span,
                          "archdsl's exponents are at most 64")
    if isinstance(a, int) and isinstance(b, int) and b > 0 and \
            (abs(a).bit_length() - 1) * b > MAX_INT_BITS:
        raise ValueError_(f"{_show([a])} ** {b} has more than {MAX_INT_BITS} bits", e.span,
                          exceeded("the size of integers in expressions", MAX_INT_BITS,
                                   " bits"))


def _is_num(v: Value) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _neg(e: Expr, env) -> Value:
    v = evaluate(e.args[0], env)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError_(f"cannot negate {_show([v])}", e.span)
    return _sized(-v, e)


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


def _show(values: list, width: int = 60) -> str:
    """Values for a message, each cut to `width` characters (a value may be a long list)."""
    return ", ".join(short_repr(v, width) for v in values)


def short_repr(value: Value, width: int = 60) -> str:
    """repr(value), cut to `width` characters; never the repr of a huge integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, (list, str)) and len(value) > width:
        value = value[:width]  # repr only what is shown
        text = repr(value)
        return text[:width] + "…"
    text = repr(value)
    return text if len(text) <= width else text[:width] + "…"


def as_int(value: Value, what: str, span, minimum: int | None = 1) -> int:
    """A value that must be an integer (channels, kernel, repeat count...), with a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError_(f"{what} must be an integer, got {short_repr(value)}", span)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError_(f"{what} must be an integer, got {value:g}", span,
                              "round it explicitly: int(...), round(...) or make_divisible(...)")
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError_(f"{what} must be at least {minimum}, got {value}", span)
    return value


def user_value(value: Any, what: str) -> Value:
    """A value given from outside a spec (`--set`, keyword arguments of `archdsl.load`) as the
    spec's own values are: numpy scalars become Python numbers, integers within MAX_INT_BITS,
    floats finite, strings writable in spec text (no quote, no control character: `format`
    must not print a second architecture from `--set 's=x\\narch evil...'`), lists of those."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, numbers.Integral):
        value = int(value)
        if value.bit_length() > MAX_INT_BITS:
            raise ValueError_(f"{what} has {value.bit_length()} bits", None,
                              exceeded("the size of integers", MAX_INT_BITS, " bits"))
        return value
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise ValueError_(f"{what} must be a finite number, got {value}", None)
        return float(value)
    if isinstance(value, str):
        if '"' in value or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in value):
            raise ValueError_(f"{what} cannot hold a quote or a control character: "
                              f"{short_repr(value)}", None)
        return value
    if isinstance(value, (list, tuple)):
        return [user_value(v, what) for v in value]
    raise ValueError_(f"{what} must be a number, a word or a list, got a "
                      f"{type(value).__name__}", None)

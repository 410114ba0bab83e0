"""Attribute values: what a spec wrote (`k=1x7`, `pad=same`, `bias=auto`) checked and turned
into the value an op's declaration expects, one converter per attribute type (AttrSpec.type)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import Span, ValueError_, did_you_mean
from .expr import as_int, short_repr
from .ops import AttrSpec, axes


def _int(spec: AttrSpec, value: Any, what: str, span: Span) -> Any:
    if value is None and spec.default is None:
        return None
    minimum = None if spec.minimum is None else int(spec.minimum)
    return as_int(value, what, span, minimum=minimum)


def _per_axis(spec: AttrSpec, value: Any, what: str, span: Span) -> Any:
    """An int for both axes (`3`), or one per axis: height then width (`1x7`, `0,3`, [1, 7]),
    kept as an int when they agree."""
    if not isinstance(value, (list, tuple)):
        return _int(spec, value, what, span)
    if len(value) != 2:
        raise ValueError_(f"{what} must be one number or [height, width], got {len(value)} "
                          "values", span, "e.g. 3, 1x7, [1, 7] or (padding) 0,3")
    minimum = None if spec.minimum is None else int(spec.minimum)
    h, w = (as_int(v, what, span, minimum=minimum) for v in value)
    return axes((h, w))


def _float(spec: AttrSpec, value: Any, what: str, span: Span) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError_(f"{what} must be a number, got {short_repr(value)}", span)
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError_(f"{what} must be at least {spec.minimum}, got {value}", span)
    if spec.maximum is not None and value > spec.maximum:
        raise ValueError_(f"{what} must be at most {spec.maximum}, got {value}", span)
    return float(value)


def _floats(spec: AttrSpec, value: Any, what: str, span: Span) -> tuple[float, ...]:
    """A list of numbers (`scale=[0.458, 0.448, 0.450]`); one number stands for a list of one."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError_(f"{what} needs at least one number", span)
    return tuple(_float(spec, v, what, span) for v in values)


def _bool(spec: AttrSpec, value: Any, what: str, span: Span) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise ValueError_(f"{what} must be true or false, got {short_repr(value)}", span)


def _bias(spec: AttrSpec, value: Any, what: str, span: Span) -> bool | str:
    return "auto" if value == "auto" else _bool(spec, value, what, span)


def _pad(spec: AttrSpec, value: Any, what: str, span: Span) -> Any:
    if value in ("same", "valid"):
        return value
    if isinstance(value, str):
        raise ValueError_(f"{what} must be same, valid or a number, got {short_repr(value)}", span,
                          did_you_mean(value, ["same", "valid"]) or "or one per axis: pad=0,3")
    return _per_axis(AttrSpec("int", 0, 0), value, what, span)


def _choice(spec: AttrSpec, value: Any, what: str, span: Span) -> str:
    if value not in spec.choices:
        raise ValueError_(f"{what} must be one of {', '.join(map(str, spec.choices))}, "
                          f"got {short_repr(value)}", span, did_you_mean(str(value), spec.choices))
    return value


CONVERTERS: dict[str, Callable[[AttrSpec, Any, str, Span], Any]] = {
    "int": _int, "pair": _per_axis, "float": _float, "floats": _floats, "bool": _bool,
    "bias": _bias, "pad": _pad, "choice": _choice,
}


def convert(spec: AttrSpec, value: Any, key: str, span: Span, owner: str) -> Any:
    """The value of attribute `key` of layer `owner` as its declaration wants it."""
    what = f"`{key}` of `{owner}`"
    converter = CONVERTERS.get(spec.type)
    if converter is None:
        raise ValueError_(f"{what} cannot be set", span)
    return converter(spec, value, what, span)

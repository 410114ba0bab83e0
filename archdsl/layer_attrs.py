"""A layer's attributes: gathered from its token (`conv1x7-64/2`), its call arguments, its
`name=value` attributes and the `defaults` in force, checked, and shared out between the layer
and the normalization and activation attached to it (`conv3-64 norm=bn eps=0.001 act=relu`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import syntax as S
from .attrs import convert
from .errors import NameError_, Span, ValueError_, did_you_mean
from .expr import evaluate
from .ops import ATTR_SPELLINGS, OPS, REQUIRED, OpDef, attachable, cached_on_ops, spellings
from .plugins import PluginError, lookup_or_load

ATTACH_KEYS = ("norm", "act")


@cached_on_ops
def known_attrs() -> list[str]:
    """Every attribute some op takes (what a `defaults` line may set)."""
    return sorted({a for op in OPS.values() for a in op.attrs} | set(ATTACH_KEYS))


@dataclass
class Default:
    """One attribute of a `defaults` line (or of a block call): its value, the values it is
    evaluated with, and the attribute as written (for the warning when nothing uses it)."""

    expr: S.Expr
    values: dict[str, Any]
    attr: S.Attr


@dataclass
class LayerAttrs:
    values: dict[str, Any]  # the layer's own attributes
    attached: list[tuple[str, dict[str, Any]]]  # (norm or act op, its attributes), in order
    used: list[Default] = field(default_factory=list)  # the defaults it took


def gather(layer: S.Layer, op: OpDef, kernel, defaults: dict[str, Default],
           values: dict[str, Any]) -> LayerAttrs:
    """What `layer` (an `op`, `kernel` from its name's suffix) sets, checked and converted."""
    allowed, take, routable = _names(op.name)
    raw = _written(layer, op, kernel, values, allowed)
    used: list[Default] = []
    _from_defaults(raw, take, defaults, used)
    attach = {key: _attach_value(key, _value(raw[key]), raw[key][1])
              for key in ATTACH_KEYS if key in raw}
    own = _convert_all(op, {k: v for k, v in raw.items() if k in op.attrs}, layer.name,
                       layer.span)
    attached = (_attached(op, attach, raw, routable, defaults, used, layer)
                if attach or not routable.isdisjoint(raw) else [])
    if own.get("bias") == "auto" and attach.get("norm"):
        own["bias"] = False  # torchvision's Conv2dNormActivation: a bias only without a norm
    return LayerAttrs(own, attached, used)


def _written(layer: S.Layer, op: OpDef, kernel, values: dict[str, Any],
             allowed: frozenset[str]) -> dict[str, tuple[Any, Span, dict]]:
    """The attributes the layer writes: its token's parts, its arguments, its `name=value`s;
    attribute → (expression or value, span, the values it is evaluated with)."""
    raw: dict[str, tuple[Any, Span, dict]] = {}

    def put(key: str, value, span: Span, where: dict) -> None:
        if key in raw:
            raise ValueError_(f"`{key}` is given twice", span)
        raw[key] = (value, span, where)

    if kernel is not None:
        put(op.kernel, kernel, layer.name_span, {})  # type: ignore[arg-type]
    for part, slot, what in ((layer.channels, op.dash, "-N count"),
                             (layer.stride, op.slash, "/S stride")):
        if part is not None:
            if slot is None:
                raise ValueError_(f"`{layer.name}` takes no {what}", part.span)
            put(slot, part, part.span, values)
    for i, arg in enumerate(layer.args or []):
        if arg.name is None:
            if i >= len(op.positional):
                got = sum(a.name is None for a in layer.args or [])
                raise ValueError_(f"`{layer.name}` takes "
                                  f"{count(len(op.positional), 'positional argument')}"
                                  f", got {got}", arg.span,
                                  attr_hint(op) if op.positional else "use name=value")
            put(op.positional[i], arg.value, arg.span, values)
        else:
            check_name(arg.name, allowed, op, arg.span)
            put(arg.name, arg.value, arg.span, values)
    for attr in layer.attrs:
        check_name(attr.name, allowed, op, attr.span)
        put(attr.name, attr.value, attr.span, values)
    return raw


@cached_on_ops
def _names(name: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """For op `name`: the attributes a layer may write, those it takes from `defaults`, and
    those it passes on to an attached norm or activation."""
    op = OPS[name]
    routable = _routable(op)
    attach = frozenset(ATTACH_KEYS) if op.attaches else frozenset()
    take = frozenset(op.attrs) | frozenset(op.default_attach if op.attaches else ())
    return frozenset(op.attrs) | routable | attach, take, routable


def _value(entry: tuple[Any, Span, dict]) -> Any:
    expr, _, where = entry
    return evaluate(expr, where) if isinstance(expr, S.Expr) else expr


def _from_defaults(raw: dict, keys: set[str], defaults: dict[str, Default],
                   used: list[Default]) -> None:
    for key, default in defaults.items():
        if key in keys and key not in raw:
            raw[key] = (default.expr, default.expr.span, default.values)
            used.append(default)


def _convert_all(op: OpDef, raw: dict, owner: str, span: Span | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, spec in op.attrs.items():
        if key in raw:
            values[key] = convert(spec, _value(raw[key]), key, raw[key][1], owner)
        elif spec.default is REQUIRED:
            raise ValueError_(f"`{owner}` needs {_describe(key, op)}", span, attr_hint(op))
        else:
            values[key] = spec.default
    return values


def _routable(op: OpDef) -> frozenset[str]:
    """Attributes a layer passes on to its attached norm or activation (`eps`, `momentum`,
    `negative_slope`...): those of the ops it can attach that it does not take itself."""
    return routable_for(op.name) if op.attaches else frozenset()


@cached_on_ops
def routable_for(name: str) -> frozenset[str]:
    return frozenset(a for kind in attachable() for a in OPS[kind].attrs) - set(OPS[name].attrs)


def _attached(op: OpDef, attach: dict[str, str | None], raw: dict, routable: set[str],
              defaults: dict[str, Default], used: list[Default],
              layer: S.Layer) -> list[tuple[str, dict[str, Any]]]:
    """The attached ops' attributes: those written on the layer for them, then defaults."""
    kinds = [k for k in (attach.get(key) for key in ATTACH_KEYS) if k is not None]
    for key in sorted(routable & set(raw)):
        takers = [k for k in kinds if key in OPS[k].attrs]
        span = raw[key][1]
        if not takers:
            hint = ("it is an attribute of " + " or ".join(
                f"`{k}`" for k in attachable() if key in OPS[k].attrs))
            raise ValueError_(f"`{key}` is for the layer's normalization or activation, and "
                              f"`{layer.name}` has none that takes it", span, hint)
        if len(takers) > 1:
            raise ValueError_(f"`{key}` is an attribute of both `{takers[0]}` and "
                              f"`{takers[1]}`", span, "write one of them as its own layer")
    out = []
    for kind in kinds:
        mine = {k: v for k, v in raw.items() if k in OPS[kind].attrs and k in routable}
        _from_defaults(mine, set(OPS[kind].attrs), defaults, used)
        out.append((kind, _convert_all(OPS[kind], mine, kind, layer.span)))
    return out


def _attach_value(key: str, value: Any, span: Span) -> str | None:
    choices = attachable(key)
    if value in (None, False, "none"):
        return None
    try:
        op = lookup_or_load(str(value))
    except PluginError as exc:
        raise ValueError_(str(exc), span) from None
    choices = attachable(key)
    if op is None or op.name not in choices:
        words = [w for w in spellings(choices) if w.isidentifier()]  # attribute values
        raise ValueError_(f"`{key}={value}` is not one of: none, {', '.join(words)}", span,
                          did_you_mean(str(value), words))
    return op.name


def count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def check_name(name: str, allowed: set[str], op: OpDef, span: Span) -> None:
    if name not in allowed:
        hint = ATTR_SPELLINGS.get(name) if allowed & {"k", "pad", "stride", "out"} else None
        raise NameError_(f"`{op.name}` has no attribute `{name}`", span,
                         hint or did_you_mean(name, allowed) or attr_hint(op))


def _describe(key: str, op: OpDef) -> str:
    if key == op.dash:
        return f"a -N count ({key})"
    if key == op.kernel:
        return f"a kernel size ({key})"
    return f"`{key}`"


def attr_hint(op: OpDef) -> str:
    parts = [op.name + ("K" if op.kernel else "") + ("-N" if op.dash else "")
             + ("/S" if op.slash else "")]
    if op.positional:
        parts[0] += "(" + ", ".join(op.positional) + ")"
    names = [k for k in op.attrs if k not in (op.kernel, op.dash, op.slash)]
    if op.attaches:
        names += list(ATTACH_KEYS)
    if names:
        parts.append("attributes: " + ", ".join(names))
    return f"{op.name} is written {parts[0]}" + (f"; {parts[1]}" if len(parts) > 1 else "")

"""The statements of a recovered spec, with every number in a `Slot`.

A statement's *skeleton* is everything but its numbers (op tokens, labels, attribute names,
nesting); its *slots* are the numbers in order. Two block instances with the same skeleton
become one block whose parameters are the slots that differ (blocks.py). Rendering takes a
binding — a literal or an expression per slot — and writes the paper-style layer text:
`conv3-64/2`, `conv-{c} k={k}`, `maxpool3/2 pad=1`, attributes at their defaults left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..formatter import spec_value
from ..ops import OPS, REQUIRED, Shape, same_pad

NOVALUE = object()


@dataclass(eq=False)
class Slot:
    key: str  # the attribute (or block parameter) it sets
    value: Any
    omit: Any = NOVALUE  # a value that need not be written (the attribute's default)
    expr: str | None = None  # in a block: the expression over its parameters it is written as


@dataclass(frozen=True)
class Defaults:
    """The architecture's `defaults` line: attached norm/act and bias."""

    norm: str | None = None
    act: str | None = None
    bias: bool | None = None
    attrs: tuple[tuple[str, Any], ...] = ()  # e.g. (("momentum", 0.0003),): for every op

    def line(self) -> str | None:
        parts = [f"{k}={spec_value(v)}" for k, v in (("norm", self.norm), ("act", self.act),
                                                      ("bias", self.bias)) if v is not None]
        parts += [f"{k}={spec_value(v)}" for k, v in self.attrs]
        return "defaults " + " ".join(parts) if parts else None


@dataclass
class Stmt:
    label: str | None = None
    repeat: int = 1
    template: tuple[str, int] | None = None  # `denselayer{i + 1}:` — prefix and start


@dataclass
class Layer(Stmt):
    op: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    in_shape: Shape | None = None
    attach: list[str] = field(default_factory=list)  # attached norm/act ops, in order
    attach_attrs: dict[str, Any] = field(default_factory=dict)  # theirs, written on the layer
    ids: list[int] = field(default_factory=list)  # the flat nodes it stands for
    _form: Any = None


@dataclass
class Group(Stmt):
    body: list = field(default_factory=list)
    cls: str | None = None  # the module class of the scope, if any
    auto: bool = False  # a block call here could leave the label out (it is the next index)


@dataclass
class Join(Stmt):
    kind: str = "add"  # residual | gate | dense | add | mul | concat
    branches: list[list] = field(default_factory=list)
    shortcut: tuple[str, list] | None = None  # residual's projection: scope label, body


@dataclass
class Call(Stmt):
    block: str = ""
    args: list[Slot] = field(default_factory=list)
    scope: str = ""  # the label of the scope it makes (written or not)


@dataclass
class Form:
    """A layer as paper notation sees it."""

    token: str
    kernel: Slot | None
    dash: Slot | None
    slash: Slot | None
    args: list[Slot]
    attrs: list[Slot]
    extra: list[str]

    def slots(self) -> list[Slot]:
        return [s for s in (self.kernel, self.dash, self.slash) if s] + self.args + self.attrs

    def skeleton(self) -> tuple:
        return (self.token, self.kernel is not None, self.dash is not None,
                self.slash is not None, tuple(s.key for s in self.args),
                tuple(s.key for s in self.attrs), tuple(self.extra))


def _default(op: str, key: str) -> Any:
    spec = OPS[op].attrs.get(key)
    if spec is None or spec.default is REQUIRED or spec.default is None:
        return NOVALUE
    return 0 if spec.default == "valid" else spec.default


def _conv(layer: Layer, a: dict[str, Any]) -> str:
    cin = layer.in_shape[0] if layer.in_shape else None
    token = "conv"
    if a["groups"] == cin and cin > 1:
        token = "dwconv"
        del a["groups"]
        if a["out"] == cin:
            del a["out"]
    if a["pad"] == same_pad(a):
        del a["pad"]
    return token


def _pool(layer: Layer, a: dict[str, Any]) -> str:
    if a["stride"] == a["k"]:
        del a["stride"]
    return layer.op


_SPECIAL = {"conv": _conv, "maxpool": _pool, "avgpool": _pool}
_TOKENS = {"fc": "FC"}


def form(layer: Layer, defaults: Defaults) -> Form:
    if layer._form is not None and layer._form[0] == defaults:
        return layer._form[1]
    op = OPS[layer.op]
    a = dict(layer.attrs)
    token = _SPECIAL[layer.op](layer, a) if layer.op in _SPECIAL else layer.op
    slots: dict[str, Slot | None] = {}
    for role in ("kernel", "dash", "slash"):
        key = getattr(op, role)
        slots[role] = Slot(key, a.pop(key), _default(layer.op, key)) \
            if key and key in a else None
    if slots["kernel"] is not None and OPS[layer.op].category != "pool":
        slots["kernel"].omit = NOVALUE  # conv3: the kernel is always written
    if slots["slash"] is not None and layer.op == "conv":
        slots["slash"].omit = 1
    args = []
    for k in op.positional:  # up to a word (`gelu approximate=tanh`: a name is no value)
        if k not in a or op.attrs[k].type == "choice":
            break
        args.append(Slot(k, a.pop(k), _default(layer.op, k)))
    given = dict(defaults.attrs)
    owner = {k: layer.op for k in a} | {k: attached_owner(layer, k) for k in layer.attach_attrs}
    attrs = [Slot(k, v, _bias_default(layer, defaults) if k == "bias" else
                  given.get(k, _default(owner[k], k)))
             for k, v in sorted((a | layer.attach_attrs).items())]
    extra = _attach_text(layer, defaults)
    out = Form(_TOKENS.get(token, token), slots["kernel"], slots["dash"], slots["slash"], args,
               attrs, extra)
    layer._form = (defaults, out)
    return out


def attached_owner(layer: Layer, key: str) -> str:
    """The attached op an attribute written on the layer is for."""
    return next(k for k in layer.attach if key in OPS[k].attrs)


def _norm_of(layer: Layer) -> str | None:
    return next((k for k in layer.attach if OPS[k].category == "norm"), None)


def _act_of(layer: Layer) -> str | None:
    return next((k for k in layer.attach if OPS[k].category == "act"), None)


def _bias_default(layer: Layer, defaults: Defaults) -> bool:
    if defaults.bias is not None:
        return defaults.bias
    return _norm_of(layer) is None  # `bias=auto`: a bias unless a norm follows


def _attach_text(layer: Layer, defaults: Defaults) -> list[str]:
    """`norm=`/`act=` where the layer differs from what the defaults line gives it."""
    op = OPS[layer.op]
    if not op.attaches:
        return []
    out = []
    for key, have, default in (("norm", _norm_of(layer), defaults.norm),
                               ("act", _act_of(layer), defaults.act)):
        given = default if key in op.default_attach else None
        if have != given:
            out.append(f"{key}={have or 'none'}")
    return out


def nested(stmt: Stmt) -> list[list[Stmt]]:
    """The statement lists inside a statement: a group's body; a join's branches, then its
    shortcut's body."""
    if isinstance(stmt, Group):
        return [stmt.body]
    if isinstance(stmt, Join):
        return list(stmt.branches) + ([stmt.shortcut[1]] if stmt.shortcut else [])
    return []


def bodies(body: list[Stmt]) -> list[list[Stmt]]:
    """Every statement list within `body`, innermost first, `body` last."""
    out = [inner for stmt in body for b in nested(stmt) for inner in bodies(b)]
    return out + [body]


# ---------------------------------------------------------------- skeletons and slots

def skeleton(stmt: Stmt, defaults: Defaults) -> tuple:
    head = (type(stmt).__name__, stmt.label, stmt.repeat, stmt.template)
    if isinstance(stmt, Layer):
        return head + (form(stmt, defaults).skeleton(),)
    if isinstance(stmt, Group):
        return head + (body_skeleton(stmt.body, defaults),)
    if isinstance(stmt, Call):
        return head + (stmt.block, tuple(s.key for s in stmt.args))
    assert isinstance(stmt, Join)
    short = None if stmt.shortcut is None else (stmt.shortcut[0],
                                                body_skeleton(stmt.shortcut[1], defaults))
    return head + (stmt.kind, tuple(body_skeleton(b, defaults) for b in stmt.branches), short)


def body_skeleton(body: list, defaults: Defaults) -> tuple:
    return tuple(skeleton(s, defaults) for s in body)


def slots(stmt: Stmt, defaults: Defaults) -> list[Slot]:
    if isinstance(stmt, Layer):
        return form(stmt, defaults).slots()
    if isinstance(stmt, Group):
        return body_slots(stmt.body, defaults)
    if isinstance(stmt, Call):
        return list(stmt.args)
    assert isinstance(stmt, Join)
    out = [s for b in stmt.branches for s in body_slots(b, defaults)]
    if stmt.shortcut is not None:
        out += body_slots(stmt.shortcut[1], defaults)
    return out


def body_slots(body: list, defaults: Defaults) -> list[Slot]:
    return [s for stmt in body for s in slots(stmt, defaults)]

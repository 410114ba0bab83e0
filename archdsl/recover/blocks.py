"""Blocks and their parameters: the scopes of one module class, written once.

All scopes made by one module class (torchvision's `Bottleneck`, `InvertedResidual`...) with
the same skeleton become one `block`; where their numbers differ, the block takes parameters.
A number that is always the same stays a literal; one that follows an earlier parameter
(`4 * c`, `c // 2`) becomes that expression; any other becomes a new parameter, named after
the attribute it sets (`c` for channels, `stride`, `k`...), with the most common value as its
default when most instances share it. A residual's projection shortcut, present in some
instances only, is kept in the block: archdsl uses it exactly where the shape changes.
Containers (Sequential, ModuleList) stay labelled groups: they carry no meaning of their own.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..formatter import spec_value
from ..ops import OPS
from .forms import (
    NOVALUE,
    Call,
    Defaults,
    Group,
    Join,
    Layer,
    Slot,
    Stmt,
    body_slots,
    nested,
    skeleton,
    slots,
)
from .render import Binding

CONTAINERS = {"Sequential", "ModuleList", "ModuleDict"}

# names an expression gives meaning to, which a parameter must not take
_TAKEN = {"i", "int", "round", "ceil", "floor", "min", "max", "abs", "sqrt", "len", "error",
          "make_divisible", "true", "false", "and", "or", "not", "if", "else", "classes"}
_PARAM_NAMES = {"out": "c", "k": "k", "stride": "stride", "groups": "groups", "p": "p"}


@dataclass
class Param:
    name: str
    values: list[Any]
    default: Any = NOVALUE


@dataclass
class Block:
    name: str
    params: list[Param]
    body: list[Stmt]
    cls: str
    instances: int = 0


@dataclass
class _Place:
    group: Group
    parent: list
    depth: int


def _places(body: list, depth: int = 0, out: list | None = None) -> list[_Place]:
    out = [] if out is None else out
    for stmt in body:
        if isinstance(stmt, Group):
            out.append(_Place(stmt, body, depth))
        for inner in nested(stmt):
            _places(inner, depth + 1, out)
    return out


def extract(body: list[Stmt], defaults: Defaults, bind: Binding) -> list[Block]:
    """Replace the scopes of each module class by block calls (deepest classes first)."""
    blocks: list[Block] = []
    names: set[str] = set()
    depth: dict[str, int] = {}
    for place in _places(body):
        cls = place.group.cls
        if cls and cls not in CONTAINERS:
            depth[cls] = max(depth.get(cls, 0), place.depth)
    for cls in sorted(depth, key=lambda c: -depth[c]):
        places = [p for p in _places(body) if p.group.cls == cls]
        for part in _partition(places, defaults):
            if len(part) < 2:
                continue
            block = _make(cls, part, defaults, bind, names)
            blocks.append(block)
    return blocks


def _partition(places: list[_Place], defaults: Defaults) -> list[list[_Place]]:
    """Instances with the same skeleton; the first of each part has every projection
    shortcut the others have (some instances of a residual block have none)."""
    parts: list[list[_Place]] = []
    for place in places:
        for part in parts:
            if _fits(part[0].group.body, place.group.body, defaults):
                part.append(place)
                break
            if all(_fits(place.group.body, p.group.body, defaults) for p in part):
                part.insert(0, place)
                break
        else:
            parts.append([place])
    return parts


def _head(s: Stmt) -> tuple:
    return (type(s).__name__, s.label, s.repeat, s.template)


def _fits(template: list[Stmt], inst: list[Stmt], defaults: Defaults) -> bool:
    """The same skeleton, except that the template may have shortcuts the instance lacks."""
    if len(template) != len(inst):
        return False
    for t, s in zip(template, inst, strict=True):
        if _head(t) != _head(s):
            return False
        if isinstance(t, Group) and isinstance(s, Group):
            if t.cls != s.cls or not _fits(t.body, s.body, defaults):
                return False
        elif isinstance(t, Join) and isinstance(s, Join):
            if t.kind != s.kind or len(t.branches) != len(s.branches) or \
                    not all(_fits(a, b, defaults) for a, b in zip(t.branches, s.branches,
                                                                    strict=True)):
                return False
            if s.shortcut is not None and (t.shortcut is None or t.shortcut[0] !=
                                           s.shortcut[0] or not _fits(t.shortcut[1],
                                                                      s.shortcut[1], defaults)):
                return False
        elif skeleton(t, defaults) != skeleton(s, defaults):
            return False
    return True


def _aligned(template: list[Stmt], inst: list[Stmt], defaults: Defaults) -> list[Slot | None]:
    """The instance's slots in the template's order (None where it has no shortcut)."""
    out: list[Slot | None] = []
    for t, s in zip(template, inst, strict=True):
        if isinstance(t, Join) and isinstance(s, Join):
            for tb, sb in zip(t.branches, s.branches, strict=True):
                out += _aligned(tb, sb, defaults)
            if t.shortcut is not None and s.shortcut is None:
                out += [None] * len(body_slots(t.shortcut[1], defaults))
            elif t.shortcut is not None and s.shortcut is not None:
                out += _aligned(t.shortcut[1], s.shortcut[1], defaults)
        elif isinstance(t, Group) and isinstance(s, Group):
            out += _aligned(t.body, s.body, defaults)
        else:
            out += slots(s, defaults)
    return out


def _make(cls: str, part: list[_Place], defaults: Defaults, bind: Binding,
          names: set[str]) -> Block:
    template = part[0].group  # it has every shortcut the others have
    columns = _aligned(template.body, template.body, defaults)
    rows = [_aligned(template.body, p.group.body, defaults) for p in part]
    params: list[Param] = []
    for j, slot in enumerate(columns):
        assert slot is not None
        values = [row[j].value if row[j] is not None else None for row in rows]
        present = [v for v in values if v is not None]
        if all(_eq(v, present[0]) for v in present):
            continue
        slot.expr = _expression(slot, values, params)
    _choose_defaults(params)
    params.sort(key=lambda p: p.default is not NOVALUE)
    name = _block_name(cls, names)
    block = Block(name, params, template.body, cls, len(part))
    for k, place in enumerate(part):
        args = [Slot(p.name, p.values[k], p.default) for p in params]
        call = Call(label=None if place.group.auto else place.group.label, block=name,
                    args=args, scope=place.group.label or "")
        place.parent[place.parent.index(place.group)] = call
    return block


def _eq(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _expression(slot: Slot, values: list[Any], params: list[Param]) -> str:
    """An expression over the block's parameters giving these values (one per instance)."""
    for p in params:
        pairs = [(v, w) for v, w in zip(values, p.values, strict=True) if v is not None]
        if all(_eq(v, w) for v, w in pairs):
            return p.name
        if all(type(v) is int and type(w) is int and w > 0 for v, w in pairs):
            if all(v % w == 0 for v, w in pairs) and len({v // w for v, w in pairs}) == 1:
                return f"{pairs[0][0] // pairs[0][1]} * {p.name}"
            if all(v > 0 and w % v == 0 for v, w in pairs) and \
                    len({w // v for v, w in pairs}) == 1:
                return f"{p.name} // {pairs[0][1] // pairs[0][0]}"
    fill = Counter(v for v in values if v is not None).most_common(1)[0][0]
    name = _param_name(slot.key, {p.name for p in params})
    params.append(Param(name, [v if v is not None else fill for v in values]))
    return name


def _param_name(key: str, taken: set[str]) -> str:
    base = _PARAM_NAMES.get(key, key)
    if base in _TAKEN or base in OPS:
        base += "_"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}{n}", n + 1
    return name


def _choose_defaults(params: list[Param]) -> None:
    for p in params:
        value, count = Counter(p.values).most_common(1)[0]
        if count * 2 > len(p.values) and count >= 2:
            p.default = value


def _block_name(cls: str, names: set[str]) -> str:
    """`Bottleneck` → `bottleneck`, `InvertedResidual` → `inverted_residual`; a second
    skeleton of the same class gets `_2`."""
    base = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])|(?<=[a-z0-9])(?=[A-Z])", "_",
                  cls.strip("_")).lower() or "block"
    base = re.sub(r"[^a-z0-9_]", "_", base)
    if base[0].isdigit() or base in OPS or base in _TAKEN:
        base = f"{base}_block"
    name, n = base, 2
    while name in names:
        name, n = f"{base}_{n}", n + 1
    names.add(name)
    return name


# ---------------------------------------------------------------- repetition

@dataclass
class _Texts:
    render: Any  # (stmt) -> its text without label and repetition
    cache: dict[int, str] = field(default_factory=dict)

    def __call__(self, stmt: Stmt) -> str:
        if id(stmt) not in self.cache:
            self.cache[id(stmt)] = self.render(stmt)
        return self.cache[id(stmt)]


def progressions(body: list[Stmt], defaults: Defaults) -> list[Stmt]:
    """Consecutive statements that differ only in numbers that follow the repetition —
    the stochastic depth rate `p * b / D` of block b, Swin's shift alternating 0, 3, 0, 3 —
    → one statement `x N` with those numbers written over the repetition index `i`, in the
    arithmetic that made them (so that they elaborate to the same floats)."""
    out: list[Stmt] = []
    k = 0
    while k < len(body):
        run, positions = _run(body, k, defaults)
        # only where a rate varies (a float): `conv3-64; conv3-128` reads better as it is
        floats = any(isinstance(slots(run[0], defaults)[p].value, float) for p in positions)
        for n in range(len(run), 1, -1):
            exprs = [_series([slots(s, defaults)[p].value for s in run[:n]]) for p in positions]
            if floats and all(e is not None for e in exprs):
                for p, e in zip(positions, exprs, strict=True):
                    slots(run[0], defaults)[p].expr = e
                run[0].repeat = n
                out.append(run[0])
                k += n
                break
        else:
            out.append(body[k])
            k += 1
    return out


def _run(body: list[Stmt], k: int, defaults: Defaults) -> tuple[list[Stmt], list[int]]:
    """The statements from k on that have body[k]'s skeleton, and the positions of the
    numbers that differ among them."""
    first = body[k]
    if not isinstance(first, (Call, Layer)) or first.label is not None or first.repeat != 1:
        return [first], []
    head, values = skeleton(first, defaults), [s.value for s in slots(first, defaults)]
    run, positions = [first], set()
    for stmt in body[k + 1:]:
        if stmt.label is not None or stmt.repeat != 1 or skeleton(stmt, defaults) != head:
            break
        other = [s.value for s in slots(stmt, defaults)]
        diff = {j for j, (a, b) in enumerate(zip(values, other, strict=True)) if not _eq(a, b)}
        if not all(isinstance(other[j], (int, float)) and not isinstance(other[j], bool)
                   for j in diff):
            break
        positions |= diff
        run.append(stmt)
    return run, sorted(positions)


def _series(values: list) -> str | None:
    """An expression over `i` giving these values: a constant, `a + b * i`, an alternation
    `[x, y][i % 2]` (`y * (i % 2)` when x is 0), or a rate `p * (b + i) / d`."""
    if all(_eq(v, values[0]) for v in values):
        return spec_value(values[0])
    if all(type(v) is int for v in values):
        step = values[1] - values[0]
        if all(v == values[j % 2] for j, v in enumerate(values)) and \
                (values[0] == 0 or len(values) > 2):
            return f"{values[1]} * (i % 2)" if values[0] == 0 else \
                f"[{values[0]}, {values[1]}][i % 2]"
        if step > 0 and all(v == values[0] + step * j for j, v in enumerate(values)):
            return f"{values[0]} + {step} * i" if values[0] else f"{step} * i"
        return None
    if all(isinstance(v, float) for v in values):
        return _formula(values)
    return None


def _formula(values: list[float]) -> str | None:
    """`p * (b + i) / d` giving exactly these values (i = 0, 1, ...), with p a short decimal
    and b, d integers; None if there is none."""
    step = values[1] - values[0]
    if not step > 0:
        return None
    found = []
    for d in range(1, 1001):
        p = float(f"{step * d:.6g}")
        b = values[0] * d / p
        if abs(b - round(b)) > 1e-6:
            continue
        b = round(b)
        if all(p * (b + j) / d == v for j, v in enumerate(values)):
            index = f"({b} + i)" if b else "i"
            found.append(f"{spec_value(p)} * {index}" + (f" / {d}" if d > 1 else ""))
    # the shortest: 0.2 * (6 + i) / 16 (torchvision's own arithmetic) over 0.0125 * (6 + i)
    return min(found, key=lambda f: (len(f.split(" * ")[0]), len(f))) if found else None


def compact(body: list[Stmt], text: Any) -> list[Stmt]:
    """Consecutive equal statements → one with `x N` (a label template where each copy is
    named, `denselayer{i + 1}:`)."""
    out: list[Stmt] = []
    for stmt in body:
        prev = out[-1] if out else None
        if prev is not None and _continues(prev, stmt) and text(prev) == text(stmt):
            if prev.label is not None and prev.template is None:
                m = re.match(r"^(.*?)(\d+)$", prev.label)
                assert m
                prev.template, prev.label = (m.group(1), int(m.group(2))), None
            prev.repeat += 1
            continue
        out.append(stmt)
    return out


def _continues(prev: Stmt, stmt: Stmt) -> bool:
    """Can `stmt` be one more repetition of `prev`, as far as names go?"""
    if type(prev) is not type(stmt) or stmt.repeat != 1 or stmt.template is not None:
        return False
    if prev.label is None and prev.template is None:
        return stmt.label is None
    if stmt.label is None:
        return False
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*?)(\d+)$", stmt.label)
    if not m:
        return False
    if prev.template is not None:
        prefix, start = prev.template
        return m.group(1) == prefix and int(m.group(2)) == start + prev.repeat
    p = re.match(r"^([A-Za-z_][A-Za-z0-9_]*?)(\d+)$", prev.label or "")
    return bool(p) and p.group(1) == m.group(1) and int(m.group(2)) == int(p.group(2)) + 1 \
        and prev.repeat == 1

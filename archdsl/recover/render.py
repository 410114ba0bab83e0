"""Statements → spec text. A slot is written as its literal value, or as the expression a
block's parameter binds it to (`{4 * c}`); a literal at its attribute's default is left out."""

from __future__ import annotations

from typing import Any

from ..formatter import label_text, spec_value
from .forms import NOVALUE, Call, Defaults, Group, Join, Layer, Slot, Stmt, form

INDENT = "  "
ONE_LINE = 96  # a group or join whose body fits in this many columns is written on one line


class Binding:
    """How slots are written: as the expression a block binds them to, or their value."""

    @staticmethod
    def shown(slot: Slot, force: bool = False, braces: bool = True) -> str | None:
        if slot.expr is not None:
            return f"{{{slot.expr}}}" if braces else slot.expr
        if not force and slot.omit is not NOVALUE and _same(slot.value, slot.omit):
            return None
        return value_text(slot.key, slot.value)


def value_text(key: str, v: Any) -> str:
    """A size per axis as papers print it, `1x7` (a kernel, stride, dilation); a padding
    per axis as PyTorch writes it, `[0, 3]`."""
    if isinstance(v, tuple) and len(v) == 2 and all(type(x) is int for x in v) and \
            not key.startswith("pad"):
        return f"{v[0]}x{v[1]}"
    return spec_value(v)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and
                                             not isinstance(a, bool) and
                                             not isinstance(b, bool) and a == b)


def layer_text(layer: Layer, defaults: Defaults, bind: Binding) -> str:
    f = form(layer, defaults)
    text, words = f.token, []
    if f.kernel is not None:
        k = bind.shown(f.kernel)
        if k is not None and k.replace("x", "", 1).isdigit():
            text += k
        elif k is not None:
            words.append(f"k={k}")
    if f.dash is not None:
        text += f"-{bind.shown(f.dash, force=True)}"
    if f.slash is not None:
        s = bind.shown(f.slash)
        if s is not None and s[0].isdigit() and "x" in s:  # `/2x1` reads as `/2` x1
            words.append(f"{f.slash.key}={s}")
        elif s is not None:
            text += f"/{s}"
    args = [bind.shown(a) for a in f.args]
    while args and args[-1] is None:
        args.pop()
    if args:
        shown = [a if a is not None else bind.shown(f.args[i], force=True)
                 for i, a in enumerate(args)]
        text += "(" + ", ".join(str(a) for a in shown) + ")"
    for slot in f.attrs:
        v = bind.shown(slot)
        if v is not None:
            words.append(f"{slot.key}={v}")
    words += f.extra
    return " ".join([text] + words)


def call_text(call: Call, bind: Binding) -> str:
    parts = []
    for slot in call.args:
        v = bind.shown(slot, braces=False)
        if slot.omit is NOVALUE:
            parts.append(bind.shown(slot, force=True, braces=False))
        elif v is not None:
            parts.append(f"{slot.key}={v}")
    return f"{call.block}({', '.join(str(p) for p in parts)})"


def render(body: list[Stmt], defaults: Defaults, bind: Binding, depth: int = 0) -> list[str]:
    return [line for stmt in body for line in _stmt(stmt, defaults, bind, depth)]


def _head(stmt: Stmt) -> str:
    if stmt.template is not None:
        prefix, start = stmt.template
        return f"{prefix}{{i + {start}}}: " if start else f"{prefix}{{i}}: "
    return f"{label_text(stmt.label)}: " if stmt.label is not None else ""


def _stmt(stmt: Stmt, defaults: Defaults, bind: Binding, depth: int) -> list[str]:
    pad = INDENT * depth
    tail = f" x{stmt.repeat}" if stmt.repeat != 1 else ""
    head = pad + _head(stmt)
    if isinstance(stmt, Layer):
        return [head + layer_text(stmt, defaults, bind) + tail]
    if isinstance(stmt, Call):
        return [head + call_text(stmt, bind) + tail]
    if isinstance(stmt, Group):
        return _wrap(head, "(", [render(stmt.body, defaults, bind, depth + 1)], ")", tail, pad)
    assert isinstance(stmt, Join)
    bodies = [render(b, defaults, bind, depth + 1) for b in stmt.branches]
    word = stmt.kind + " {"
    if stmt.shortcut is None:
        return _wrap(head, word, bodies, "}", tail, pad)
    label, short = stmt.shortcut
    lines = _wrap(head, word, bodies, "}", "", pad)
    rest = _wrap("", f"shortcut({label}) {{", [render(short, defaults, bind, depth + 1)], "}",
                 tail, pad)
    return lines[:-1] + [lines[-1] + " " + rest[0].lstrip()] + rest[1:]


def _simple(line: str) -> bool:
    """A whole statement on one line (not the opening or closing line of a nesting)."""
    text = line.strip()
    return not text.endswith(("(", "{")) and text not in ("|",) and \
        not text.startswith((")", "}"))


def _wrap(head: str, opening: str, bodies: list[list[str]], closing: str, tail: str,
          pad: str) -> list[str]:
    """`name: ( ... )` on one line when it is short, else one statement per line."""
    if all(len(b) <= 4 and all(_simple(line) for line in b) for b in bodies):
        inner = " | ".join("; ".join(line.strip() for line in b) for b in bodies)
        one = f"{head}{opening} {inner} {closing}{tail}" if inner else f"{head}{opening}{closing}"
        if len(one) <= ONE_LINE and "\n" not in one:
            return [one]
    lines = [head + opening]
    for k, b in enumerate(bodies):
        if k:
            lines.append(pad + "|")
        lines.extend(b)
    lines.append(pad + closing + tail)
    return lines

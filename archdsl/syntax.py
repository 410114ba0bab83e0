"""The syntax tree: what the parser produces and the elaborator consumes.

Every node keeps its source span so that any later error can point at the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import Span

# what a label may be written as without quotes: torchvision's module names (`layer1`, `0`,
# `block1-0`); a quoted label (`"any name":`) may hold anything printable but `.`
VALID_LABEL = re.compile(r"^[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*$")


@dataclass(frozen=True)
class Expr:
    """An expression node: `op` names the form (num, var, sym, call, binop...), `args` its parts."""

    op: str
    args: tuple
    span: Span


@dataclass
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass
class Arg:
    name: str | None  # None for a positional argument
    value: Expr
    span: Span


@dataclass
class Attr:
    name: str
    value: Expr
    span: Span


@dataclass
class Layer:
    """`conv3-64/2(…) act=relu` — an op or a block call; the name is resolved later."""

    name: str
    name_span: Span
    channels: Expr | None
    stride: Expr | None
    args: list[Arg] | None
    attrs: list[Attr]
    span: Span


@dataclass
class Body:
    stmts: list
    span: Span


@dataclass
class Group:
    body: Body
    span: Span


@dataclass
class Join:
    kind: str  # concat | add | mul
    branches: list[Body]
    span: Span


@dataclass
class Residual:
    body: Body
    shortcut: Body | None
    shortcut_name: str | None
    span: Span


@dataclass
class Split:
    """`split { | b }`, `split(24, 40) { a | b }`: each branch gets its part of the channels."""

    sizes: list[Arg] | None
    branches: list[Body]
    span: Span


@dataclass
class Gate:
    body: Body
    span: Span


@dataclass
class Dense:
    body: Body
    span: Span


Atom = Layer | Group | Join | Residual | Gate | Dense | Split


@dataclass
class Item:
    label: str | None
    label_span: Span | None
    atom: Atom
    repeat: Expr | None
    span: Span
    # `denselayer{i + 1}: ... x6`, `block{s}-{i}: ...`: a name per repetition, `i` counting
    # repetitions from 0; `label` is the first word, these the parts that follow it (words and
    # expressions, joined in order)
    label_template: tuple[str | Expr, ...] | None = None


@dataclass
class Input:
    dims: list[Expr]
    span: Span


@dataclass
class Defaults:
    attrs: list[Attr]
    span: Span


@dataclass
class Let:
    name: str
    value: Expr
    span: Span


@dataclass
class Budget:
    """`assert macs <= 600M`: a condition on the analysed totals, checked after analysis."""

    expr: Expr
    span: Span


@dataclass
class Include:
    path: str
    span: Span


@dataclass
class BlockDef:
    name: str
    params: list[Param]
    body: Body
    span: Span
    inline: bool = False  # `inline block`: its items are named in the caller's scope


@dataclass
class ArchDef:
    name: str
    params: list[Param]
    span: Span
    stmts: list = field(default_factory=list)  # Input, Defaults, Let, Item in order


@dataclass
class ArchAlias:
    """`arch vgg19_bn = vgg_e(norm=bn)`: an architecture derived by overriding parameters."""

    name: str
    target: str
    args: list[Arg]
    span: Span


@dataclass
class Module:
    """One parsed file."""

    file: str
    includes: list[Include]
    blocks: list[BlockDef]
    archs: list[ArchDef | ArchAlias]

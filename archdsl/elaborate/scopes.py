"""What a statement is elaborated in: its naming scope, its environment (values and the
defaults in force), and the call notes errors inside blocks get."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import syntax as S
from ..errors import ArchError, ErrorSink, NameError_, Span
from ..expr import charge_copy, evaluate, short_repr
from ..layer_attrs import Default
from ..ops import features


class Abort(Exception):
    """Stop elaborating this architecture (too large, or an error everything else depends on)."""


@dataclass
class Scope:
    """A naming scope: `layer1.0.` with its counter for unlabelled items."""

    prefix: str
    counter: int = 0
    names: dict[str, Span | None] = field(default_factory=dict)

    def claim(self, label: str, span: Span | None, sink: ErrorSink, report: bool = True) -> str:
        """The scoped name for `label`; a name used twice is an error (`report=False`: one
        already reported, as the bn/relu names of a layer whose own name clashed)."""
        if label in self.names and report:
            first = self.names[label]
            sink.add(NameError_(f"name `{self.prefix}{label}` is used twice", span,
                                notes=[("first used here", first)] if first else []))
        self.names[label] = span
        if label.isdigit():
            self.counter = max(self.counter, int(label) + 1)
        return self.prefix + label

    def next_index(self) -> str:
        while str(self.counter) in self.names:
            self.counter += 1
        label = str(self.counter)
        self.counter += 1
        return label

    def child(self, label: str) -> Scope:
        return Scope(self.prefix + label + ".")


@dataclass
class Env:
    """What a statement sees: variable values and the network defaults in force."""

    values: dict[str, Any]
    defaults: dict[str, Default]  # attribute → its value in force
    calls: tuple[str, ...] = ()  # the blocks being elaborated, outermost first

    def with_values(self, extra: dict[str, Any]) -> Env:
        charge_copy(self.values)
        return Env({**self.values, **extra}, self.defaults, self.calls)


# What an item's expressions may ask of the tensor it is applied to
INPUT_NAMES = ("in_channels", "in_shape")


class UnknownInput(ArchError):
    """`in_channels` after a layer that failed: that error is the one to report."""


class InputView(Mapping):
    """The names an item sees, and `in_channels` (the channels of a C×H×W map, the features
    of an L×D sequence, the length of a vector) and `in_shape` (its shape as a list) of the
    tensor it is applied to — DenseNet-BC's transition `conv1-{in_channels // 2}`, a
    squeeze-and-excitation written once for any width. A name the spec gives wins. Only the
    spec's own names are listed (copying the scope leaves the input's behind)."""

    __slots__ = ("values", "shape", "span")

    def __init__(self, values: Mapping[str, Any], shape, span: Span | None) -> None:
        self.values, self.shape, self.span = values, shape, span

    def __getitem__(self, key: str) -> Any:
        if key in self.values or key not in INPUT_NAMES:
            return self.values[key]
        if self.shape is None:  # an error before it left the shape unknown
            raise UnknownInput(f"`{key}` is unknown after the error above", self.span)
        return features(self.shape) if key == "in_channels" else list(self.shape)

    def __contains__(self, key: object) -> bool:
        return key in self.values or key in INPUT_NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def with_input(env: Env, shape, span: Span | None) -> Env:
    values = env.values.values if isinstance(env.values, InputView) else env.values
    return Env(InputView(values, shape, span), env.defaults, env.calls)  # type: ignore[arg-type]


def repetition(env: Env, item: S.Item, i: int) -> Env:
    """What the k-th copy of a repeated item (`x N`) sees: `i` is its index, 0 to N-1, in its
    arguments, attributes and label template (`denselayer{i + 1}`); an outer `i` is hidden."""
    return env if item.repeat is None else env.with_values({"i": i})


class CallSink:
    """The error sink as the elaborator sees it: an error found inside a block gets a note
    per call that led there, innermost first ("in this call to `bottleneck` (`layer1.2`)"), so
    a block called three times says which call went wrong."""

    def __init__(self, sink: ErrorSink) -> None:
        self.sink = sink
        self.calls: list[tuple[str, str, Span]] = []  # (instance name, block, call site)

    def add(self, err: ArchError) -> None:
        self.sink.add(self.located(err))

    def located(self, err: ArchError) -> ArchError:
        if self.calls and not getattr(err, "_call_notes", False):
            err.notes.extend((f"in this call to `{block}` (`{name}`)", span)
                             for name, block, span in reversed(self.calls))
            err._call_notes = True  # type: ignore[attr-defined]
        return err


def label_part(part: str | S.Expr, env: Env) -> str:
    """A word of a label template as it is, an expression's value as text (2.0 → 2)."""
    if isinstance(part, str):
        return part
    value = evaluate(part, env.values)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    # a list is never part of a name: shown cut, not 100,000 items long in the error
    return short_repr(value) if isinstance(value, list) else str(value)


def param_list(params: list[S.Param], bare: bool = False) -> str:
    if not params:
        return "it takes no parameters"
    names = ", ".join(p.name for p in params)
    return names if bare else f"parameters: {names}"

"""One error hierarchy. Every user error carries a source span and renders like a compiler's.

    specs/x.arch:4:9: error: unknown op `cnv3`
        cnv3-64 x2
        ^^^^
    hint: did you mean `conv3`?
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A region of source text: 1-based line and column, end exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    text: str = ""  # the whole source of `file`, kept for rendering the line

    def __repr__(self) -> str:
        return f"Span({self.file}:{self.line}:{self.col})"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def source_line(self) -> str:
        lines = self.text.splitlines()
        return lines[self.line - 1] if 0 < self.line <= len(lines) else ""


class ArchError(Exception):
    """A mistake in a spec (or its use), located in the source."""

    kind = "error"

    def __init__(self, message: str, span: Span | None, hint: str | None = None,
                 notes: Iterable[tuple[str, Span | None]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.notes = list(notes)

    def render(self) -> str:
        parts = [_located(self.span, f"{self.kind}: {self.message}")]
        for text, span in self.notes:
            parts.append(_located(span, f"note: {text}"))
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.render()


class ArchSyntaxError(ArchError):
    """The text does not follow the grammar."""


class NameError_(ArchError):
    """An op, block, parameter or attribute name that is not known."""


class ShapeError(ArchError):
    """A tensor shape that a layer cannot accept."""


class ValueError_(ArchError):
    """A value of the wrong type or out of range (channels, strides, repeat counts...)."""


class IncludeError(ArchError):
    """An include that cannot be read or escapes the including file's tree."""


class UsageError(ArchError):
    """A mistake in how the spec is used (unknown --set name, missing --arch...)."""


class ArchWarning(ArchError):
    """Valid, but probably not what was meant (reported, never raised)."""

    kind = "warning"


class ArchErrors(Exception):
    """Several errors found in one run; raised once all of them have been collected."""

    def __init__(self, errors: list[ArchError]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors

    def render(self) -> str:
        return "\n\n".join(e.render() for e in self.errors)

    def __str__(self) -> str:
        return self.render()


class ErrorSink:
    """Collects errors so that one run reports all it can; `check()` raises them together."""

    def __init__(self) -> None:
        self.errors: list[ArchError] = []

    def add(self, err: ArchError) -> None:
        key = (type(err), err.message, err.span and (err.span.file, err.span.line, err.span.col))
        if all((type(e), e.message, e.span and (e.span.file, e.span.line, e.span.col)) != key
               for e in self.errors):
            self.errors.append(err)

    def check(self) -> None:
        if self.errors:
            raise ArchErrors(list(self.errors))


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint, or None when nothing is close."""
    pool = sorted(set(candidates))
    lowered = {c.lower(): c for c in pool}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    if not matches:
        return None
    return "did you mean " + " or ".join(f"`{lowered[m]}`" for m in matches) + "?"


def _located(span: Span | None, message: str) -> str:
    if span is None:
        return message
    head = f"{span.where}: {message}"
    line = span.source_line()
    if not line:
        return head
    width = span.end_col - span.col if span.end_line == span.line else len(line) - span.col + 1
    caret = " " * (span.col - 1) + "^" * max(1, width)
    return f"{head}\n    {line}\n    {caret}"


def last_line(exc: BaseException) -> str:
    """The last line of an exception's message (TVM's errors carry a C++ traceback before it),
    or its type's name when it has none."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1]

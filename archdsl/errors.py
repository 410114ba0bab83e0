"""One error hierarchy. Every user error carries a source span and renders like a compiler's.

    specs/x.arch:4:9: error: unknown op `cnv3`
        cnv3-64 x2
        ^^^^
    hint: did you mean `conv3`?
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from .limits import MAX_ERRORS, exceeded


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
        """The text of line `line` (lines end at "\\n", as the parser counts them)."""
        starts = _line_starts(self.text)
        if not 0 < self.line <= len(starts):
            return ""
        end = starts[self.line] - 1 if self.line < len(starts) else len(self.text)
        return self.text[starts[self.line - 1]:end].rstrip("\r\n")


@lru_cache(maxsize=8)
def _line_starts(text: str) -> tuple[int, ...]:
    """Where each line of `text` starts: made once per text, so that showing the source line
    of each of many errors stays linear in their number (a str caches its hash)."""
    starts, at = [0], text.find("\n")
    while at >= 0:
        starts.append(at + 1)
        at = text.find("\n", at + 1)
    if starts[-1] == len(text) and len(starts) > 1:
        starts.pop()  # the empty "line" after a final newline
    return tuple(starts)


# Text from a spec or a command line is shown on a terminal: its control characters (ESC
# starts escape sequences, CR overwrites the line, bidirectional overrides reorder it) are
# shown as symbols of the same width instead, so that carets stay under their columns.
_PRINTABLE = {c: 0x2400 + c for c in range(32)} | {0x7F: 0x2421, 0x09: 0x20, 0x0A: 0x0A}
_PRINTABLE |= {c: 0xFFFD for c in [*range(0x80, 0xA0), *range(0x202A, 0x202F),
                                   *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]}


def printable(text: str) -> str:
    """`text` with its control characters (but newlines) replaced by visible symbols."""
    return text.translate(_PRINTABLE)


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
        """The error as a compiler prints it; control characters in spec text shown as
        symbols (`printable`)."""
        parts = [_located(self.span, f"{self.kind}: {self.message}")]
        for text, span in self.notes:
            parts.append(_located(span, f"note: {text}"))
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return printable("\n".join(parts))

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


class ErrorLimit(ArchError):
    """Not an error of the input: the note that a pass stopped at MAX_ERRORS errors (shown
    last, however many errors are listed before it)."""


class TooManyErrors(Exception):
    """Raised by ErrorSink.add at MAX_ERRORS: the pass stops; its caller calls `check()`."""


class ErrorSink:
    """Collects errors so that one run reports all it can; `check()` raises them together.
    After MAX_ERRORS distinct errors `add` raises TooManyErrors (a pass stops there, as a C
    compiler does at -fmax-errors) and `check()` adds an error saying so."""

    def __init__(self, limit: int | None = None) -> None:
        self.errors: list[ArchError] = []
        self.limit = MAX_ERRORS if limit is None else limit
        self.stopped = False
        self._keys: set = set()

    def add(self, err: ArchError) -> None:
        key = (type(err), err.message, err.span and (err.span.file, err.span.line, err.span.col))
        if key in self._keys:
            return
        if len(self.errors) >= self.limit:
            self.stopped = True
            raise TooManyErrors
        self._keys.add(key)
        self.errors.append(err)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        """Run a pass that adds errors; it ends early, quietly, at the limit."""
        try:
            yield
        except TooManyErrors:
            pass

    def check(self) -> None:
        if self.errors:
            extra = [ErrorLimit(f"stopped after {len(self.errors)} errors", None,
                                exceeded("errors reported in one run", self.limit))
                     ] if self.stopped else []
            raise ArchErrors(list(self.errors) + extra)


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
    line, col, width = _window(line, span.col, max(1, width))
    caret = " " * (col - 1) + "^" * width
    return f"{head}\n    {line}\n    {caret}"


SHOWN_COLUMNS = 120  # of a long source line, the part around the error


def _window(line: str, col: int, width: int) -> tuple[str, int, int]:
    """A long line cut to SHOWN_COLUMNS around the caret (a spec may hold a line of a
    megabyte); the column and caret width within what is shown."""
    if len(line) <= SHOWN_COLUMNS:
        return line, col, width
    start = max(0, min(col - 1 - SHOWN_COLUMNS // 4, len(line) - SHOWN_COLUMNS))
    shown = line[start:start + SHOWN_COLUMNS]
    col -= start
    width = min(width, SHOWN_COLUMNS - col + 1)
    if start > 0:
        shown, col = "…" + shown, col + 1
    if start + SHOWN_COLUMNS < len(line):
        shown += "…"
    return shown, col, width


def last_line(exc: BaseException) -> str:
    """The last line of an exception's message (TVM's errors carry a C++ traceback before it),
    or its type's name when it has none."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1]


def first_line(exc: BaseException, width: int = 300) -> str:
    """The first line of an exception's message, cut at `width` characters (PyTorch's C++
    errors append their stack frames after it), or its type's name when it has none."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line if len(line) <= width else line[:width] + "…"

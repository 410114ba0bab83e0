"""Which bracket was left open, when a spec's brackets do not balance.

An LALR parser that meets a missing `}` reports whatever token it stops at — the next
`block` ("expected `:`"), or the end of the file with every token that could follow — and
never the `{` left open. This finds that `{`: brackets are matched outside comments and
strings; a pair whose closing bracket starts a line indented unlike the line that opened it
probably closed the wrong bracket (the `}` meant for `block b(c) {` closing the
`residual {` inside it), so its opener is the likely culprit, as rustc's "unclosed
delimiter" guesses; otherwise the innermost brackets still open at the end are.
"""

from __future__ import annotations

from typing import NamedTuple

PAIRS = {"(": ")", "[": "]", "{": "}"}


class Bracket(NamedTuple):
    line: int  # 1-based
    col: int  # 1-based
    char: str


def unclosed(text: str) -> list[Bracket]:
    """The opening brackets most likely left unclosed (innermost first), or [] when every
    bracket is closed."""
    lines = text.split("\n")
    stack: list[Bracket] = []
    suspects: list[Bracket] = []
    for lineno, line in enumerate(lines, 1):
        for col, ch in _brackets(line):
            if ch in PAIRS:
                stack.append(Bracket(lineno, col, ch))
            elif stack and PAIRS[stack[-1].char] == ch:
                opened = stack.pop()
                starts_line = not line[:col - 1].strip()
                if (starts_line and opened.line != lineno
                        and _indent(line) != _indent(lines[opened.line - 1])):
                    suspects.append(opened)
    if not stack:
        return []
    missing = len(stack)
    ranked = sorted(suspects, key=lambda b: (-b.line, -b.col))
    guess = ranked[:missing] + list(reversed(stack))[:max(0, missing - len(ranked))]
    return guess


def statement_rows(lines: list[str], row: int) -> tuple[int, int] | None:
    """The rows (0-based, first and last) of the statement that row `row` is part of as far
    as brackets tell, or None when that is unclear. A statement spans lines inside the
    brackets of an expression (a list over several lines): from the row that opened a bracket
    `row` closes to the row that closes every bracket opened from there on. A `(` or `{` that
    ends its line opens a body (a block, a group) whose lines are statements of their own; a
    closing bracket that does not match is not counted (it is the error, not a structure)."""
    stack: list[tuple[str, int, bool]] = []  # (bracket, row, opens a body)
    first = row
    for r, line in enumerate(lines):
        marks = list(_brackets(line))
        for i, (col, ch) in enumerate(marks):
            if ch in PAIRS:
                rest = line[col:].split("#", 1)[0].strip()
                stack.append((ch, r, ch != "[" and i == len(marks) - 1 and not rest))
            elif stack and PAIRS[stack[-1][0]] == ch:
                opened = stack.pop()
                if r == row and opened[1] < row and not opened[2]:
                    first = min(first, opened[1])
        if r >= row:
            pending = [b for b in stack if b[1] >= first]
            if not pending:
                return first, r
            if any(body for _, _, body in pending):
                return None
    return None


def _brackets(line: str):
    """(column, bracket) for each bracket of one line outside comments and strings."""
    in_string = False
    for i, ch in enumerate(line):
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch == "#":
            return
        elif ch in PAIRS or ch in PAIRS.values():
            yield i + 1, ch


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))

"""Text → syntax tree, with Lark (LALR) and positions on every node."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import syntax as S
from .brackets import PAIRS, statement_rows, unclosed
from .errors import ArchError, ArchErrors, ArchSyntaxError, ErrorSink, Span, printable
from .limits import MAX_LITERAL_DIGITS, MAX_SYNTAX_DEPTH, MAX_SYNTAX_REPARSE_BYTES, exceeded

GRAMMAR = Path(__file__).with_name("grammar.lark")

# Friendly names for the grammar's terminals in "expected ..." messages.
_TERMINAL_WORDS = {
    "NAME": "a name", "INT": "an integer", "NUMBER": "a number", "SIGNED_NUMBER": "a number",
    "STRING": 'a "string"', "_NL": "end of line", "SEMICOLON": "`;`", "TIMES": "`x` (repeat)",
    "LBRACE": "`{`", "RBRACE": "`}`", "LPAR": "`(`", "RPAR": "`)`", "COLON": "`:`",
    "VBAR": "`|`", "EQUAL": "`=`", "COMMA": "`,`", "MINUS": "`-`", "SLASH": "`/`",
    "LSQB": "`[`", "RSQB": "`]`", "$END": "end of file", "PLUS": "`+`", "STAR": "`*`",
    "SOFT_MAX": "`soft-max`", "POW": "`**`", "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`, `/`, `//` or `%`",
    "COMP_OP": "a comparison", "DOT": "`.`", "DIMS": "a size per axis (`1x7`)",
    "LABEL_DASH": "`-` (in a name)",
}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    # the LALR tables ship with the package (grammar_tables.py): never a cache file that
    # someone else could have written
    from .grammar_tables import load
    return load()


MAX_SYNTAX_ERRORS = 20


def parse(text: str, file: str = "<string>") -> S.Module:
    """Parse one file's text. Raises ArchErrors (syntax errors carry their location)."""
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        errors = _syntax_errors(exc, text, file)
        raise ArchErrors(_unclosed_first(errors, text, file)) from None
    _check_depth(tree, file, text)
    sink = ErrorSink()
    try:
        items = _Build(file, text).build(tree)
    except ArchError as exc:  # a literal the builder refuses, a quoted name with a `.`
        raise ArchErrors([exc]) from None
    module = S.Module(file, [], [], [])
    with sink.collecting():
        module = _group(items, file, sink)
    sink.check()
    return module


def _check_depth(tree: Tree, file: str, text: str) -> None:
    """Refuse a tree deeper than MAX_SYNTAX_DEPTH before anything walks it recursively
    (building the syntax tree, evaluating expressions, elaborating nested groups): a chain of
    500 `+` or 200 nested brackets would otherwise end in Python's RecursionError."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SYNTAX_DEPTH:
            where = _span(file, text, node.meta)
            raise ArchErrors([ArchSyntaxError(
                f"this nests more than {MAX_SYNTAX_DEPTH} levels deep", where,
                exceeded("nesting (brackets, blocks and chained operators, in levels of the "
                         "syntax tree)", MAX_SYNTAX_DEPTH) + "; split it up with `let` or blocks")])
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, Tree))


def _group(items: list, file: str, sink: ErrorSink) -> S.Module:
    """Attach the statements that follow each `arch` header to it."""
    module = S.Module(file, [], [], [])
    current: S.ArchDef | None = None
    for it in items:
        if isinstance(it, S.Include):
            module.includes.append(it)
        elif isinstance(it, S.BlockDef):
            module.blocks.append(it)
        elif isinstance(it, S.ArchDef):
            current = it
            module.archs.append(it)
        elif isinstance(it, S.ArchAlias):
            current = None
            module.archs.append(it)
        elif current is None:
            sink.add(ArchSyntaxError("statement outside an architecture", it.span,
                                     "start the architecture with `arch NAME` before its layers"))
        else:
            current.stmts.append(it)
    return module


def _syntax_errors(first: UnexpectedInput, text: str, file: str) -> list[ArchSyntaxError]:
    """The first syntax error, and more: blank out the offending statement and parse again —
    its lines, from the one that opened the brackets the error is inside to the one that
    closes them (a list spanning lines is one statement: blanking only its last line would
    leave a bracket open and every later line reported as noise)."""
    errors = [_syntax_error(first, text, file)]
    lines = text.split("\n")
    exc: UnexpectedInput | None = first
    reparsed = 0  # bounded: each attempt parses the whole text again
    while exc is not None and len(errors) < MAX_SYNTAX_ERRORS and \
            reparsed + len(text) <= MAX_SYNTAX_REPARSE_BYTES:
        reparsed += len(text)
        row = errors[-1].span.line - 1  # type: ignore[union-attr]
        rows = statement_rows(lines, row) if 0 <= row < len(lines) - 1 else None
        if rows is None:
            break
        if _cut_by_line_break(exc):  # its rest is on the lines indented under it
            rows = (rows[0], _indented_under(lines, rows[1]))
        for r in range(rows[0], rows[1] + 1):
            lines[r] = " " * len(lines[r])
        try:
            _lark().parse("\n".join(lines))
            exc = None
        except UnexpectedInput as nxt:
            err = _syntax_error(nxt, text, file)
            if err.span.line <= rows[1] + 1:  # type: ignore[union-attr]
                break  # no progress: the trouble is not on that line alone
            errors.append(err)
            exc = nxt
    return errors


def _cut_by_line_break(exc: UnexpectedInput) -> bool:
    return isinstance(exc, UnexpectedToken) and exc.token.type == "_NL"


def _indented_under(lines: list[str], row: int) -> int:
    """The last row of the lines after `row` indented deeper than it (a statement's
    continuation the user meant, `let x = 1 +` then `    2`), or `row` itself."""
    indent = len(lines[row]) - len(lines[row].lstrip())
    last = row
    for r in range(row + 1, len(lines)):
        text = lines[r].split("#", 1)[0]
        if text.strip() and len(text) - len(text.lstrip()) <= indent:
            break
        last = r
    return last


def _unclosed_first(errors: list[ArchSyntaxError], text: str,
                    file: str) -> list[ArchSyntaxError]:
    """A bracket left open is the error to report: the parser's own complaint is where it
    noticed (the next block, or the end of the file), kept as a note. Errors before the open
    bracket stay, as they are real."""
    brackets = unclosed(text)
    if not brackets:
        return errors
    first = min(brackets)
    before = [e for e in errors if e.span and (e.span.line, e.span.col) < first[:2]]
    stopped = next((e for e in errors if e not in before), None)
    out = list(before)
    for b in brackets:
        close = PAIRS[b.char]
        notes = [] if stopped is None or stopped.span is None else [
            (f"the parser stopped here: {stopped.message}", stopped.span)]
        out.append(ArchSyntaxError(f"this `{b.char}` is never closed",
                                   Span(file, b.line, b.col, b.line, b.col + 1, text),
                                   f"add the `{close}` that ends it", notes))
    return out


def _syntax_error(exc: UnexpectedInput, text: str, file: str) -> ArchSyntaxError:
    line, col = max(exc.line, 1), max(exc.column, 1)
    width = 1
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        got = "end of file" if tok.type == "$END" else (
            "end of line" if tok.type == "_NL" else f"`{tok}`")
        width = max(1, len(str(tok))) if tok.type not in ("$END", "_NL") else 1
        msg = f"unexpected {got}"
        expected = _expected(exc.expected)
    elif isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        msg = f"unexpected character `{ch}`"
        expected = _expected(exc.allowed or ())
    else:  # UnexpectedEOF
        msg, expected = "unexpected end of file", _expected(getattr(exc, "expected", ()))
    at_end = isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    if isinstance(exc, UnexpectedEOF) or at_end:
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    span = Span(file, line, col, line, col + width, text)
    hint = f"expected {expected}" if expected else None
    extra = _line_break_hint(exc, span)
    hint = f"{extra}; {hint}" if hint and extra else hint or extra
    return ArchSyntaxError(msg, span, hint)


def _expected(names) -> str:
    words = sorted({_TERMINAL_WORDS.get(n, f"`{n.lower()}`" if n.isupper() else n) for n in names})
    if not words:
        return ""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _line_break_hint(exc: UnexpectedInput, span: Span) -> str | None:
    """A statement cut by a line break: one that stops where more was needed (`let x = 1 +`),
    or an attribute written on a line of its own (`  act=relu` under its layer)."""
    if not isinstance(exc, UnexpectedToken):
        return None
    if exc.token.type == "_NL":
        return ("a line break ends a statement: end the line with `\\` to continue it (inside "
                "( ), [ ] or { } of an expression a line continues by itself)")
    before = span.source_line()[:span.col - 1]
    if exc.token.type == "EQUAL" and re.fullmatch(r"\s*[A-Za-z_]\w*", before):
        return ("an attribute on a line of its own: it belongs to the layer it follows on the "
                "same line; to continue the line above, end it with `\\`")
    return None


def _span(file: str, text: str, meta) -> Span:
    if getattr(meta, "empty", True):
        return Span(file, 1, 1, 1, 1, text)
    return Span(file, meta.line, meta.column, meta.end_line, meta.end_column, text)


def _tok_span(file: str, text: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column, text)


@v_args(meta=True)
class _Build(Transformer):
    """One method per grammar rule, building syntax-tree nodes with spans."""

    def __init__(self, file: str, text: str) -> None:
        super().__init__()
        self.file, self.text = file, text

    def build(self, tree: Tree):
        """`transform`, without Lark's per-node dispatch (a third of the time on a large
        spec): one bound method per rule, looked up once, called with (meta, children)."""
        methods: dict[str, Any] = {}

        def walk(t: Tree):
            children = [walk(c) if type(c) is Tree else c for c in t.children]
            f = methods.get(t.data)
            if f is None:
                f = getattr(self, t.data, None)
                f = methods[t.data] = (f.base_func.__get__(self) if f else
                                       lambda meta, c, name=t.data: Tree(name, c, meta))
            return f(t.meta, children)
        return walk(tree)

    def _s(self, meta) -> Span:
        return _span(self.file, self.text, meta)

    def _e(self, op: str, args: tuple, meta) -> S.Expr:
        return S.Expr(op, args, self._s(meta))

    # ---- file structure ----
    def start(self, meta, items):
        return [i for i in items if i is not None]

    def include(self, meta, c):
        return S.Include(c[0][1:-1], self._s(meta))

    def blockdef(self, meta, c):
        inline, name, params, body = c
        return S.BlockDef(str(name), params or [], body, self._s(meta), inline is not None)

    def archdef(self, meta, c):
        return S.ArchDef(str(c[0]), c[1] or [], self._s(meta))

    def archalias(self, meta, c):
        return S.ArchAlias(str(c[0]), str(c[1]), c[2] or [], self._s(meta))

    def params(self, meta, c):
        return list(c)

    def param(self, meta, c):
        return S.Param(str(c[0]), c[1], self._s(meta))

    # ---- statements ----
    def input(self, meta, c):
        return S.Input(c[0], self._s(meta))

    def dims(self, meta, c):
        return [self._int(d) for d in c if not (isinstance(d, Token) and d.type == "TIMES")]

    def _int(self, d):
        if isinstance(d, Token):
            span = _tok_span(self.file, self.text, d)
            return S.Expr("num", (_number(d, span),), span)
        return d

    def defaults(self, meta, c):
        return S.Defaults(list(c), self._s(meta))

    def budget(self, meta, c):
        return S.Budget(c[0], self._s(meta))

    def let(self, meta, c):
        return S.Let(str(c[0]), c[1], self._s(meta))

    def body(self, meta, c):
        return S.Body([x for x in c if x is not None], self._s(meta))

    def item(self, meta, c):
        label, atom, repeat = c
        lname, lspan, template = label if label else (None, None, None)
        return S.Item(lname, lspan, atom, repeat, self._s(meta), template)

    def label(self, meta, c):
        tok = c[0]
        span = _tok_span(self.file, self.text, tok)
        if getattr(tok, "type", "") != "STRING":
            return str(tok), span, None
        name = str(tok)[1:-1]
        if not name or "." in name or not name.isprintable():
            raise ArchSyntaxError(f"`{tok}` cannot be a name", span,
                                  "a quoted name may hold any characters but `.` (which "
                                  "separates scopes)")
        return name, span, None

    def keyword(self, meta, c):
        return c[0]

    block_word = keyword

    def label_template(self, meta, c):
        """`block1-0:` is a plain name; with `{...}` parts it is a template: its parts, words
        and expressions, are joined per repetition."""
        parts: list = []
        for x in c:
            if isinstance(x, Token):
                text = "-" if x.type == "LABEL_DASH" else str(x)
                if parts and isinstance(parts[-1], str):
                    parts[-1] += text
                else:
                    parts.append(text)
            else:
                parts.append(x)
        if len(parts) == 1:
            return parts[0], self._s(meta), None
        return str(parts[0]), self._s(meta), tuple(parts[1:])

    def repeat(self, meta, c):
        return self._int(c[1])

    def layer(self, meta, c):
        name, channels, stride, args, *attrs = c
        return S.Layer(str(name), _tok_span(self.file, self.text, name), channels, stride,
                       args, list(attrs), self._s(meta))

    def opname(self, meta, c):
        return c[0]

    def channels(self, meta, c):
        return self._int(c[0])

    stride = channels

    def callargs(self, meta, c):
        return c[0] or []

    def args(self, meta, c):
        return list(c)

    def arg(self, meta, c):
        return S.Arg(None, c[0], self._s(meta))

    def kwarg(self, meta, c):
        return S.Arg(str(c[0]), c[1], self._s(meta))

    def attr(self, meta, c):
        return S.Attr(str(c[0]), c[1], self._s(meta))

    def sym(self, meta, c):
        return self._e("sym", (str(c[0]),), meta)

    def num(self, meta, c):
        return self._e("num", (_number(c[0], self._s(meta)),), meta)

    def str(self, meta, c):
        return self._e("str", (self._string(c[0], meta),), meta)

    def _string(self, tok: Token, meta) -> str:
        """A string's text, which may not hold control characters: they would reach a
        terminal through tables and canonical forms (issue #13)."""
        text = tok[1:-1]
        if printable(text) != text:
            raise ArchSyntaxError("a string cannot hold control characters (tabs included)",
                                  self._s(meta), "write them out in words")
        return text

    def group(self, meta, c):
        return S.Group(c[0], self._s(meta))

    def join(self, meta, c):
        return S.Join(c[0], c[1], self._s(meta))

    def join_kind(self, meta, c):
        return str(c[0])

    def branches(self, meta, c):
        return list(c)

    def residual(self, meta, c):
        body, sc = c
        name, sbody = sc if sc else (None, None)
        return S.Residual(body, sbody, name, self._s(meta))

    def shortcut(self, meta, c):
        return (str(c[0]) if c[0] else None), c[1]

    def split(self, meta, c):
        return S.Split(c[0], c[1], self._s(meta))

    def gate(self, meta, c):
        return S.Gate(c[0], self._s(meta))

    def dense(self, meta, c):
        return S.Dense(c[0], self._s(meta))

    def brace(self, meta, c):
        return c[0]

    # ---- expressions ----
    def number(self, meta, c):
        return self._e("num", (_number(c[0], self._s(meta)),), meta)

    def var(self, meta, c):
        return self._e("var", (str(c[0]),), meta)

    def string(self, meta, c):
        return self._e("str", (self._string(c[0], meta),), meta)

    def call(self, meta, c):
        return self._e("call", (str(c[0]), tuple(x for x in c[1:] if x is not None)), meta)

    def list_lit(self, meta, c):
        return self._e("list", tuple(x for x in c if x is not None), meta)

    def listcomp(self, meta, c):
        """[element for a, b in iterable if condition]"""
        element, *names, iterable, condition = c
        return self._e("listcomp", (element, tuple(str(n) for n in names), iterable, condition),
                       meta)

    def numbers(self, meta, c):
        """pad=0,3: a list of numbers written without brackets"""
        spans = [_tok_span(self.file, self.text, t) for t in c]
        return self._e("list", tuple(S.Expr("num", (_number(t, span),), span)
                                     for t, span in zip(c, spans, strict=True)), meta)

    def axes(self, meta, c):
        """k=1x7: a list of integers, one per axis"""
        values = re.split("[x×]", str(c[0]))
        return self._e("list", tuple(S.Expr("num", (int(v),), self._s(meta)) for v in values),
                       meta)

    def index(self, meta, c):
        return self._e("index", (c[0], c[1]), meta)

    def ifelse(self, meta, c):
        return self._e("ifelse", (c[1], c[0], c[2]), meta)

    def or_(self, meta, c):
        return self._e("or", (c[0], c[1]), meta)

    def and_(self, meta, c):
        return self._e("and", (c[0], c[1]), meta)

    def not_(self, meta, c):
        return self._e("not", (c[0],), meta)

    def compare(self, meta, c):
        return self._e("binop", (str(c[1]), c[0], c[2]), meta)

    def binop(self, meta, c):
        return self._e("binop", (str(c[1]), c[0], c[2]), meta)

    def pow(self, meta, c):
        return self._e("binop", ("**", c[0], c[2]), meta)

    def neg(self, meta, c):
        return self._e("neg", (c[0],), meta)


_SCALE = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _number(tok, span: Span) -> int | float:
    """A number literal's value: K/M/G/T scale it; more than MAX_LITERAL_DIGITS digits, or
    too large for a float, is an error (Python's int() refuses 4,300 digits, with a
    ValueError of its own)."""
    s = str(tok)
    digits = sum(ch.isdigit() for ch in s)
    if digits > MAX_LITERAL_DIGITS:
        raise ArchSyntaxError(f"a number of {digits} digits", span,
                              exceeded("the digits of a number", MAX_LITERAL_DIGITS))
    scale = _SCALE.get(s[-1], 1)
    s = s.rstrip("KMGT")
    try:
        value: int | float = int(s) * scale
    except ValueError:
        value = float(s) * scale
        if not math.isfinite(value):
            raise ArchSyntaxError(f"{tok} is too large a number", span) from None
        if scale != 1 and value.is_integer():
            value = int(value)
    return value

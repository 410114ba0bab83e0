"""Text → syntax tree, with Lark (LALR) and positions on every node."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import syntax as S
from .brackets import PAIRS, unclosed
from .errors import ArchErrors, ArchSyntaxError, ErrorSink, Span

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
    "COMP_OP": "a comparison", "DOT": "`.`",
}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    # cache=True stores the analysed LALR tables on disk: building them is most of start-up time.
    return Lark(GRAMMAR.read_text(), parser="lalr", propagate_positions=True,
                maybe_placeholders=True, cache=True)


MAX_SYNTAX_ERRORS = 20


def parse(text: str, file: str = "<string>") -> S.Module:
    """Parse one file's text. Raises ArchErrors (syntax errors carry their location)."""
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        errors = _syntax_errors(exc, text, file)
        raise ArchErrors(_unclosed_first(errors, text, file)) from None
    sink = ErrorSink()
    items = _Build(file, text).build(tree)
    module = _group(items, file, sink)
    sink.check()
    return module


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
    """The first syntax error, and more: blank out the offending line and parse again, as
    long as that line opens no bracket it does not close (or the rest would be noise)."""
    errors = [_syntax_error(first, text, file)]
    lines = text.split("\n")
    exc: UnexpectedInput | None = first
    while exc is not None and len(errors) < MAX_SYNTAX_ERRORS:
        row = errors[-1].span.line - 1  # type: ignore[union-attr]
        if not 0 <= row < len(lines) - 1 or not _balanced(lines[row]):
            break
        lines[row] = " " * len(lines[row])
        try:
            _lark().parse("\n".join(lines))
            exc = None
        except UnexpectedInput as nxt:
            err = _syntax_error(nxt, text, file)
            if err.span.line <= row + 1:  # type: ignore[union-attr]
                break  # no progress: the trouble is not on that line alone
            errors.append(err)
            exc = nxt
    return errors


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


def _balanced(line: str) -> bool:
    code = line.split("#", 1)[0]
    return all(code.count(o) <= code.count(c) for o, c in ("()", "[]", "{}"))


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
    return ArchSyntaxError(msg, span, f"expected {expected}" if expected else _hint_for(text, span))


def _expected(names) -> str:
    words = sorted({_TERMINAL_WORDS.get(n, f"`{n.lower()}`" if n.isupper() else n) for n in names})
    if not words:
        return ""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _hint_for(text: str, span: Span) -> str | None:
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
        name, params, body = c
        return S.BlockDef(str(name), params or [], body, self._s(meta))

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
            return S.Expr("num", (int(d),), _tok_span(self.file, self.text, d))
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
        return str(tok), _tok_span(self.file, self.text, tok), None

    def keyword(self, meta, c):
        return c[0]

    def label_template(self, meta, c):
        return str(c[0]), self._s(meta), c[1]

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
        return self._e("num", (_number(c[0]),), meta)

    def str(self, meta, c):
        return self._e("str", (c[0][1:-1],), meta)

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

    def gate(self, meta, c):
        return S.Gate(c[0], self._s(meta))

    def dense(self, meta, c):
        return S.Dense(c[0], self._s(meta))

    def brace(self, meta, c):
        return c[0]

    # ---- expressions ----
    def number(self, meta, c):
        return self._e("num", (_number(c[0]),), meta)

    def var(self, meta, c):
        return self._e("var", (str(c[0]),), meta)

    def string(self, meta, c):
        return self._e("str", (c[0][1:-1],), meta)

    def call(self, meta, c):
        return self._e("call", (str(c[0]), tuple(x for x in c[1:] if x is not None)), meta)

    def list(self, meta, c):
        return self._e("list", tuple(x for x in c if x is not None), meta)

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


def _number(tok) -> int | float:
    s = str(tok)
    if s[-1] in _SCALE:
        value = _number(s[:-1]) * _SCALE[s[-1]]
        return int(value) if float(value).is_integer() else value
    try:
        return int(s)
    except ValueError:
        return float(s)

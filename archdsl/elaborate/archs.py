"""Architectures: derived ones (`arch d = c(k=7)`), parameters and their overrides, the
`input` line, and the warning for defaults no layer took."""

from __future__ import annotations

from typing import Any

from .. import syntax as S
from ..errors import (
    ArchError,
    ArchWarning,
    ErrorSink,
    NameError_,
    Span,
    UsageError,
    ValueError_,
    did_you_mean,
)
from ..expr import as_int, charge_copy, evaluate, evaluate_value, user_value
from ..formatter import spec_value
from ..ir import Graph, Node
from ..ops import OPS, OpShapeError
from .layers import check_size
from .scopes import Abort, Env, Scope, param_list


class ArchsMixin:
    """Elaborator's architecture level (its state is set up in elaborator.py)."""

    def arch(self, name: str, overrides: dict[str, Any]) -> Graph:
        decl = self.program.archs[name]
        span, chain, settings = decl.span, [name], self._overrides(overrides)
        while isinstance(decl, S.ArchAlias):  # arch d = c(k=7); arch c = b(...): outermost wins
            base = self._alias_args(decl, name)
            settings = {**base, **settings}
            target = self.program.archs.get(decl.target)
            if target is None:
                self.sink.add(NameError_(f"unknown architecture `{decl.target}`", decl.span,
                                         did_you_mean(decl.target, self.program.archs)))
                raise Abort
            if decl.target in chain:
                self.sink.add(ValueError_(
                    f"architecture `{decl.target}` is derived from itself "
                    f"({' → '.join(chain + [decl.target])})", decl.span))
                raise Abort
            chain.append(decl.target)
            decl = target
        graph = self._arch_def(decl, settings, name, span)
        graph.given = {k: graph.settings[k] for k in overrides if k in graph.settings}
        return graph

    def _overrides(self, given: dict[str, Any]) -> dict[str, Any]:
        values = {}
        for key, value in given.items():
            try:
                values[key] = user_value(value, f"the value of `{key}`")
            except ArchError as exc:
                self.sink.add(UsageError(exc.message, None, exc.hint))
        if len(values) < len(given):
            raise Abort
        return values

    def _alias_args(self, decl: S.ArchAlias, name: str) -> dict[str, Any]:
        values = {}
        for arg in decl.args:
            if arg.name is None:
                self.sink.add(ValueError_(
                    "arguments of a derived architecture are named", arg.span,
                    f"write `arch {name} = {decl.target}(name=value)`"))
                raise Abort
            values[arg.name] = _alias_value(arg, self.sink)
        return values

    def _arch_def(self, decl: S.ArchDef, overrides: dict[str, Any], name: str,
                  span: Span) -> Graph:
        known = {p.name for p in decl.params}
        for key in overrides:
            if key not in known:
                self.sink.add(UsageError(
                    f"architecture `{decl.name}` has no parameter `{key}`", span,
                    did_you_mean(key, known) or param_list(decl.params)))
        values = self._bind_params(decl.params, {k: v for k, v in overrides.items()
                                                 if k in known}, {}, span, decl.name)
        self._check_kinds(decl, overrides, values)
        self.graph = Graph(name, dict(values), span=span)
        env = Env(dict(values), {})
        inputs = [s for s in decl.stmts if isinstance(s, S.Input)]
        if not inputs:
            self.sink.add(ValueError_(f"architecture `{decl.name}` has no `input` line", decl.span,
                                      "add e.g. `input 3x224x224` after the arch line"))
            raise Abort
        for extra in inputs[1:]:
            self.sink.add(ValueError_("a second `input` line", extra.span,
                                      notes=[("the first is here", inputs[0].span)]))
        first_item = next((s for s in decl.stmts if isinstance(s, S.Item)), None)
        if first_item is not None and decl.stmts.index(first_item) < decl.stmts.index(inputs[0]):
            self.sink.add(ValueError_("the `input` line must come before the first layer",
                                      inputs[0].span))
        cur = self._input(inputs[0], env)
        stmts = [s for s in decl.stmts if not isinstance(s, S.Input)]
        top = Scope("")
        top.names["input"] = None
        cur = self._stmts(stmts, top, self.graph.structure, cur, env)
        self.graph.output_id = cur
        for nid, readers in self.auto_bias.items():  # bias=auto, no norm attached
            self.graph.node(nid).attrs["bias"] = not (
                readers and all(OPS[op].cancels_bias for op in readers))
        self._warn_unused_defaults()
        return self.graph

    def _warn_unused_defaults(self) -> None:
        """A `defaults` attribute (or one written on a block call) that no layer took: a
        misspelt intent (`eps` where no layer has a norm) that would otherwise be silent."""
        for key, attr in self.seen_defaults.items():
            if key not in self.used_defaults:
                self.graph.warnings.append(ArchWarning(
                    f"`{attr.name}={_shown(attr.value)}` applies to no layer", attr.span,
                    f"no layer after it, in this body or the blocks it calls, takes "
                    f"`{attr.name}` from defaults; remove it, or write it on the layers "
                    "that should have it"))

    def _check_kinds(self, decl: S.ArchDef, given: dict[str, Any],
                     values: dict[str, Any]) -> None:
        """A parameter whose default is a number (or true/false) takes one: `--set alpha=abc`
        is one error here, not one at every use of `alpha`."""
        bad = False
        for p in decl.params:
            if p.name not in given or p.default is None:
                continue
            try:
                default = evaluate_value(p.default, values)
            except ArchError:
                continue
            want, got = _kind(default), _kind(given[p.name])
            if want in ("a number", "true or false") and got != want:
                self.sink.add(UsageError(  # a value from --set or Python: not in the file
                    f"`{p.name}` takes {want} (its default is {spec_value(default)}), "
                    f"got {spec_value(given[p.name])}", None,
                    f"e.g. --set {p.name}={spec_value(default)}",
                    notes=[(f"`{p.name}` is a parameter of `{decl.name}`", p.span)]))
                bad = True
        if bad:
            raise Abort

    def _input(self, stmt: S.Input, env: Env) -> int:
        dims = []
        for d in stmt.dims:
            try:
                dims.append(as_int(evaluate(d, env.values), "an input dimension", d.span))
            except ArchError as exc:
                self.sink.add(exc)
                raise Abort from None
        try:
            check_size(tuple(dims), "the input")
        except OpShapeError as exc:
            self.sink.add(ValueError_(exc.message, stmt.span, exc.hint))
            raise Abort from None
        node = Node(0, "input", "input", {"shape": tuple(dims)}, tuple(dims), stmt.span, 0)
        self.graph.add_node(node, [])
        return 0

    def _bind_params(self, params: list[S.Param], given: dict[str, Any],
                     env: dict[str, Any], span: Span, owner: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for p in params:
            if p.name in given:
                values[p.name] = given[p.name]
            elif p.default is not None:
                try:
                    charge_copy(env)
                    values[p.name] = evaluate_value(p.default, {**env, **values})
                except ArchError as exc:
                    self.sink.add(exc)
                    raise Abort from None
            else:
                self.sink.add(ValueError_(f"`{owner}` needs a value for `{p.name}`", span,
                                          notes=[(f"`{p.name}` is declared here", p.span)]))
                raise Abort
        return values


def _shown(value: S.Expr) -> str:
    """An attribute's value as written, for messages."""
    span = value.span
    line = span.source_line()
    if span.end_line == span.line and line:
        return line[span.col - 1:span.end_col - 1]
    return "..."


def _alias_value(arg: S.Arg, sink: ErrorSink) -> Any:
    if arg.name is None:
        return None
    expr = arg.value
    if expr.op == "var":  # a bare word names a value: vgg_e(norm=bn)
        expr = S.Expr("sym", expr.args, expr.span)
    try:
        return {arg.name: evaluate(expr, {})}[arg.name]
    except ArchError as exc:
        sink.add(exc)
        return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return "a list" if isinstance(value, list) else "a word"

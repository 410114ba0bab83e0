"""Syntax tree → typed graph IR: blocks, parameters, repetition and defaults are expanded,
every node gets its scoped name, and shapes are inferred as nodes are made (so `{in_channels}`
style questions can be answered, and errors name both the producer and the consumer)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import syntax as S
from .errors import (
    ArchError,
    ArchWarning,
    ErrorSink,
    NameError_,
    ShapeError,
    Span,
    UsageError,
    ValueError_,
    did_you_mean,
)
from .expr import as_int, evaluate, evaluate_value
from .formatter import spec_value
from .ir import Graph, JoinRef, Node, NodeRef, ScopeRef
from .ops import (
    ACTIVATIONS,
    NORMS,
    OPS,
    REQUIRED,
    AttrSpec,
    OpDef,
    OpShapeError,
    fmt_shape,
    lookup,
    spellings,
    syntax_names,
)
from .program import Program

MAX_BLOCK_DEPTH = 64
MAX_NODES = 2_000_000
_KERNEL_SUFFIX = re.compile(r"^([A-Za-z_]+?)(\d+)$")
ATTACH_KEYS = ("norm", "act")
_ALL_ATTRS = sorted({a for op in OPS.values() for a in op.attrs} | set(ATTACH_KEYS))


class _Abort(Exception):
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
    defaults: dict[str, tuple[S.Expr, dict[str, Any]]]  # attr → (expr, env it is evaluated in)
    calls: tuple[str, ...] = ()  # the blocks being elaborated, outermost first

    def with_values(self, extra: dict[str, Any]) -> Env:
        return Env({**self.values, **extra}, self.defaults, self.calls)


def _repetition(env: Env, item: S.Item, i: int) -> Env:
    """What the k-th copy of a repeated item (`x N`) sees: `i` is its index, 0 to N-1, in its
    arguments, attributes and label template (`denselayer{i + 1}`); an outer `i` is hidden."""
    return env if item.repeat is None else env.with_values({"i": i})


class _CallSink:
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


class Elaborator:
    def __init__(self, program: Program, sink: ErrorSink) -> None:
        self.program, self.sink = program, _CallSink(sink)

    # ------------------------------------------------------------------ architectures
    def arch(self, name: str, overrides: dict[str, Any]) -> Graph:
        decl = self.program.archs[name]
        span, chain, settings = decl.span, [name], dict(overrides)
        while isinstance(decl, S.ArchAlias):  # arch d = c(k=7); arch c = b(...): outermost wins
            base = self._alias_args(decl, name)
            settings = {**base, **settings}
            target = self.program.archs.get(decl.target)
            if target is None:
                self.sink.add(NameError_(f"unknown architecture `{decl.target}`", decl.span,
                                         did_you_mean(decl.target, self.program.archs)))
                raise _Abort
            if decl.target in chain:
                self.sink.add(ValueError_(
                    f"architecture `{decl.target}` is derived from itself "
                    f"({' → '.join(chain + [decl.target])})", decl.span))
                raise _Abort
            chain.append(decl.target)
            decl = target
        graph = self._arch_def(decl, settings, name, span)
        graph.given = {k: graph.settings[k] for k in overrides if k in graph.settings}
        return graph

    def _alias_args(self, decl: S.ArchAlias, name: str) -> dict[str, Any]:
        values = {}
        for arg in decl.args:
            if arg.name is None:
                self.sink.add(ValueError_(
                    "arguments of a derived architecture are named", arg.span,
                    f"write `arch {name} = {decl.target}(name=value)`"))
                raise _Abort
            values[arg.name] = _alias_value(arg, self.sink)
        return values

    def _arch_def(self, decl: S.ArchDef, overrides: dict[str, Any], name: str,
                  span: Span) -> Graph:
        known = {p.name for p in decl.params}
        for key in overrides:
            if key not in known:
                self.sink.add(UsageError(
                    f"architecture `{decl.name}` has no parameter `{key}`", span,
                    did_you_mean(key, known) or _param_list(decl.params)))
        values = self._bind_params(decl.params, {k: v for k, v in overrides.items()
                                                 if k in known}, {}, span, decl.name)
        self._check_kinds(decl, overrides, values)
        self.graph = Graph(name, dict(values), span=span)
        env = Env(dict(values), {})
        inputs = [s for s in decl.stmts if isinstance(s, S.Input)]
        if not inputs:
            self.sink.add(ValueError_(f"architecture `{decl.name}` has no `input` line", decl.span,
                                      "add e.g. `input 3x224x224` after the arch line"))
            raise _Abort
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
        return self.graph

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
            raise _Abort

    def _input(self, stmt: S.Input, env: Env) -> int:
        dims = []
        for d in stmt.dims:
            try:
                dims.append(as_int(evaluate(d, env.values), "an input dimension", d.span))
            except ArchError as exc:
                self.sink.add(exc)
                raise _Abort from None
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
                    values[p.name] = evaluate_value(p.default, {**env, **values})
                except ArchError as exc:
                    self.sink.add(exc)
                    raise _Abort from None
            else:
                self.sink.add(ValueError_(f"`{owner}` needs a value for `{p.name}`", span,
                                          notes=[(f"`{p.name}` is declared here", p.span)]))
                raise _Abort
        return values

    # ------------------------------------------------------------------ statements
    def _stmts(self, stmts: list, scope: Scope, items: list, cur: int, env: Env) -> int:
        for stmt in stmts:
            try:
                if isinstance(stmt, S.Defaults):
                    env = self._defaults(stmt, env)
                elif isinstance(stmt, S.Let):
                    env = self._let(stmt, env)
                elif isinstance(stmt, S.Budget):
                    self.graph.budgets.append((stmt.expr, dict(env.values)))
                elif isinstance(stmt, S.Item):
                    cur = self._item(stmt, scope, items, cur, env)
            except _Abort:
                raise
            except ArchError as exc:
                self.sink.add(exc)
                if isinstance(stmt, S.Item):
                    cur = self._unknown(cur, stmt.span)
        return cur

    def _unknown(self, cur: int, span: Span) -> int:
        """What follows an item that failed: a stand-in whose shape is unknown, so that no
        layer after it is shape-checked against a wrong guess (a misspelt `conv3-32` that
        was simply left out would make every later shape look wrong). The item's own error
        is reported, so this graph is never returned; `input` is the op that needs no
        inputs, attributes or lowering."""
        nid = self.graph.node_count
        self.graph.add_node(Node(nid, f"<unknown {nid}>", "input", {"shape": None}, None,
                                 span, nid), [cur])
        return nid

    def _let(self, stmt: S.Let, env: Env) -> Env:
        try:
            return env.with_values({stmt.name: evaluate_value(stmt.value, env.values)})
        except ArchError as exc:  # what follows depends on the name: stop here, not at each use
            self.sink.add(exc)
            raise _Abort from None

    def _defaults(self, stmt: S.Defaults, env: Env) -> Env:
        new = dict(env.defaults)
        for attr in stmt.attrs:
            if attr.name not in _ALL_ATTRS:
                self.sink.add(NameError_(f"no op has an attribute `{attr.name}`", attr.span,
                                         did_you_mean(attr.name, _ALL_ATTRS)))
                continue
            new[attr.name] = (attr.value, env.values)
        return Env(env.values, new, env.calls)

    def _body(self, body: S.Body, scope: Scope, items: list, cur: int, env: Env) -> int:
        return self._stmts(body.stmts, scope, items, cur, env)

    def _item(self, item: S.Item, scope: Scope, items: list, cur: int, env: Env) -> int:
        count = 1
        if item.repeat is not None:
            count = as_int(evaluate(item.repeat, env.values), "a repeat count", item.repeat.span,
                           minimum=0)
            if count > MAX_NODES:
                raise ValueError_(f"a repeat count of {count:,} makes more than {MAX_NODES:,} "
                                  "nodes", item.repeat.span)
        atom = item.atom
        single = item.repeat is None
        if count == 0:  # `x{0}`: the item is not there at all, its name included
            return cur
        if item.label_template is not None:
            return self._templated(item, count, scope, items, cur, env)
        if item.label is None:
            for i in range(count):
                cur = self._atom(atom, None, scope, items, cur, _repetition(env, item, i))
            return cur
        if single and (isinstance(atom, (S.Layer, S.Join, S.Residual, S.Gate, S.Dense))):
            # the label names the layer (or block instance, or join node) itself
            return self._atom(atom, (item.label, item.label_span), scope, items, cur, env)
        full = scope.claim(item.label, item.label_span, self.sink)
        sub, sub_items = Scope(full + "."), []
        for i in range(count):
            cur = self._atom(atom, None, sub, sub_items, cur, _repetition(env, item, i))
        items.append(ScopeRef(item.label, sub_items))
        return cur

    def _templated(self, item: S.Item, count: int, scope: Scope, items: list, cur: int,
                   env: Env) -> int:
        """`denselayer{i + 1}: dense_layer(32) x6` names each repetition on its own."""
        for i in range(count):
            env_i = env.with_values({"i": i})
            suffix = evaluate(item.label_template, env_i.values)
            if isinstance(suffix, float) and suffix.is_integer():
                suffix = int(suffix)
            label = f"{item.label}{suffix}"
            if not label.isidentifier():
                raise ValueError_(f"`{label}` is not a valid name", item.label_span)
            atom = item.atom
            if isinstance(atom, S.Layer) and atom.name not in self.program.blocks or \
                    isinstance(atom, (S.Join, S.Residual, S.Gate, S.Dense)):
                cur = self._atom(atom, (label, item.label_span), scope, items, cur, env_i)
            else:  # a block call or a group: a scope per repetition
                full = scope.claim(label, item.label_span, self.sink)
                sub_items: list = []
                if isinstance(atom, S.Layer):
                    cur = self._block_call(atom, (label, item.label_span), scope, items, cur,
                                           env_i, claimed=full)
                    continue
                cur = self._atom(atom, None, Scope(full + "."), sub_items, cur, env_i)
                items.append(ScopeRef(label, sub_items))
        return cur

    def _atom(self, atom, label, scope: Scope, items: list, cur: int, env: Env) -> int:
        if isinstance(atom, S.Layer):
            if atom.name in self.program.blocks:
                return self._block_call(atom, label, scope, items, cur, env)
            return self._layer(atom, label, scope, items, cur, env)
        if isinstance(atom, S.Group):
            return self._body(atom.body, scope, items, cur, env)
        if isinstance(atom, S.Residual):
            return self._residual(atom, label, scope, items, cur, env)
        if isinstance(atom, S.Join):
            return self._join(atom.kind, atom.branches, label, atom.span, scope, items, cur, env)
        if isinstance(atom, S.Gate):
            empty = S.Body([], atom.span)
            return self._join("mul", [empty, atom.body], label, atom.span, scope, items, cur, env)
        empty = S.Body([], atom.span)  # dense
        return self._join("concat", [empty, atom.body], label, atom.span, scope, items, cur, env)

    # ------------------------------------------------------------------ joins
    def _join(self, kind: str, branches: list[S.Body], label, span: Span, scope: Scope,
              items: list, cur: int, env: Env) -> int:
        if len(branches) < 2:
            raise ValueError_(f"`{kind}` needs at least two branches separated by `|`", span,
                              f"an empty branch is the identity: {kind} {{ | ... }}")
        outs, refs = [], []
        for br in branches:
            br_items: list = []
            outs.append(self._body(br, scope, br_items, cur, env))
            refs.append(br_items)
        nid = self._emit(kind, {}, outs, self._name(label, scope), span, None)
        items.append(JoinRef(nid, refs))
        return nid

    def _residual(self, res: S.Residual, label, scope: Scope, items: list, cur: int,
                  env: Env) -> int:
        body_items: list = []
        out = self._body(res.body, scope, body_items, cur, env)
        shortcut_items: list = []
        short = cur
        if res.shortcut is not None:
            a, b = self.graph.node(out).shape, self.graph.node(cur).shape
            if a is None or b is None or a != b:  # option B: project only when the shape changes
                sc_label = res.shortcut_name or "shortcut"
                full = scope.claim(sc_label, res.span, self.sink)
                sub_items: list = []
                short = self._body(res.shortcut, Scope(full + "."), sub_items, cur, env)
                shortcut_items = [ScopeRef(sc_label, sub_items)]
        hint = ("the shortcut must make the shape the body makes" if short != cur else
                "give the residual a projection (`residual { ... } shortcut { conv1-N/S }`), "
                "used when the body changes the shape")
        nid = self._emit("add", {}, [out, short], self._name(label, scope), res.span, None,
                         hint)
        items.append(JoinRef(nid, [body_items, shortcut_items]))
        return nid

    # ------------------------------------------------------------------ blocks
    def _block_call(self, call: S.Layer, label, scope: Scope, items: list, cur: int,
                    env: Env, claimed: str | None = None) -> int:
        block = self.program.blocks[call.name]
        if call.name in env.calls:  # it could only stop by accident: refuse it at once
            chain = " → ".join(env.calls[env.calls.index(call.name):] + (call.name,))
            raise ValueError_(f"block `{call.name}` calls itself ({chain})", call.span,
                              "blocks cannot be recursive; repeat with `x N` instead")
        if len(env.calls) >= MAX_BLOCK_DEPTH:
            raise ValueError_(f"blocks nest more than {MAX_BLOCK_DEPTH} deep", call.span)
        if call.channels is not None or call.stride is not None:
            example = f"{call.name}({_param_list(block.params, bare=True)})"
            raise ValueError_(f"`{call.name}` is a block: pass its parameters in parentheses",
                              call.span, f"e.g. {example}")
        given = self._block_args(call, block, env)
        values = self._bind_params(block.params, given, env.values, call.span, call.name)
        defaults = dict(env.defaults)
        for attr in call.attrs:  # attributes on a block call become defaults inside it
            if attr.name not in _ALL_ATTRS:
                raise NameError_(f"no op has an attribute `{attr.name}`", attr.span,
                                 did_you_mean(attr.name, _ALL_ATTRS))
            defaults[attr.name] = (attr.value, env.values)
        inner = Env({**env.values, **values}, defaults, env.calls + (call.name,))
        if claimed is not None:
            name, short = claimed, label[0]
        elif label is None:
            name = scope.claim(scope.next_index(), None, self.sink)
            short = name.rsplit(".", 1)[-1]
        else:
            short = label[0]
            name = scope.claim(label[0], label[1], self.sink)
        sub_items: list = []
        self.sink.calls.append((name, call.name, call.span))
        try:
            cur = self._body(block.body, Scope(name + "."), sub_items, cur, inner)
        finally:
            self.sink.calls.pop()
        items.append(ScopeRef(short, sub_items))
        return cur

    def _block_args(self, call: S.Layer, block: S.BlockDef, env: Env) -> dict[str, Any]:
        names = [p.name for p in block.params]
        given: dict[str, Any] = {}
        for i, arg in enumerate(call.args or []):
            if arg.name is None:
                if i >= len(names):
                    got = sum(a.name is None for a in call.args or [])
                    raise ValueError_(f"`{call.name}` takes {_count(len(names), 'argument')}"
                                      f", got {got}", arg.span,
                                      f"{call.name}({_param_list(block.params, bare=True)})")
                key = names[i]
            elif arg.name not in names:
                raise NameError_(f"block `{call.name}` has no parameter `{arg.name}`", arg.span,
                                 did_you_mean(arg.name, names) or _param_list(block.params))
            else:
                key = arg.name
            if key in given:
                raise ValueError_(f"`{key}` is given twice", arg.span)
            given[key] = evaluate_value(arg.value, env.values)
        return given

    # ------------------------------------------------------------------ layers
    def _layer(self, layer: S.Layer, label, scope: Scope, items: list, cur: int,
               env: Env) -> int:
        op, kernel = self._resolve(layer)
        attrs, attach = self._layer_attrs(layer, op, kernel, env)
        in_shape = self.graph.node(cur).shape
        if op.advice is not None and in_shape is not None:
            self._advise(op.advice(attrs, [in_shape]), layer.span)
        op_name = op.name
        if op.prepare is not None and in_shape is not None:
            try:
                op_name, attrs = op.prepare(dict(attrs), [in_shape])
            except OpShapeError as exc:
                raise self._shape_error(exc, layer.span, [cur]) from None
        else:
            op_name = op.lowers_to or op.name
        primary_label = label[0] if label else scope.next_index()
        clash = primary_label in scope.names  # then its bn/relu names clash too: say it once
        name = scope.claim(primary_label, label[1] if label else None, self.sink)
        nid = self._emit(op_name, attrs, [cur], name, layer.span, None)
        items.append(NodeRef(nid))
        for key in ATTACH_KEYS:
            kind = attach.get(key)
            if kind is None:
                continue
            sub_label = _attached_label(primary_label, kind, scope, label is not None)
            sub_name = scope.claim(sub_label, layer.span, self.sink, report=not clash)
            sub_attrs = _defaults_of(OPS[kind])
            cur_sub = self._emit(kind, sub_attrs, [items[-1].id], sub_name, layer.span, nid)
            items.append(NodeRef(cur_sub))
        return items[-1].id

    def _advise(self, advice: tuple[str, str] | None, span: Span) -> None:
        """A warning on the graph, once per place (a block called ten times warns once)."""
        if advice is None:
            return
        where = (span.file, span.line, span.col) if span else None
        if all((w.message, w.span and (w.span.file, w.span.line, w.span.col)) !=
               (advice[0], where) for w in self.graph.warnings):
            self.graph.warnings.append(self.sink.located(ArchWarning(advice[0], span,
                                                                     advice[1])))

    def _resolve(self, layer: S.Layer) -> tuple[OpDef, int | None]:
        op = lookup(layer.name)
        if op is not None and op.in_syntax:
            return op, None
        m = _KERNEL_SUFFIX.match(layer.name)
        if m:
            op = lookup(m.group(1))
            if op is not None and op.in_syntax and op.kernel:
                return op, int(m.group(2))
            if op is not None and op.in_syntax:
                raise ValueError_(f"`{m.group(1)}` takes no kernel size", layer.name_span,
                                  f"write `{m.group(1)}` without the digits")
        raise NameError_(f"unknown op or block `{layer.name}`", layer.name_span,
                         _suggest(layer.name, self.program.blocks))

    def _layer_attrs(self, layer: S.Layer, op: OpDef, kernel: int | None,
                     env: Env) -> tuple[dict[str, Any], dict[str, str | None]]:
        raw: dict[str, tuple[Any, Span, dict]] = {}  # attr → (expr or value, span, env)

        def put(key: str, value, span: Span, where: dict) -> None:
            if key in raw:
                raise ValueError_(f"`{key}` is given twice", span)
            raw[key] = (value, span, where)

        if kernel is not None:
            put(op.kernel, S.Expr("num", (kernel,), layer.name_span), layer.name_span, {})
        for part, slot, what in ((layer.channels, op.dash, "-N count"),
                                 (layer.stride, op.slash, "/S stride")):
            if part is not None:
                if slot is None:
                    raise ValueError_(f"`{layer.name}` takes no {what}", part.span)
                put(slot, part, part.span, env.values)
        allowed = set(op.attrs) | (set(ATTACH_KEYS) if op.attaches else set())
        for i, arg in enumerate(layer.args or []):
            if arg.name is None:
                if i >= len(op.positional):
                    got = sum(a.name is None for a in layer.args or [])
                    raise ValueError_(f"`{layer.name}` takes "
                                      f"{_count(len(op.positional), 'positional argument')}"
                                      f", got {got}", arg.span,
                                      _attr_hint(op) if op.positional else "use name=value")
                put(op.positional[i], arg.value, arg.span, env.values)
            else:
                self._check_attr_name(arg.name, allowed, op, arg.span)
                put(arg.name, arg.value, arg.span, env.values)
        for attr in layer.attrs:
            self._check_attr_name(attr.name, allowed, op, attr.span)
            put(attr.name, attr.value, attr.span, env.values)
        from_defaults = set(op.attrs) | set(op.default_attach if op.attaches else ())
        for key, (expr, where) in env.defaults.items():
            if key in from_defaults and key not in raw:
                raw[key] = (expr, expr.span, where)
        values: dict[str, Any] = {}
        attach: dict[str, str | None] = {}
        for key in sorted(allowed):
            if key in raw:
                expr, span, where = raw[key]
                value = evaluate(expr, where) if isinstance(expr, S.Expr) else expr
                if key in ATTACH_KEYS:
                    attach[key] = _attach_value(key, value, span)
                else:
                    values[key] = _convert(op.attrs[key], value, key, span, layer.name)
            elif key in op.attrs:
                spec = op.attrs[key]
                if spec.default is REQUIRED:
                    raise ValueError_(f"`{layer.name}` needs {_describe(key, op)}", layer.span,
                                      _attr_hint(op))
                values[key] = spec.default
        if values.get("bias") == "auto":  # a bias is redundant before a normalization
            values["bias"] = attach.get("norm") is None
        return values, attach

    def _check_attr_name(self, name: str, allowed: set[str], op: OpDef, span: Span) -> None:
        if name not in allowed:
            raise NameError_(f"`{op.name}` has no attribute `{name}`", span,
                             did_you_mean(name, allowed) or _attr_hint(op))

    # ------------------------------------------------------------------ nodes
    def _name(self, label, scope: Scope) -> str:
        if label is None:
            return scope.claim(scope.next_index(), None, self.sink)
        return scope.claim(label[0], label[1], self.sink)

    def _emit(self, op: str, attrs: dict, inputs: list[int], name: str, span: Span,
              layer: int | None, hint: str | None = None) -> int:
        nid = self.graph.node_count
        if nid >= MAX_NODES:
            self.sink.add(ValueError_(f"the network has more than {MAX_NODES} nodes", span))
            raise _Abort
        shapes = [self.graph.node(i).shape for i in inputs]
        shape = None
        if all(s is not None for s in shapes):
            try:
                shape = tuple(OPS[op].shape(attrs, shapes))  # type: ignore[arg-type]
            except OpShapeError as exc:
                self.sink.add(self._shape_error(exc, span, inputs, hint))
        node = Node(nid, name, op, attrs, shape, span, nid if layer is None else layer)
        self.graph.add_node(node, inputs)
        return nid

    def _shape_error(self, exc: OpShapeError, span: Span, inputs: list[int],
                     hint: str | None = None) -> ShapeError:
        notes = []
        for i in inputs:
            producer = self.graph.node(i)
            if producer.op == "input":
                what = "the input"
            elif producer.label.isdigit():
                what = f"this {producer.op} (`{producer.name}`)"
            else:
                what = f"`{producer.name}`"
            notes.append((f"{what} makes {fmt_shape(producer.shape)}", producer.span))
        return ShapeError(exc.message, span, hint or exc.hint, notes)


# ---------------------------------------------------------------------- helpers

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


def _attached_label(primary: str, kind: str, scope: Scope, labelled: bool) -> str:
    """Name the norm/act emitted after a layer, following torchvision's conventions:
    an unlabelled layer's parts take the next sequence indices (features.0, .1, .2); `conv1`
    gives `bn1`/`relu1` (ResNet); a numeric label k gives k+1, k+2; any other label L gives
    L_bn, L_relu."""
    if not labelled:
        return scope.next_index()
    if primary.isdigit():
        return str(scope.counter)
    m = re.match(r"^conv(.*)$", primary)
    if m:
        return kind + m.group(1)
    return f"{primary}_{kind}"


def _attach_value(key: str, value: Any, span: Span) -> str | None:
    choices = NORMS if key == "norm" else ACTIVATIONS
    if value in (None, False, "none"):
        return None
    name = str(value).lower()
    op = lookup(name)
    if op is None or op.name not in choices:
        words = [w for w in spellings(choices) if w.isidentifier()]  # attribute values
        raise ValueError_(f"`{key}={value}` is not one of: none, {', '.join(words)}", span,
                          did_you_mean(str(value), words))
    return op.name


def _convert(spec: AttrSpec, value: Any, key: str, span: Span, owner: str) -> Any:
    what = f"`{key}` of `{owner}`"
    if spec.type == "int":
        if value is None and spec.default is None:
            return None
        minimum = None if spec.minimum is None else int(spec.minimum)
        return as_int(value, what, span, minimum=minimum)
    if spec.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError_(f"{what} must be a number, got {value!r}", span)
        if spec.minimum is not None and value < spec.minimum:
            raise ValueError_(f"{what} must be at least {spec.minimum}, got {value}", span)
        if spec.maximum is not None and value > spec.maximum:
            raise ValueError_(f"{what} must be at most {spec.maximum}, got {value}", span)
        return float(value)
    if spec.type == "bias" and value == "auto":
        return value
    if spec.type in ("bool", "bias"):
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        raise ValueError_(f"{what} must be true or false, got {value!r}", span)
    if spec.type == "pad":
        if value in ("same", "valid"):
            return value
        if isinstance(value, str):
            raise ValueError_(f"{what} must be same, valid or a number, got {value!r}", span,
                              did_you_mean(value, ["same", "valid"]))
        return as_int(value, what, span, minimum=0)
    if spec.type == "pair":
        return _pair(spec, value, what, span)
    if spec.type == "choice":
        if value not in spec.choices:
            raise ValueError_(f"{what} must be one of {', '.join(spec.choices)}, got {value!r}",
                              span, did_you_mean(str(value), spec.choices))
        return value
    raise ValueError_(f"{what} cannot be set", span)


def _pair(spec: AttrSpec, value: Any, what: str, span: Span) -> int | tuple[int, int]:
    """A size per axis: `7` or `[7, 7]` (kept as 7), `[7, 9]` (height, width)."""
    minimum = None if spec.minimum is None else int(spec.minimum)
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError_(f"{what} must be one number or [height, width], got "
                              f"{len(value)} values", span)
        h, w = (as_int(v, what, span, minimum=minimum) for v in value)
        return h if h == w else (h, w)
    return as_int(value, what, span, minimum=minimum)


def _defaults_of(op: OpDef) -> dict[str, Any]:
    return {k: s.default for k, s in op.attrs.items() if s.default is not REQUIRED}


def _describe(key: str, op: OpDef) -> str:
    if key == op.dash:
        return f"a -N count ({key})"
    if key == op.kernel:
        return f"a kernel size ({key})"
    return f"`{key}`"


def _attr_hint(op: OpDef) -> str:
    parts = [op.name + ("K" if op.kernel else "") + ("-N" if op.dash else "")
             + ("/S" if op.slash else "")]
    if op.positional:
        parts[0] += "(" + ", ".join(op.positional) + ")"
    names = [k for k in op.attrs if k not in (op.kernel, op.dash, op.slash)]
    if op.attaches:
        names += list(ATTACH_KEYS)
    if names:
        parts.append("attributes: " + ", ".join(names))
    return f"{op.name} is written {parts[0]}" + (f"; {parts[1]}" if len(parts) > 1 else "")


def _suggest(name: str, blocks) -> str | None:
    m = _KERNEL_SUFFIX.match(name)
    candidates = syntax_names() + list(blocks)
    if m:
        hint = did_you_mean(m.group(1), [n for n in syntax_names()
                                         if (op := lookup(n)) is not None and op.kernel])
        if hint:
            return hint.replace("`?", f"{m.group(2)}`?").replace("` or `", f"{m.group(2)}` or `")
    return did_you_mean(name, candidates)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return "a list" if isinstance(value, list) else "a word"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _param_list(params: list[S.Param], bare: bool = False) -> str:
    if not params:
        return "it takes no parameters"
    names = ", ".join(p.name for p in params)
    return names if bare else f"parameters: {names}"

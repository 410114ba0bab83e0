"""Syntax tree → typed graph IR: blocks, parameters, repetition and defaults are expanded,
every node gets its scoped name, and shapes are inferred as nodes are made (so `{in_channels}`
style questions can be answered, and errors name both the producer and the consumer)."""

from __future__ import annotations

import itertools
import math
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
from .expr import (
    as_int,
    charge,
    charge_copy,
    evaluate,
    evaluate_value,
    user_value,
)
from .formatter import spec_value
from .ir import Graph, JoinRef, Node, NodeRef, ScopeRef
from .layer_attrs import Default, count, gather, known_attrs
from .limits import MAX_DIM, MAX_ELEMENTS, MAX_NESTING, MAX_NODES, MAX_STEPS, exceeded
from .ops import OPS, OpDef, OpShapeError, chunk_bounds, features, fmt_shape, lookup, syntax_names
from .plugins import PluginError, lookup_or_load
from .program import Program

MAX_BLOCK_DEPTH = 64
# conv3, maxpool2, conv1x7 (height × width): the kernel as a suffix of the op's name
_KERNEL_SUFFIX = re.compile(r"^([A-Za-z_]+?)(\d+)(?:x(\d+))?$")


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
    defaults: dict[str, Default]  # attribute → its value in force
    calls: tuple[str, ...] = ()  # the blocks being elaborated, outermost first

    def with_values(self, extra: dict[str, Any]) -> Env:
        charge_copy(self.values)
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
        self.depth = 0  # bodies open inside one another (MAX_NESTING)
        self.repeats: list[tuple[Span, int] | None] = []  # the repetitions being elaborated
        # the `defaults` attributes met (by id), and those some layer took: the rest apply
        # to nothing, which is worth a warning
        self.seen_defaults: dict[int, S.Attr] = {}
        self.used_defaults: set[int] = set()
        # `bias=auto` with no norm attached: a bias unless every reader cancels it (a separate
        # batch norm); node id → the ops that read it, settled once the graph is made
        self.auto_bias: dict[int, list[str]] = {}

    @staticmethod
    def _step(span: Span) -> None:
        """Charge one statement elaborated to the work budget (expr.Meter, MAX_STEPS): work
        is bounded even where it makes no nodes (`((relu x0) x1999999) x1999999`)."""
        charge(1, span)

    # ------------------------------------------------------------------ architectures
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

    def _overrides(self, given: dict[str, Any]) -> dict[str, Any]:
        values = {}
        for key, value in given.items():
            try:
                values[key] = user_value(value, f"the value of `{key}`")
            except ArchError as exc:
                self.sink.add(UsageError(exc.message, None, exc.hint))
        if len(values) < len(given):
            raise _Abort
        return values

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
            raise _Abort

    def _input(self, stmt: S.Input, env: Env) -> int:
        dims = []
        for d in stmt.dims:
            try:
                dims.append(as_int(evaluate(d, env.values), "an input dimension", d.span))
            except ArchError as exc:
                self.sink.add(exc)
                raise _Abort from None
        try:
            _check_size(tuple(dims), "the input")
        except OpShapeError as exc:
            self.sink.add(ValueError_(exc.message, stmt.span, exc.hint))
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
                    charge_copy(env)
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
            self._step(stmt.span)
            try:
                if isinstance(stmt, S.Defaults):
                    env = self._defaults(stmt, env)
                elif isinstance(stmt, S.Let):
                    env = self._let(stmt, env)
                elif isinstance(stmt, S.Budget):
                    charge_copy(env.values)
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
            if attr.name not in known_attrs():
                self.sink.add(NameError_(f"no op has an attribute `{attr.name}`", attr.span,
                                         did_you_mean(attr.name, known_attrs())))
                continue
            new[attr.name] = self._default(attr, env.values)
        return Env(env.values, new, env.calls)

    def _default(self, attr: S.Attr, values: dict[str, Any]) -> Default:
        self.seen_defaults.setdefault(id(attr), attr)
        return Default(attr.value, values, attr)

    def _body(self, body: S.Body, scope: Scope, items: list, cur: int, env: Env) -> int:
        """A bracketed body (a group, a branch, a residual, a block's): every nesting passes
        here, so MAX_NESTING bounds the recursion of this pass and of every later one."""
        if self.depth >= MAX_NESTING:
            self.sink.add(ValueError_(f"blocks, groups and joins nest more than {MAX_NESTING} "
                                      "deep here", body.span,
                                      exceeded("nesting of blocks, groups and joins",
                                               MAX_NESTING)))
            raise _Abort
        self.depth += 1
        try:
            return self._stmts(body.stmts, scope, items, cur, env)
        finally:
            self.depth -= 1

    def _item(self, item: S.Item, scope: Scope, items: list, cur: int, env: Env) -> int:
        count = 1
        if item.repeat is not None:
            count = as_int(evaluate(item.repeat, env.values), "a repeat count", item.repeat.span,
                           minimum=0)
            if count > MAX_STEPS:
                raise ValueError_(f"a repeat count of {count:,} exceeds the budget of "
                                  f"{MAX_STEPS:,} elaboration steps", item.repeat.span,
                                  exceeded("elaboration steps (statements, repetitions and "
                                           "expression operations)", MAX_STEPS))
        if count == 0:  # `x{0}`: the item is not there at all, its name included
            return cur
        self.repeats.append((item.repeat.span, count) if count > 1 else None)
        try:
            return self._repeated(item, count, scope, items, cur, env)
        finally:
            self.repeats.pop()

    def _repeated(self, item: S.Item, count: int, scope: Scope, items: list, cur: int,
                  env: Env) -> int:
        atom = item.atom
        single = item.repeat is None
        if item.label_template is not None:
            return self._templated(item, count, scope, items, cur, env)
        if item.label is None:
            for i in range(count):
                self._step(item.span)
                cur = self._atom(atom, None, scope, items, cur, _repetition(env, item, i))
            return cur
        if single and (isinstance(atom, (S.Layer, S.Join, S.Residual, S.Gate, S.Dense, S.Split))):
            # the label names the layer (or block instance, or join node) itself
            return self._atom(atom, (item.label, item.label_span), scope, items, cur, env)
        full = scope.claim(item.label, item.label_span, self.sink)
        sub, sub_items = Scope(full + "."), []
        for i in range(count):
            self._step(item.span)
            cur = self._atom(atom, None, sub, sub_items, cur, _repetition(env, item, i))
        items.append(ScopeRef(item.label, sub_items))
        return cur

    def _templated(self, item: S.Item, count: int, scope: Scope, items: list, cur: int,
                   env: Env) -> int:
        """`denselayer{i + 1}: dense_layer(32) x6` names each repetition on its own."""
        for i in range(count):
            self._step(item.span)
            env_i = env.with_values({"i": i})
            label = item.label + "".join(_label_part(p, env_i) for p in item.label_template)
            if not S.VALID_LABEL.match(label):
                raise ValueError_(f"`{label}` is not a valid name", item.label_span,
                                  "a name is letters, digits and `_`, in parts joined by `-` "
                                  "(`layer1`, `block1-0`); no `.`, spaces or other signs")
            atom = item.atom
            if isinstance(atom, S.Layer) and atom.name not in self.program.blocks or \
                    isinstance(atom, (S.Join, S.Residual, S.Gate, S.Dense, S.Split)):
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
        if isinstance(atom, S.Split):
            return self._split(atom, label, scope, items, cur, env)
        if isinstance(atom, S.Gate):
            empty = S.Body([], atom.span)
            return self._join("mul", [empty, atom.body], label, atom.span, scope, items, cur, env)
        empty = S.Body([], atom.span)  # dense
        return self._join("concat", [empty, atom.body], label, atom.span, scope, items, cur, env)

    # ------------------------------------------------------------------ joins
    def _join(self, kind: str, branches: list[S.Body], label, span: Span, scope: Scope,
              items: list, cur: int, env: Env, parts: list[dict] | None = None) -> int:
        """Branches from `cur` joined by `kind`; with `parts`, each branch starts from a
        slice of the channels (`split`)."""
        if len(branches) < 2:
            what = "split" if parts is not None else kind
            raise ValueError_(f"`{what}` needs at least two branches separated by `|`", span,
                              f"an empty branch is the identity: {what} {{ | ... }}")
        outs, refs = [], []
        for i, br in enumerate(branches):
            br_items: list = []
            start = cur
            if parts is not None:
                start = self._emit("slice", parts[i], [cur], self._name(None, scope), span,
                                   None)
                br_items.append(NodeRef(start))
            outs.append(self._body(br, scope, br_items, start, env))
            refs.append(br_items)
        nid = self._emit(kind, {}, outs, self._name(label, scope), span, None)
        items.append(JoinRef(nid, refs))
        return nid

    def _split(self, sp: S.Split, label, scope: Scope, items: list, cur: int, env: Env) -> int:
        """ShuffleNet's channel split: branch i gets the i-th part of the channels, the parts
        are concatenated (torch.chunk's equal parts, or the sizes given)."""
        shape = self.graph.node(cur).shape
        if shape is None:  # the error that hid it is reported already
            return cur
        channels, n = features(shape), len(sp.branches)
        if sp.sizes:
            sizes = [as_int(evaluate(a.value, env.values), "a part's size", a.span)
                     for a in sp.sizes]
            if len(sizes) != n or sum(sizes) != channels:
                raise ShapeError(f"split({', '.join(map(str, sizes))}) cannot cut {channels} "
                                 f"channels into {n} branches", sp.span,
                                 f"give {n} sizes that add up to {channels}")
            ends = list(itertools.accumulate(sizes))
            parts = [{"start": e - s, "end": e} for s, e in zip(sizes, ends, strict=True)]
        else:
            try:
                parts = [dict(zip(("start", "end"), chunk_bounds(channels, n, i), strict=True))
                         for i in range(n)]
            except OpShapeError as exc:
                raise self._shape_error(exc, sp.span, [cur]) from None
        return self._join("concat", sp.branches, label, sp.span, scope, items, cur, env, parts)

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
            if attr.name not in known_attrs():
                raise NameError_(f"no op has an attribute `{attr.name}`", attr.span,
                                 did_you_mean(attr.name, known_attrs()))
            defaults[attr.name] = self._default(attr, env.values)
        charge_copy(env.values)
        inner = Env({**env.values, **values}, defaults, env.calls + (call.name,))
        if block.inline and label is None and claimed is None:  # as if written here
            return self._body(block.body, scope, items, cur, inner)
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
                    raise ValueError_(f"`{call.name}` takes {count(len(names), 'argument')}"
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
        gathered = gather(layer, op, kernel, env.defaults, env.values)
        self.used_defaults.update(id(d.attr) for d in gathered.used)
        attrs = gathered.values
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
        for kind, sub_attrs in gathered.attached:
            sub_label = _attached_label(primary_label, kind, scope, label is not None)
            sub_name = scope.claim(sub_label, layer.span, self.sink, report=not clash)
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

    def _resolve(self, layer: S.Layer) -> tuple[OpDef, int | tuple[int, int] | None]:
        """The op a layer names, and the kernel its name's suffix gives (`conv1x7`): a
        registered op first, then an installed plugin's (whose lookup reads every installed
        package's entry points: only for a name nothing else explains)."""
        op = lookup(layer.name)
        if op is not None and op.in_syntax:
            return op, None
        m = _KERNEL_SUFFIX.match(layer.name)
        for find in (lookup, lambda name: self._plugin(name, layer)):
            op = find(layer.name)
            if op is not None and op.in_syntax:
                return op, None
            op = find(m.group(1)) if m else None
            if op is not None and op.in_syntax and op.kernel:
                k = int(m.group(2))
                return op, (k if m.group(3) is None else (k, int(m.group(3))))
            if op is not None and op.in_syntax:
                raise ValueError_(f"`{m.group(1)}` takes no kernel size", layer.name_span,
                                  f"write `{m.group(1)}` without the digits")
        raise NameError_(f"unknown op or block `{layer.name}`", layer.name_span,
                         _suggest(layer.name, self.program.blocks))

    @staticmethod
    def _plugin(name: str, layer: S.Layer) -> OpDef | None:
        try:
            return lookup_or_load(name)
        except PluginError as exc:
            raise NameError_(str(exc), layer.name_span) from None

    # ------------------------------------------------------------------ nodes
    def _name(self, label, scope: Scope) -> str:
        if label is None:
            return scope.claim(scope.next_index(), None, self.sink)
        return scope.claim(label[0], label[1], self.sink)

    def _emit(self, op: str, attrs: dict, inputs: list[int], name: str, span: Span,
              layer: int | None, hint: str | None = None) -> int:
        if len(set(inputs)) < len(inputs):  # the graph holds one edge per pair of nodes
            raise ValueError_(f"this {op} would take the same tensor twice: its branches (or "
                              "its body and shortcut) are all the identity", span,
                              "give the body or a branch a layer (found by tests/core/"
                              "test_fuzz_grammar.py)")
        nid = self.graph.node_count
        if nid >= MAX_NODES:
            outer = next((r for r in self.repeats if r is not None), None)
            notes = [] if outer is None else [(f"repeated {outer[1]:,} times here", outer[0])]
            self.sink.add(ValueError_(f"the network has more than {MAX_NODES:,} nodes", span,
                                      exceeded("nodes in one architecture", MAX_NODES),
                                      notes))
            raise _Abort
        shapes = [self.graph.node(i).shape for i in inputs]
        shape = None
        if all(s is not None for s in shapes):
            try:
                shape = tuple(OPS[op].shape(attrs, shapes))  # type: ignore[arg-type]
                _check_size(shape, f"this {op}'s output")
            except OpShapeError as exc:
                self.sink.add(self._shape_error(exc, span, inputs, hint))
                shape = None
        node = Node(nid, name, op, attrs, shape, span, nid if layer is None else layer)
        self.graph.add_node(node, inputs)
        for i in inputs:  # what reads a layer whose bias=auto is still open
            if i in self.auto_bias:
                self.auto_bias[i].append(op)
        if attrs.get("bias") == "auto":
            self.auto_bias[nid] = []
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

def _check_size(shape: tuple[int, ...], what: str) -> None:
    """Every tensor within MAX_DIM per dimension and MAX_ELEMENTS in all: the counts of
    analysis stay plain numbers, and no backend is asked for petabytes."""
    big = next((d for d in shape if d > MAX_DIM), None)
    if big is not None:
        raise OpShapeError(f"{what} has a dimension of {big:,}",
                           exceeded("one dimension of a tensor", MAX_DIM))
    elements = math.prod(shape)
    if elements > MAX_ELEMENTS:
        raise OpShapeError(f"{what} has {elements:,} elements per image",
                           exceeded("the elements of one tensor", MAX_ELEMENTS))


def _shown(value: S.Expr) -> str:
    """An attribute's value as written, for messages."""
    span = value.span
    line = span.source_line()
    if span.end_line == span.line and line:
        return line[span.col - 1:span.end_col - 1]
    return "..."


def _label_part(part: str | S.Expr, env: Env) -> str:
    """A word of a label template as it is, an expression's value as text (2.0 → 2)."""
    if isinstance(part, str):
        return part
    value = evaluate(part, env.values)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


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


def _param_list(params: list[S.Param], bare: bool = False) -> str:
    if not params:
        return "it takes no parameters"
    names = ", ".join(p.name for p in params)
    return names if bare else f"parameters: {names}"

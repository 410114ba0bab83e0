"""The elaborator: statements, bodies and repetition; what architectures, joins, block calls
and layers do is in the mixins of archs.py, joins.py, blocks.py and layers.py."""

from __future__ import annotations

from typing import Any

from .. import syntax as S
from ..errors import ArchError, ErrorSink, NameError_, Span, ValueError_, did_you_mean
from ..expr import as_int, charge, charge_copy, evaluate, evaluate_value
from ..ir import Node, ScopeRef
from ..layer_attrs import Default, known_attrs
from ..limits import MAX_NESTING, MAX_STEPS, exceeded
from ..program import Program
from .archs import ArchsMixin
from .blocks import BlocksMixin
from .joins import JoinsMixin
from .layers import LayersMixin
from .scopes import (
    Abort,
    CallSink,
    Env,
    Scope,
    UnknownInput,
    label_part,
    repetition,
    with_input,
)


class Elaborator(ArchsMixin, JoinsMixin, BlocksMixin, LayersMixin):
    """One elaboration of one program: `arch(name, overrides)` gives the typed graph; errors go
    to the sink (a located error per problem, as many as can be found at once)."""

    def __init__(self, program: Program, sink: ErrorSink) -> None:
        self.program, self.sink = program, CallSink(sink)
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

    def _stmts(self, stmts: list, scope: Scope, items: list, cur: int, env: Env) -> int:
        for stmt in stmts:
            self._step(stmt.span)
            try:
                if isinstance(stmt, S.Defaults):
                    env = self._defaults(stmt, env)
                elif isinstance(stmt, S.Let):
                    env = self._let(stmt, self._with_input(env, cur, stmt.span))
                elif isinstance(stmt, S.Budget):
                    charge_copy(env.values)
                    self.graph.budgets.append((stmt.expr, dict(env.values)))
                elif isinstance(stmt, S.Item):
                    cur = self._item(stmt, scope, items, cur, env)
            except Abort:
                raise
            except ArchError as exc:
                if not isinstance(exc, UnknownInput):
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

    def _with_input(self, env: Env, cur: int, span: Span) -> Env:
        """`env` with `in_channels` and `in_shape` of node `cur` (scopes.InputView)."""
        return with_input(env, self.graph.node(cur).shape, span)

    def _let(self, stmt: S.Let, env: Env) -> Env:
        try:
            return env.with_values({stmt.name: evaluate_value(stmt.value, env.values)})
        except ArchError as exc:  # what follows depends on the name: stop here, not at each use
            self.sink.add(exc)
            raise Abort from None

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
            raise Abort
        self.depth += 1
        try:
            return self._stmts(body.stmts, scope, items, cur, env)
        finally:
            self.depth -= 1

    def _item(self, item: S.Item, scope: Scope, items: list, cur: int, env: Env) -> int:
        count = 1
        if item.repeat is not None:
            count = as_int(evaluate(item.repeat, self._with_input(env, cur, item.span).values),
                           "a repeat count", item.repeat.span, minimum=0)
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
                cur = self._atom(atom, None, scope, items, cur, repetition(env, item, i))
            return cur
        if single and (isinstance(atom, (S.Layer, S.Join, S.Residual, S.Gate, S.Dense, S.Split))):
            # the label names the layer (or block instance, or join node) itself
            return self._atom(atom, (item.label, item.label_span), scope, items, cur, env)
        full = scope.claim(item.label, item.label_span, self.sink)
        sub, sub_items = Scope(full + "."), []
        for i in range(count):
            self._step(item.span)
            cur = self._atom(atom, None, sub, sub_items, cur, repetition(env, item, i))
        items.append(ScopeRef(item.label, sub_items))
        return cur

    def _templated(self, item: S.Item, count: int, scope: Scope, items: list, cur: int,
                   env: Env) -> int:
        """`denselayer{i + 1}: dense_layer(32) x6` names each repetition on its own."""
        for i in range(count):
            self._step(item.span)
            env_i = env.with_values({"i": i})
            label = item.label + "".join(label_part(p, env_i) for p in item.label_template)
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
        env = self._with_input(env, cur, atom.span)
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

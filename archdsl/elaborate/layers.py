"""Layers and the nodes they make: the op a name means (its kernel suffix, a plugin's), the
attributes gathered, the norm/activation attached, each node's shape inferred as it is made."""

from __future__ import annotations

import math
import re

from .. import syntax as S
from ..errors import ArchWarning, NameError_, ShapeError, Span, ValueError_, did_you_mean
from ..ir import Node, NodeRef
from ..layer_attrs import gather
from ..limits import MAX_DIM, MAX_ELEMENTS, MAX_NODES, exceeded
from ..ops import OPS, OpDef, OpShapeError, fmt_shape, lookup, syntax_names
from ..plugins import PluginError, lookup_or_load
from .scopes import Abort, Env, Scope

# conv3, maxpool2, conv1x7 (height × width): the kernel as a suffix of the op's name
KERNEL_SUFFIX = re.compile(r"^([A-Za-z_]+?)(\d+)(?:x(\d+))?$")


class LayersMixin:
    """Elaborator's layers and nodes: every node of the graph is made by `_emit`."""

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
        m = KERNEL_SUFFIX.match(layer.name)
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
            raise Abort
        shapes = [self.graph.node(i).shape for i in inputs]
        shape = None
        if all(s is not None for s in shapes):
            try:
                shape = tuple(OPS[op].shape(attrs, shapes))  # type: ignore[arg-type]
                check_size(shape, f"this {op}'s output")
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


def check_size(shape: tuple[int, ...], what: str) -> None:
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
    m = KERNEL_SUFFIX.match(name)
    candidates = syntax_names() + list(blocks)
    if m:
        hint = did_you_mean(m.group(1), [n for n in syntax_names()
                                         if (op := lookup(n)) is not None and op.kernel])
        if hint:
            return hint.replace("`?", f"{m.group(2)}`?").replace("` or `", f"{m.group(2)}` or `")
    return did_you_mean(name, candidates)

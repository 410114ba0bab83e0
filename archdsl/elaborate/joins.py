"""Joins: branches joined by add/concat/mul (and gate, dense), channel splits, residuals."""

from __future__ import annotations

import itertools

from .. import syntax as S
from ..errors import ShapeError, Span, ValueError_
from ..expr import as_int, evaluate
from ..ir import JoinRef, NodeRef, ScopeRef
from ..ops import OpShapeError, chunk_bounds, features
from .scopes import Env, Scope


class JoinsMixin:
    """Elaborator's joins: each branch is a body elaborated from the same node."""

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

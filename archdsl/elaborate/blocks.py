"""Calls of user blocks: arguments, attributes that become defaults inside, the scope an
instance names (or none, for an inline block)."""

from __future__ import annotations

from typing import Any

from .. import syntax as S
from ..errors import NameError_, ValueError_, did_you_mean
from ..expr import charge_copy, evaluate_value
from ..ir import ScopeRef
from ..layer_attrs import count, known_attrs
from ..limits import MAX_BLOCK_DEPTH
from .scopes import Env, Scope, param_list


class BlocksMixin:
    """Elaborator's block calls."""

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
            example = f"{call.name}({param_list(block.params, bare=True)})"
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
                                      f"{call.name}({param_list(block.params, bare=True)})")
                key = names[i]
            elif arg.name not in names:
                raise NameError_(f"block `{call.name}` has no parameter `{arg.name}`", arg.span,
                                 did_you_mean(arg.name, names) or param_list(block.params))
            else:
                key = arg.name
            if key in given:
                raise ValueError_(f"`{key}` is given twice", arg.span)
            given[key] = evaluate_value(arg.value, env.values)
        return given

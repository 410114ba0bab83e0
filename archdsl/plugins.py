"""User-defined ops: declared in Python like the built-in ones (an `OpDef`: attributes, shape
rule, counts, tensors), with their own PyTorch and (optionally) TVM lowerings, registered by
name, and then written in specs like any op.

Nothing here runs code a spec names by itself. An op comes from one of:
- `register_op(...)` in the user's own Python;
- `load_plugin("my_ops")` / `archdsl --plugin my_ops` (a module name or a .py file the user
  gives), which imports it — it registers its ops;
- the `archdsl.ops` entry-point group of a package the user installed: when a spec writes an
  op no one has registered, the entry point of that exact name is loaded (its module imported),
  as if the user had imported it; an entry point points at an `OpDef` or at a function that
  registers ops.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import operator
import re
import sys
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

from .attrs import CONVERTERS
from .errors import ArchError, first_line
from .ops import ALIASES, OPS, OpDef, OpShapeError, lookup, ops_changed

ENTRY_POINT_GROUP = "archdsl.ops"
CATEGORIES = ("conv", "linear", "attention", "pool", "norm", "scale", "act", "regularizer",
              "shape", "sequence", "join")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUILTIN = frozenset(OPS)


class PluginError(Exception):
    """A user-defined op that cannot be registered, or a plugin that cannot be loaded."""


def register_op(op: OpDef, *, pytorch: Callable | None = None, tvm: Callable | None = None,
                aliases: Iterable[str] = (), replace: bool = False) -> OpDef:
    """Make `op` an op of the language, under its name and `aliases`.

    `pytorch(node, input_shapes) -> nn.Module`: a module whose forward takes the op's inputs and
    whose state_dict holds exactly the tensors `op.tensors` declares. `tvm(ctx, node, xs,
    input_shapes) -> relax.Expr`: as the built-in lowerings (backends/tvm/lower.py); without
    it, compiling a network that uses the op says so. `replace=True` replaces an op registered
    before (never a built-in one). Returns the registered declaration."""
    names = [op.name, *aliases]
    for name in names:
        if not _NAME.match(name):
            raise PluginError(f"`{name}` is not an op name: letters, digits and `_`, "
                              "starting with a letter")
        taken = lookup(name)
        if taken is not None and (taken.name in _BUILTIN or not replace):
            raise PluginError(f"`{name}` is already an op (`{taken.name}`)"
                              + ("" if taken.name in _BUILTIN else "; pass replace=True"))
    if op.category not in CATEGORIES:
        raise PluginError(f"op `{op.name}`: category `{op.category}` is not one of "
                          + ", ".join(CATEGORIES))
    for key, spec in op.attrs.items():
        if spec.type not in CONVERTERS:
            raise PluginError(f"op `{op.name}`: attribute `{key}` has type `{spec.type}`, not "
                              "one of " + ", ".join(sorted(CONVERTERS)))
    lowerings = {k: f for k, f in (("pytorch", pytorch), ("tvm", tvm)) if f is not None}
    op = _guarded(dataclasses.replace(op, lowerings={**op.lowerings, **lowerings}))
    OPS[op.name] = op
    ALIASES.update((a.lower(), op.name) for a in aliases)
    ops_changed()
    return op


class UserOpError(ArchError):
    """A user-defined op's rule or lowering that raised, or returned what is not a count."""


_COUNTS = ("weights", "biases", "fan_in", "total_connections")
_CALLS = ("tensors", "derived", "advice", "prepare")


def _guarded(op: OpDef) -> OpDef:
    """`op` with its rules wrapped: they run on whatever attributes a spec gives, so what they
    raise is an error of the spec (the shape rule's, an OpShapeError located where the op is
    used), never a traceback, and a count must be a non-negative integer."""
    changes: dict = {"shape": _shape_rule(op.name, op.shape)}
    changes |= {n: _rule(op.name, n, f, count=True) for n in _COUNTS
                if (f := getattr(op, n)) is not None}
    changes |= {n: _rule(op.name, n, f) for n in _CALLS if (f := getattr(op, n)) is not None}
    changes["lowerings"] = {k: _rule(op.name, f"{k} lowering", f)
                            for k, f in op.lowerings.items()}
    changes["keeps"] = dataclasses.replace(op.keeps, **{
        n: _rule(op.name, f"keeps.{n}", getattr(op.keeps, n), count=True)
        for n in ("extra", "extra_bytes", "per_batch")})
    return dataclasses.replace(op, **changes)


def _failed(name: str, what: str, exc: BaseException) -> str:
    return f"the user-defined op `{name}`: its {what} failed: {type(exc).__name__}: " \
        f"{first_line(exc)}"


def _shape_rule(name: str, fn: Callable) -> Callable:
    def shape(attrs, ins):
        try:
            out = fn(attrs, ins)
            return tuple(operator.index(d) for d in out)
        except OpShapeError:
            raise
        except Exception as exc:
            raise OpShapeError(_failed(name, "shape rule", exc)) from None
    return shape


def _rule(name: str, what: str, fn: Callable, count: bool = False) -> Callable:
    if getattr(fn, "_guarded", False):
        return fn

    def rule(*args):
        try:
            out = fn(*args)
            if count and (isinstance(out, bool) or operator.index(out) < 0):
                raise ValueError(f"returned {out!r}, not a count")
        except (ArchError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise UserOpError(_failed(name, what, exc), None,
                              "the op's rules are Python code of the plugin that registered "
                              "it") from None
        return operator.index(out) if count else out
    rule._guarded = True  # type: ignore[attr-defined]
    return rule


def unregister_op(name: str) -> None:
    """Remove a user-defined op and its aliases (built-in ops stay)."""
    if name in _BUILTIN:
        raise PluginError(f"`{name}` is a built-in op")
    OPS.pop(name, None)
    for alias in [a for a, target in ALIASES.items() if target == name]:
        del ALIASES[alias]
    ops_changed()


def load_plugin(target: str) -> list[str]:
    """Import a plugin: a module name (`my_ops`, `pkg.ops`) or the path of a .py file; it
    registers its ops. Returns the names of the ops it added."""
    before = set(OPS)
    try:
        if target.endswith(".py"):
            path = Path(target)
            spec = importlib.util.spec_from_file_location(f"archdsl_plugin_{path.stem}", path)
            if spec is None or spec.loader is None or not path.is_file():
                raise PluginError(f"no plugin file {target}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(target)
    except PluginError:
        raise
    except (Exception, SystemExit) as exc:  # the plugin's own code failed: say which and how
        raise PluginError(f"plugin {target} failed to load: {type(exc).__name__}: {exc}") \
            from exc
    return sorted(set(OPS) - before)


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def lookup_or_load(name: str) -> OpDef | None:
    """The op `name` means: a registered one, else the installed `archdsl.ops` entry point of
    that exact name (loaded now, once), else None."""
    op = lookup(name)
    if op is not None:
        return op
    ep = _entry_points().get(name) or _entry_points().get(name.lower())
    if ep is None:
        return None
    try:
        loaded = ep.load()
        if isinstance(loaded, OpDef):
            register_op(loaded)
        else:
            loaded()
    except Exception as exc:
        raise PluginError(f"op `{name}` comes from the installed entry point {ep.value} "
                          f"({ENTRY_POINT_GROUP}), which failed: {type(exc).__name__}: "
                          f"{exc}") from exc
    return lookup(name)

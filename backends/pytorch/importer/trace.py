"""Tracing a module for import: torch.fx with archdsl's leaf modules, run on the meta device.

Modules that archdsl maps one to one (Conv2d, BatchNorm2d, Linear, MultiheadAttention, ...)
stay whole (`call_module` nodes named by their module path); everything else is traced into,
so a user's own block becomes the layers and functions it calls. The traced graph is then run
once on meta tensors (no memory, no arithmetic): every node's value — a tensor's shape, an int
from `x.shape` — is recorded for the mapping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import fx, nn


class TraceFailed(Exception):
    """torch.fx could not trace the module (data-dependent control flow and the like)."""


class _Tracer(fx.Tracer):
    def __init__(self, leaves: tuple[type, ...], extra_leaves: tuple[type, ...] = (),
                 autowrap: tuple[Callable, ...] = (), named: frozenset[str] = frozenset()
                 ) -> None:
        super().__init__(autowrap_functions=autowrap)
        self.leaves = leaves
        self.extra_leaves = extra_leaves
        self.named = named  # leaves of other libraries, by "module.ClassName"

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m) in self.leaves or isinstance(m, self.extra_leaves) or \
                f"{type(m).__module__}.{type(m).__qualname__}" in self.named:
            return True
        # torch.nn's own modules are leaves (reported when archdsl has no mapping for them);
        # a subclass defined elsewhere is traced into: it may change what the base does
        return super().is_leaf_module(m, qualname)


def trace(module: nn.Module, leaves: tuple[type, ...], extra_leaves: tuple[type, ...] = (),
          autowrap: tuple[Callable, ...] = (), named: frozenset[str] = frozenset()
          ) -> fx.GraphModule:
    tracer = _Tracer(leaves, extra_leaves, autowrap, named)
    try:
        graph = tracer.trace(module)
    except Exception as exc:  # fx raises many types: TraceError, TypeError, NotImplementedError
        raise TraceFailed(f"{type(exc).__name__}: {_first_line(exc)}") from exc
    return fx.GraphModule(tracer.root, graph, type(module).__name__)


# Modules whose output has their input's shape: not run (on meta tensors batch norm goes
# through Python decompositions, 15 ms a call), their input stands for their output.
SAME_SHAPE: tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh,
    nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Dropout, nn.Identity)


class _Recorder(fx.Interpreter):
    """Runs the traced graph and keeps every node's value."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op == "call_module" and len(n.args) == 1 and not n.kwargs and \
                type(self.module.get_submodule(str(n.target))) in _SAME_SHAPE_TYPES:
            value = self.env[n.args[0]]  # type: ignore[index]
        else:
            value = super().run_node(n)
        self.values[n] = value
        return value


_SAME_SHAPE_TYPES = frozenset(t for t in SAME_SHAPE if not t.__subclasses__()) | {
    nn.BatchNorm1d, nn.BatchNorm2d}


def record(gm: fx.GraphModule, example: torch.Tensor) -> dict[fx.Node, Any]:
    """Every node's value for one run on `example` (a meta tensor: shapes only)."""
    rec = _Recorder(gm)
    try:
        with torch.no_grad():
            rec.run(example)
    except Exception as exc:  # a wrong input shape, an op without a meta kernel...
        shape = "×".join(str(d) for d in example.shape)
        raise TraceFailed(f"running it on a {shape} input failed: {type(exc).__name__}: "
                          f"{_first_line(exc)}") from exc
    return rec.values


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters and buffers on the meta device: a model of
    any size is built in moments and without memory, and its initialisers do nothing. (Setting
    `torch.device("meta")` as the default device is not enough: some constructors compute
    with tensors, e.g. torchvision's RegNet widths.)"""
    register_p, register_b = nn.Module.register_parameter, nn.Module.register_buffer

    def param(self: nn.Module, name: str, p: nn.Parameter | None) -> None:
        if p is not None and p.device.type != "meta":
            p = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)
        register_p(self, name, p)

    def buffer(self: nn.Module, name: str, t: torch.Tensor | None,
               persistent: bool = True) -> None:
        register_b(self, name, t.to("meta") if t is not None else None, persistent)

    nn.Module.register_parameter = param  # type: ignore[method-assign]
    nn.Module.register_buffer = buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_p  # type: ignore[method-assign]
        nn.Module.register_buffer = register_b  # type: ignore[method-assign]


def on_meta(module: nn.Module) -> nn.Module:
    """The module itself if it is on the meta device already; else a meta copy (parameters
    and buffers as meta tensors of the same shapes) — the original is never touched."""
    tensors = list(module.parameters()) + list(module.buffers())
    if all(t.device.type == "meta" for t in tensors):
        return module
    import copy
    memo: dict[int, Any] = {}
    for t in list(module.parameters()) + list(module.buffers()):
        if isinstance(t, nn.Parameter):
            memo[id(t)] = nn.Parameter(torch.empty_like(t, device="meta"),
                                       requires_grad=t.requires_grad)
        else:
            memo[id(t)] = torch.empty_like(t, device="meta")
    return copy.deepcopy(module, memo)

"""The mapping loop: every traced node, in order, through the handler for its module class or
function; values PyTorch computed (`x.shape[0]`, asserts) are taken as they are."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from archdsl.recover.flat import FlatNet

from . import channels as C
from . import functions as Fn
from . import modules as M
from .builder import PENDING, Builder, Opaque, Param, Ten, Unmappable, _Downstream, report


def build(gm: fx.GraphModule, recorded: dict[fx.Node, Any], input_shape: tuple[int, ...],
          name: str, original: nn.Module | None = None) -> FlatNet:
    b = Builder(gm, recorded, input_shape, name, original)
    placeholders = 0
    for node in gm.graph.nodes:
        b.node = node
        if node.op == "placeholder" and not isinstance(b.recorded.get(node), torch.Tensor):
            b.values[node] = b.recorded.get(node)  # an optional argument left at its default
            continue
        if node.op == "placeholder":
            placeholders += 1
            b.values[node] = Ten(0) if placeholders == 1 else Opaque("a second input")
            if placeholders == 2:
                report(b, node, Unmappable("a second input", "archdsl networks take one "
                                           "input tensor"), "input")
            continue
        if node.op == "output":
            _output(b, node)
            continue
        try:
            value = _map(b, node)
            _check(b, node, value)
        except _Downstream:
            value = Opaque()
        except Unmappable as exc:
            report(b, node, exc, op_label(gm, node))
            value = Opaque(op_label(gm, node))
        b.values[node] = value
    b.node = None
    net = b.net
    return net


def _output(b: Builder, node: fx.Node) -> None:
    value = _arg(b, node.args[0])
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    if isinstance(value, dict) or not isinstance(value, Ten):
        if not b.net.unmapped:
            report(b, node, Unmappable("the network's output is not one tensor"), "output")
        return
    try:
        b.net.output = b.std(value, "the output").nid
    except Unmappable as exc:
        report(b, node, exc, "output")


def _map(b: Builder, node: fx.Node) -> Any:
    recorded = b.recorded.get(node)
    if node.op == "get_attr":
        if isinstance(recorded, torch.Tensor):
            return Param(str(node.target), tuple(recorded.shape))
        return recorded
    args = _arg(b, node.args)
    kwargs = _arg(b, node.kwargs)
    if not _holds_tensor(recorded) and not any(isinstance(a, (Ten, Param)) for a in
                                                _flat(args) + _flat(kwargs)):
        return recorded  # sizes, asserts: computed by PyTorch already
    if node.op == "call_module":
        module = b.gm.get_submodule(str(node.target))
        handler = M.handler_for(type(module))
        if handler is None:
            raise Unmappable(f"archdsl has no op for {type(module).__name__}",
                             M.SUGGESTIONS.get(type(module).__name__, _REGISTER_MODULE))
        _check_inputs(args, kwargs)
        return handler(b, module, *args, **kwargs)
    if node.op == "call_function":
        handler = Fn.FUNCTIONS.get(node.target) or Fn.NAMED_FUNCTIONS.get(_qualname(node.target))
    else:
        handler = Fn.METHODS.get(str(node.target))
    if handler is None:
        if not _holds_tensor(recorded):
            return recorded
        short = _short(node.target)
        raise Unmappable(f"archdsl has no op for {short}", Fn.SUGGESTIONS.get(short, _REGISTER))
    _check_inputs(args, kwargs)
    try:
        return handler(b, *args, **kwargs)
    except TypeError as exc:  # a call form the handler does not know
        raise Unmappable(f"an unusual call of {_short(node.target)}: {exc}") from None


_REGISTER = "archdsl has no such op (`archdsl ops` lists those it has)"
_REGISTER_MODULE = ("if an archdsl op does what this module does, register_module(cls, op, "
                    "attrs) from archdsl.backends.pytorch.importer imports it as that op")


def _check_inputs(args: Any, kwargs: Any) -> None:
    if any(isinstance(a, Opaque) for a in _flat(args) + _flat(kwargs)):
        raise _Downstream()


def _check(b: Builder, node: fx.Node, value: Any) -> None:
    """A value archdsl made must have the shape PyTorch computed (per image)."""
    recorded = b.recorded.get(node)
    pairs = [(value, recorded)]
    if isinstance(value, tuple) and isinstance(recorded, (tuple, list)):
        pairs = list(zip(value, recorded, strict=False))
    for v, r in pairs:
        if isinstance(v, (Ten, *PENDING)) and isinstance(r, torch.Tensor):
            got = b.torch_shape(v) if isinstance(v, Ten) else C.torch_shape(b, v)
            want = tuple(r.shape[1:])
            if got != want:
                from archdsl.ops import fmt_shape
                raise Unmappable(f"archdsl infers N×{fmt_shape(got)}, PyTorch computes "
                                 f"N×{fmt_shape(want)}")


def _arg(b: Builder, a: Any) -> Any:
    if isinstance(a, fx.Node):
        return b.values[a]
    if isinstance(a, (list, tuple)):
        return type(a)(_arg(b, x) for x in a) if not hasattr(a, "_fields") else \
            type(a)(*(_arg(b, x) for x in a))
    if isinstance(a, dict):
        return {k: _arg(b, v) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(_arg(b, a.start), _arg(b, a.stop), _arg(b, a.step))
    return a


def _flat(a: Any) -> list[Any]:
    if isinstance(a, (list, tuple)):
        return [x for v in a for x in _flat(v)]
    if isinstance(a, dict):
        return [x for v in a.values() for x in _flat(v)]
    return [a]


def _holds_tensor(v: Any) -> bool:
    if isinstance(v, torch.Tensor):
        return True
    if isinstance(v, (list, tuple)):
        return any(_holds_tensor(x) for x in v)
    return False


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__name__', '')}"


def _short(target: Any) -> str:
    return str(getattr(target, "__name__", target))


def op_label(gm: fx.GraphModule, node: fx.Node) -> str:
    """What a report calls the op: the module class, or the function or method."""
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return _short(node.target)

"""Activation modules → archdsl's activation ops, with the attributes they take (nn.ELU's
alpha is elu's alpha), and PReLU's learned slopes. Each keeps the layout of its input: it
acts on every value alone."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from archdsl.ops import OPS

from .builder import Builder, Ten, Unmappable

Handler = Callable[..., Any]


def elementwise(b: Builder, op: str, attrs: dict[str, Any], x: Any, name: str | None) -> Ten:
    t = b.tensor(x, op)
    return b.emit(op, attrs, [Ten(t.nid)], name, layout=t.layout)


def _value(v: Any) -> Any:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def activation(op: str, *params: str) -> Handler:
    """The module's attributes `params` (named as archdsl's op names them) become the op's."""
    def handle(b: Builder, m: nn.Module | None, x: Any, *rest: Any, **kw: Any) -> Ten:
        attrs = {p: _value(getattr(m, p)) for p in params}
        return elementwise(b, op, attrs, x, b.module_name())
    return handle


def hardtanh(b: Builder, m: nn.Hardtanh, x: Any) -> Ten:
    if (m.min_val, m.max_val) == (0.0, 6.0):
        return elementwise(b, "relu6", {}, x, b.module_name())
    return activation("hardtanh", "min_val", "max_val")(b, m, x)


def prelu(b: Builder, m: nn.PReLU, x: Any) -> Ten:
    name = b.module_name()
    return prelu_layer(b, x, tuple(m.weight.shape), b.constant(f"{name}.weight", 0.25), name)


def prelu_layer(b: Builder, x: Any, shape: tuple[int, ...], init: float,
                name: str | None) -> Ten:
    """PyTorch's slopes are per entry of dimension 1: archdsl's per-channel slopes when that
    is the channel axis (a map, tokens' positions), or one slope."""
    t = b.tensor(x, "prelu")
    n = math.prod(shape)
    if n != 1 and (t.layout != "std" or n != b.shape(t)[0]):
        raise Unmappable(f"a PReLU with {n} slopes over N×{'×'.join(map(str, b.torch_shape(t)))}",
                         "archdsl's prelu has one slope, or one per channel")
    return b.emit("prelu", {"per_channel": n != 1, "init": init}, [Ten(t.nid)], name,
                  layout=t.layout)


def softmax(op: str) -> Handler:
    def handle(b: Builder, m: nn.Softmax | nn.LogSoftmax, x: Any) -> Ten:
        return softmax_layer(b, x, m.dim, b.module_name(), op)
    return handle


def softmax_layer(b: Builder, x: Any, dim: int | None, name: str | None,
                  op: str = "softmax") -> Ten:
    t = b.std(x, op)
    if dim not in (1, -1 if len(b.shape(t)) == 1 else 1):
        raise Unmappable(f"{op} over dimension {dim}", f"archdsl's {op} is over channels")
    return b.emit(op, {}, [t], name)


ACTIVATIONS: dict[type, Handler] = {
    nn.ReLU: activation("relu"), nn.ReLU6: activation("relu6"),
    nn.Sigmoid: activation("sigmoid"), nn.Tanh: activation("tanh"),
    nn.SiLU: activation("swish"), nn.Hardswish: activation("hardswish"),
    nn.Hardsigmoid: activation("hardsigmoid"), nn.Hardtanh: hardtanh,
    nn.GELU: activation("gelu", "approximate"),
    nn.LeakyReLU: activation("leakyrelu", "negative_slope"),
    nn.ELU: activation("elu", "alpha"), nn.CELU: activation("celu", "alpha"),
    nn.SELU: activation("selu"), nn.Mish: activation("mish"),
    nn.Softplus: activation("softplus", "beta", "threshold"),
    nn.Softsign: activation("softsign"), nn.LogSigmoid: activation("logsigmoid"),
    nn.PReLU: prelu, nn.Softmax: softmax("softmax"), nn.LogSoftmax: softmax("log_softmax"),
    nn.Hardshrink: activation("hardshrink", "lambd"),
    nn.Softshrink: activation("softshrink", "lambd"), nn.Tanhshrink: activation("tanhshrink"),
    nn.Threshold: activation("threshold", "threshold", "value"),
    nn.RReLU: activation("rrelu", "lower", "upper"), nn.Softmin: softmax("softmin"),
}
# what `_from_sequence` looks through: ops that keep each position's features apart
PER_VALUE = {op for op, d in OPS.items() if d.category in ("act", "regularizer")} - \
    {"softmax", "log_softmax", "softmin"}

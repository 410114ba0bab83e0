"""PyTorch backend: a typed archdsl graph → an `nn.Module` tree that mirrors the spec.

Stages and blocks become submodules and layer names become attribute names, so
`model.layer1[0].conv1` and the `state_dict()` keys read like the spec (and like torchvision's,
for the zoo's torchvision counterparts). No Python source is generated: modules are built
directly from a lowering table keyed by op kind, and `forward` walks the graph in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("the PyTorch backend needs torch: pip install 'archdsl[torch]'") from exc

from archdsl.ir import Graph, Node

from .weights import (
    StateDictDiff,
    WeightsMismatch,
    diff_state_dict,
    freeze,
    load_weights,
    read_state_dict,
)

__all__ = ["ArchModule", "StateDictDiff", "WeightsMismatch", "diff_state_dict", "freeze",
           "load_weights", "read_state_dict", "to_torch"]

# op → (node, input shapes) → module; ops whose value is computed in forward have no module.
Builder = Callable[[Node, list[tuple[int, ...]]], nn.Module]


def _conv(node: Node, ins) -> nn.Module:
    a = node.attrs
    return nn.Conv2d(ins[0][0], a["out"], a["k"], a["stride"], a["pad"], a["dilation"],
                     a["groups"], bias=a["bias"])


def _fc(node: Node, ins) -> nn.Module:
    in_features = 1
    for d in ins[0]:
        in_features *= d
    return nn.Linear(in_features, node.attrs["out"], bias=node.attrs["bias"])


def _pool(cls) -> Builder:
    def build(node: Node, ins) -> nn.Module:
        a = node.attrs
        return cls(a["k"], a["stride"], a["pad"], ceil_mode=a["ceil"])
    return build


def _bn(node: Node, ins) -> nn.Module:
    cls = nn.BatchNorm2d if len(ins[0]) == 3 else nn.BatchNorm1d
    return cls(ins[0][0], eps=node.attrs["eps"], momentum=node.attrs["momentum"])


def _lrn(node: Node, ins) -> nn.Module:
    a = node.attrs
    # PyTorch (like Caffe) divides alpha by the window size; Krizhevsky et al. do not.
    return nn.LocalResponseNorm(a["size"], alpha=a["alpha"] * a["size"], beta=a["beta"], k=a["k"])


MODULES: dict[str, Builder] = {
    "conv": _conv,
    "fc": _fc,
    "maxpool": _pool(nn.MaxPool2d),
    "avgpool": _pool(nn.AvgPool2d),
    "gap": lambda n, ins: nn.AdaptiveAvgPool2d(1),
    "gmp": lambda n, ins: nn.AdaptiveMaxPool2d(1),
    "adaptive_avgpool": lambda n, ins: nn.AdaptiveAvgPool2d(n.attrs["size"]),
    "bn": _bn,
    "lrn": _lrn,
    "dropout": lambda n, ins: nn.Dropout(n.attrs["p"]),
    "relu": lambda n, ins: nn.ReLU(inplace=True),
    "relu6": lambda n, ins: nn.ReLU6(inplace=True),
    "sigmoid": lambda n, ins: nn.Sigmoid(),
    "tanh": lambda n, ins: nn.Tanh(),
    "gelu": lambda n, ins: nn.GELU(),
    "swish": lambda n, ins: nn.SiLU(inplace=True),
    "hardswish": lambda n, ins: nn.Hardswish(inplace=True),
    "softmax": lambda n, ins: nn.Softmax(dim=1),
    "flatten": lambda n, ins: nn.Flatten(1),
}

# Ops computed in forward without a module (they hold no state).
FUNCTIONS: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]] = {
    "add": lambda xs: _fold(torch.add, xs),
    "mul": lambda xs: _fold(torch.mul, xs),
    "concat": lambda xs: torch.cat(xs, dim=1),
}

# Ops with no lowering here, and why (none today; the coverage test reads this table).
UNSUPPORTED: dict[str, str] = {}


def _fold(fn, xs: list[torch.Tensor]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


class ArchModule(nn.Module):
    """An archdsl graph as a PyTorch module; submodules sit at their spec names."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.arch_name = graph.name
        plan: list[tuple[int, str | None, tuple[int, ...], Any]] = []
        for node in graph.nodes:
            if node.op == "input":
                continue
            ins = graph.inputs(node.id)
            shapes = [graph.node(i).shape for i in ins]
            if node.op in MODULES:
                module = MODULES[node.op](node, shapes)
                if node.op == "fc" and len(shapes[0]) > 1:
                    module = _Flattening(module)
                _attach(self, node.name, module)
                plan.append((node.id, node.name, tuple(ins), None))
            elif node.op in FUNCTIONS:
                plan.append((node.id, None, tuple(ins), FUNCTIONS[node.op]))
            else:
                raise NotImplementedError(f"{node.name}: op `{node.op}` has no PyTorch lowering: "
                                          f"{UNSUPPORTED.get(node.op, 'not implemented')}")
        self._plan = plan
        self._input_id = graph.input_id
        self._output_id = graph.output_id
        self._modules_by_id = {nid: self.get_submodule(name) for nid, name, _, fn in plan
                               if name is not None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[int, torch.Tensor] = {self._input_id: x}
        for nid, _name, ins, fn in self._plan:
            args = [values[i] for i in ins]
            values[nid] = fn(args) if fn is not None else self._modules_by_id[nid](*args)
        return values[self._output_id]


class _Flattening(nn.Linear):
    """nn.Linear that flattens C×H×W first; keeps Linear's parameter names."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)

    def _get_name(self) -> str:
        return "Linear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.flatten(x, 1))


def _attach(root: nn.Module, dotted: str, module: nn.Module) -> None:
    *scopes, leaf = dotted.split(".")
    parent = root
    for part in scopes:
        if part not in parent._modules:
            parent.add_module(part, nn.Module())
        parent = parent._modules[part]
    parent.add_module(leaf, module)


def to_torch(graph: Graph) -> ArchModule:
    return ArchModule(graph)

"""PyTorch backend: a typed archdsl graph → an `nn.Module` tree that mirrors the spec.

Stages and blocks become submodules and layer names become attribute names, so
`model.layer1[0].conv1` and the `state_dict()` keys read like the spec (and like torchvision's,
for the zoo's torchvision counterparts). No Python source is generated: modules are built
directly from a lowering table keyed by op kind, and `forward` walks the graph in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch  # without torch, archdsl.backends.load_backend names the extra to install
from torch import nn

from archdsl.ir import Graph, Node

from .weights import (
    StateDictDiff,
    WeightsMismatch,
    diff_state_dict,
    freeze,
    load_weights,
    read_state_dict,
)

__all__ = ["ArchModule", "Scope", "StateDictDiff", "WeightsMismatch", "diff_state_dict", "freeze",
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
    "droppath": lambda n, ins: StochasticDepth(n.attrs["p"]),
    "relu": lambda n, ins: nn.ReLU(),
    "relu6": lambda n, ins: nn.ReLU6(),
    "sigmoid": lambda n, ins: nn.Sigmoid(),
    "tanh": lambda n, ins: nn.Tanh(),
    "gelu": lambda n, ins: nn.GELU(),
    "swish": lambda n, ins: nn.SiLU(),
    "hardswish": lambda n, ins: nn.Hardswish(),
    "softmax": lambda n, ins: nn.Softmax(dim=1),
    "flatten": lambda n, ins: nn.Flatten(1),
}

# Ops computed in forward without a module (they hold no state).
FUNCTIONS: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]] = {
    "add": lambda xs: _fold(torch.add, xs),
    "mul": lambda xs: _fold(torch.mul, xs),
    "concat": lambda xs: torch.cat(xs, dim=1),
}
# The same, writing into their first input when that tensor may be overwritten.
INPLACE_FUNCTIONS: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]] = {
    "add": lambda xs: _fold(torch.Tensor.add_, xs),
}

# Ops whose output may be overwritten by the single op that reads it: their backward does not
# need their output, and the output is a fresh tensor (not a view of a live one). Activations
# are left out (ReLU's backward reads its output), as are dropout and flatten (they may return
# their input itself) — torchvision's `ReLU(inplace=True)` after conv/bn, and its residual
# `out += identity`, are exactly the cases this allows.
OVERWRITABLE_PRODUCERS = {"conv", "fc", "bn", "add", "mul", "concat", "maxpool", "avgpool",
                          "gap", "gmp", "adaptive_avgpool"}

# Ops with no lowering here, and why (none today; the coverage test reads this table).
UNSUPPORTED: dict[str, str] = {}


def _fold(fn, xs: list[torch.Tensor]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


class ArchModule(nn.Module):
    """An archdsl graph as a PyTorch module; submodules sit at their spec names."""

    def __init__(self, graph: Graph, in_place: bool = True) -> None:
        super().__init__()
        self.arch_name = graph.name
        overwritable = _overwritable(graph) if in_place else set()
        names: dict[int, str] = {}
        steps: list[tuple[int, tuple[int, ...], Any]] = []
        for node in graph.nodes:
            if node.op == "input":
                continue
            ins = tuple(graph.inputs(node.id))
            shapes = [graph.node(i).shape for i in ins]
            in_place = bool(ins) and ins[0] in overwritable
            if node.op in MODULES:
                module = MODULES[node.op](node, shapes)
                if node.op == "fc" and len(shapes[0]) > 1:
                    module = _Flattening(module)
                if hasattr(module, "inplace") and node.opdef.category == "act":
                    module.inplace = in_place
                _attach(self, node.name, module)
                names[node.id] = node.name
                steps.append((node.id, ins, None))
            elif node.op in FUNCTIONS:
                fn = INPLACE_FUNCTIONS.get(node.op) if in_place else None
                steps.append((node.id, ins, fn or FUNCTIONS[node.op]))
            else:
                raise NotImplementedError(f"{node.name}: op `{node.op}` has no PyTorch lowering: "
                                          f"{UNSUPPORTED.get(node.op, 'not implemented')}")
        self._input_id = graph.input_id
        self._output_id = graph.output_id
        # free each intermediate tensor after its last use, as a hand-written forward would
        last_use = {i: k for k, (_, ins, _) in enumerate(steps) for i in ins}
        frees: list[list[int]] = [[] for _ in steps]
        for i, k in last_use.items():
            if i != self._output_id:
                frees[k].append(i)
        self._steps = [(nid, ins, self.get_submodule(names[nid]) if nid in names else fn,
                        fn is not None, tuple(free))
                       for (nid, ins, fn), free in zip(steps, frees, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[int, torch.Tensor] = {self._input_id: x}
        for nid, ins, call, functional, free in self._steps:
            args = [values[i] for i in ins]
            values[nid] = call(args) if functional else call(*args)
            for i in free:
                del values[i]
        return values[self._output_id]


def _overwritable(graph: Graph) -> set[int]:
    """Nodes whose output the one op that reads it may overwrite (in-place activation or add)."""
    g = graph.g
    return {n.id for n in graph.nodes
            if n.op in OVERWRITABLE_PRODUCERS and n.id != graph.output_id
            and g.out_degree(n.id) == 1 and n.id != graph.input_id}


class StochasticDepth(nn.Module):
    """Huang et al. 2016: in training, zero a residual branch for a random subset of the
    samples and rescale the rest by 1/(1-p); the identity at inference."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype,
                           device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Flattening(nn.Linear):
    """nn.Linear that flattens C×H×W first; keeps Linear's parameter names."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)

    def _get_name(self) -> str:
        return "Linear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.flatten(x, 1))


class Scope(nn.Module):
    """A stage or block of the spec: holds submodules by name, indexable like nn.Sequential
    (`model.layer1[0].conv1`); the forward pass belongs to the whole ArchModule."""

    def __getitem__(self, key: int | str) -> nn.Module:
        try:
            return self._modules[str(key)]  # type: ignore[return-value]
        except KeyError:
            raise KeyError(f"no submodule {key!r}; has {list(self._modules)}") from None

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def _attach(root: nn.Module, dotted: str, module: nn.Module) -> None:
    *scopes, leaf = dotted.split(".")
    parent = root
    for part in scopes:
        if part not in parent._modules:
            parent.add_module(part, Scope())
        parent = parent._modules[part]
    parent.add_module(leaf, module)


def to_torch(graph: Graph, in_place: bool = True) -> ArchModule:
    """Build the module; `in_place=False` never overwrites a tensor (slower, same results)."""
    return ArchModule(graph, in_place)

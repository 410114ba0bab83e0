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
from .windows import PatchMerging, WindowAttention

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


def _linear(node: Node, ins) -> nn.Module:
    from archdsl.ops import features
    cls = _ChannelsLinear if len(ins[0]) == 3 else nn.Linear
    return cls(features(ins[0]), node.attrs["out"], bias=node.attrs["bias"])


def _layernorm(node: Node, ins) -> nn.Module:
    from archdsl.ops import features
    cls = LayerNorm2d if len(ins[0]) == 3 else nn.LayerNorm
    return cls(features(ins[0]), eps=node.attrs["eps"])


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
    "linear": _linear,
    "layernorm": _layernorm,
    "attention": lambda n, ins: SelfAttention(ins[0][1], n.attrs["heads"], n.attrs["dropout"]),
    "maxpool": _pool(nn.MaxPool2d),
    "avgpool": _pool(nn.AvgPool2d),
    "gap": lambda n, ins: nn.AdaptiveAvgPool2d(1) if len(ins[0]) == 3 else TokenPool("mean"),
    "gmp": lambda n, ins: nn.AdaptiveMaxPool2d(1) if len(ins[0]) == 3 else TokenPool("amax"),
    "window_attention": lambda n, ins: WindowAttention(n, ins[0]),
    "patch_merging": lambda n, ins: PatchMerging(n, ins[0]),
    "adaptive_avgpool": lambda n, ins: nn.AdaptiveAvgPool2d(n.attrs["size"]),
    "bn": _bn,
    "lrn": _lrn,
    "dropout": lambda n, ins: nn.Dropout(n.attrs["p"]),
    "droppath": lambda n, ins: StochasticDepth(n.attrs["p"]),
    "relu": lambda n, ins: nn.ReLU(),
    "relu6": lambda n, ins: nn.ReLU6(),
    "sigmoid": lambda n, ins: nn.Sigmoid(),
    "tanh": lambda n, ins: nn.Tanh(),
    "gelu": lambda n, ins: nn.GELU(approximate=n.attrs["approximate"]),
    "swish": lambda n, ins: nn.SiLU(),
    "hardswish": lambda n, ins: nn.Hardswish(),
    "hardsigmoid": lambda n, ins: nn.Hardsigmoid(),
    "hardtanh": lambda n, ins: nn.Hardtanh(n.attrs["min_val"], n.attrs["max_val"]),
    "leakyrelu": lambda n, ins: nn.LeakyReLU(n.attrs["negative_slope"]),
    "elu": lambda n, ins: nn.ELU(n.attrs["alpha"]),
    "celu": lambda n, ins: nn.CELU(n.attrs["alpha"]),
    "selu": lambda n, ins: nn.SELU(),
    "softplus": lambda n, ins: nn.Softplus(n.attrs["beta"], n.attrs["threshold"]),
    "mish": lambda n, ins: nn.Mish(),
    "softsign": lambda n, ins: nn.Softsign(),
    "logsigmoid": lambda n, ins: nn.LogSigmoid(),
    "prelu": lambda n, ins: nn.PReLU(ins[0][0] if n.attrs["per_channel"] else 1,
                                     n.attrs["init"]),
    "hardshrink": lambda n, ins: nn.Hardshrink(n.attrs["lambd"]),
    "softshrink": lambda n, ins: nn.Softshrink(n.attrs["lambd"]),
    "tanhshrink": lambda n, ins: nn.Tanhshrink(),
    "threshold": lambda n, ins: nn.Threshold(n.attrs["threshold"], n.attrs["value"]),
    "rrelu": lambda n, ins: nn.RReLU(n.attrs["lower"], n.attrs["upper"]),
    "softmax": lambda n, ins: nn.Softmax(dim=1),
    "softmin": lambda n, ins: nn.Softmin(dim=1),
    "log_softmax": lambda n, ins: nn.LogSoftmax(dim=1),
    "affine": lambda n, ins: ChannelAffine(n.attrs["scale"], n.attrs["shift"], len(ins[0])),
    "flatten": lambda n, ins: nn.Flatten(1),
}

# Ops computed in forward without a module (they hold no state).
FUNCTIONS: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]] = {
    "add": lambda xs: _fold(torch.add, xs),
    "mul": lambda xs: _fold(torch.mul, xs),
    "concat": lambda xs: torch.cat(xs, dim=1),
    "tokens": lambda xs: xs[0].flatten(2).transpose(1, 2),
}


def _slice(node: Node) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    start, length = node.attrs["start"], node.attrs["end"] - node.attrs["start"]
    # the features of each token of a batch of sequences are dim 2; channels, entries dim 1
    return lambda xs: xs[0].narrow(2 if xs[0].dim() == 3 else 1, start, length)


def _channel_shuffle(node: Node) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """torchvision's channel_shuffle: N×C×H×W as N×G×(C/G)×H×W, the group axes swapped."""
    groups = node.attrs["groups"]
    return lambda xs: xs[0].unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


# The same with the node's attributes.
NODE_FUNCTIONS: dict[str, Callable[[Node], Callable[[list[torch.Tensor]], torch.Tensor]]] = {
    "token": lambda n: lambda xs: xs[0][:, n.attrs["index"]],
    "slice": _slice,
    "channel_shuffle": _channel_shuffle,
    "grid": lambda n: lambda xs: xs[0].transpose(1, 2).unflatten(2, n.shape[1:]),
}

# Ops that hold one tensor, registered on their scope under the layer's own name as
# torchvision does (`class_token`, `encoder.pos_embedding`, ConvNeXt's `layer_scale`): how the
# tensor is initialised and how it acts on the input. Its shape is the op's declaration.
PARAMETERS: dict[str, tuple[Callable[[torch.Tensor, Node], Any],
                             Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "layerscale": (lambda p, n: nn.init.constant_(p, n.attrs["init"]), torch.mul),
    "class_token": (lambda p, n: nn.init.zeros_(p),
                    lambda x, p: torch.cat([p.expand(x.shape[0], -1, -1), x], dim=1)),
    "pos_embedding": (lambda p, n: nn.init.normal_(p, std=0.02), torch.add),
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
OVERWRITABLE_PRODUCERS = {"conv", "fc", "linear", "layernorm", "bn", "add", "mul", "concat",
                          "maxpool", "avgpool", "gap", "gmp", "adaptive_avgpool"}

# Activations that act on each value alone, so they may run on a map in its memory order
# (`_InMemoryOrder`).
ELEMENTWISE = {"relu", "relu6", "sigmoid", "tanh", "gelu", "swish", "hardswish"}

# Ops that turn a classifier's scores into probabilities: `logits=True` leaves a final one out,
# since training's cross-entropy applies its own log-softmax (VGG's and AlexNet's specs end
# with `softmax`, as their papers' tables do).
PROBABILITIES = {"softmax"}

# Ops with no lowering here, and why (none today; the coverage test reads this table).
UNSUPPORTED: dict[str, str] = {}


def _builder(node: Node) -> Builder | None:
    """The op's module builder: the table's, or a user-defined op's own (archdsl.plugins)."""
    if node.op in MODULES:
        return MODULES[node.op]
    user = node.opdef.lowerings.get("pytorch")
    return None if user is None else lambda n, shapes: _checked(user(n, shapes), n, shapes)


def _checked(module: nn.Module, node: Node, shapes) -> nn.Module:
    """A user-defined op's module must hold the tensors its declaration states: the counts,
    TVM and the key-for-key checks all read the declaration."""
    declared = node.opdef.tensors(node.attrs, list(shapes), node.shape)
    got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if got != declared:
        raise ValueError(f"{node.name}: the PyTorch module of the user-defined op `{node.op}` "
                         f"holds {got}, its declaration (OpDef.tensors) says {declared}")
    return module


def _fold(fn, xs: list[torch.Tensor]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


class ArchModule(nn.Module):
    """An archdsl graph as a PyTorch module; submodules sit at their spec names."""

    def __init__(self, graph: Graph, in_place: bool = True, logits: bool = False) -> None:
        super().__init__()
        self.arch_name = graph.name
        overwritable = _overwritable(graph) if in_place else set()
        names: dict[int, str] = {}
        in_memory_order: set[int] = set()
        steps: list[tuple[int, tuple[int, ...], Any]] = []
        output = _output(graph, logits)
        for node in graph.nodes:
            if node.op == "input" or (node.id == graph.output_id and output != node.id):
                continue
            ins = tuple(graph.inputs(node.id))
            shapes = [graph.node(i).shape for i in ins]
            in_place = bool(ins) and ins[0] in overwritable
            builder = _builder(node)
            if builder is not None:
                module = builder(node, shapes)
                if node.op == "fc" and len(shapes[0]) > 1:
                    module = _Flattening(module)
                if hasattr(module, "inplace") and node.opdef.category == "act":
                    module.inplace = in_place
                _attach(self, node.name, module)
                names[node.id] = node.name
                if node.op in ELEMENTWISE and len(node.shape) == 3:
                    in_memory_order.add(node.id)
                steps.append((node.id, ins, None))
            elif node.op in FUNCTIONS:
                fn = INPLACE_FUNCTIONS.get(node.op) if in_place else None
                steps.append((node.id, ins, fn or FUNCTIONS[node.op]))
            elif node.op in NODE_FUNCTIONS:
                steps.append((node.id, ins, NODE_FUNCTIONS[node.op](node)))
            elif node.op in PARAMETERS:
                init, act = PARAMETERS[node.op]
                (shape,) = node.opdef.tensors(node.attrs, list(shapes), node.shape).values()
                param = nn.Parameter(torch.empty(shape))
                init(param.data, node)
                steps.append((node.id, ins, _OwnParameter(_attach(self, node.name, param), act)))
            else:
                raise NotImplementedError(f"{node.name}: op `{node.op}` has no PyTorch lowering: "
                                          f"{UNSUPPORTED.get(node.op, 'not implemented')}")
        self._input_id = graph.input_id
        self._output_id = output
        # free each intermediate tensor after its last use, as a hand-written forward would
        last_use = {i: k for k, (_, ins, _) in enumerate(steps) for i in ins}
        frees: list[list[int]] = [[] for _ in steps]
        for i, k in last_use.items():
            if i != self._output_id:
                frees[k].append(i)
        modules = {nid: self.get_submodule(name) for nid, name in names.items()}
        for nid in in_memory_order:
            modules[nid] = _InMemoryOrder(modules[nid])
        self._steps = [(nid, ins, modules.get(nid, fn), fn is not None, tuple(free))
                       for (nid, ins, fn), free in zip(steps, frees, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[int, torch.Tensor] = {self._input_id: x}
        for nid, ins, call, functional, free in self._steps:
            args = [values[i] for i in ins]
            values[nid] = call(args) if functional else call(*args)
            for i in free:
                del values[i]
        return values[self._output_id]


def _output(graph: Graph, logits: bool) -> int:
    """The node whose value the module returns: the graph's output, or with `logits` the
    scores a final softmax would turn into probabilities."""
    if logits and graph.node(graph.output_id).op in PROBABILITIES:
        return graph.inputs(graph.output_id)[0]
    return graph.output_id


def _overwritable(graph: Graph) -> set[int]:
    """Nodes whose output the one op that reads it may overwrite (in-place activation or add)."""
    g = graph.g
    return {n.id for n in graph.nodes
            if n.op in OVERWRITABLE_PRODUCERS and n.id != graph.output_id
            and g.out_degree(n.id) == 1 and n.id != graph.input_id}


class _InMemoryOrder:
    """Calls an elementwise module on a channels-last map as N×H×W×C, the order of its memory.
    A per-pixel linear or LayerNorm leaves its output channels-last; on the N×C×H×W view of
    that, PyTorch's CPU kernels take their strided path, which rounds otherwise than the
    contiguous one a channels-last network (torchvision's Swin) runs: GELU differed by 5e-7 a
    value, Swin-T's logits by 7e-6."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return self.module(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.module(x)


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


class TokenPool(nn.Module):
    """Global pooling over the tokens of an N×L×D sequence: N×D (`mean` or `amax`)."""

    def __init__(self, reduce: str) -> None:
        super().__init__()
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(torch, self.reduce)(x, dim=1)

    def extra_repr(self) -> str:
        return self.reduce


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


def _attach(root: nn.Module, dotted: str, item: nn.Module | nn.Parameter) -> tuple[nn.Module, str]:
    """Put a module (or a parameter) at its dotted name, making Scopes on the way; returns
    the scope that holds it and its name there."""
    *scopes, leaf = dotted.split(".")
    parent = root
    for part in scopes:
        if part not in parent._modules:
            parent.add_module(part, Scope())
        parent = parent._modules[part]
    if isinstance(item, nn.Parameter):
        parent.register_parameter(leaf, item)
    else:
        parent.add_module(leaf, item)
    return parent, leaf


class _OwnParameter:
    """A forward step that applies a parameter-holding op, reading the parameter from its
    scope at call time (so `.to()`, `load_state_dict(assign=True)` and the like are seen)."""

    def __init__(self, where: tuple[nn.Module, str], act) -> None:
        self.scope, self.name = where
        self.act = act

    def __call__(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.act(xs[0], getattr(self.scope, self.name))


class ChannelAffine(nn.Module):
    """x·scale + shift with a fixed value per channel (feature): torchvision's GoogLeNet and
    Inception `transform_input`. The values are buffers outside the state_dict (constants of
    the architecture, not weights), so they follow `.to()` without changing the keys."""

    def __init__(self, scale: tuple[float, ...], shift: tuple[float, ...], rank: int) -> None:
        super().__init__()
        view = {3: (1, -1, 1, 1), 2: (1, 1, -1), 1: (1, -1)}[rank]
        for name, values in (("scale", scale), ("shift", shift)):
            tensor = torch.tensor(values, dtype=torch.float32)
            self.register_buffer(name, tensor.view(view) if len(values) > 1 else tensor[0],
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class LayerNorm2d(nn.LayerNorm):
    """Layer normalization over the channels of each pixel of an N×C×H×W map (ConvNeXt)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ChannelsLinear(nn.Linear):
    """nn.Linear over the channels of each pixel of an N×C×H×W map; Linear's parameters."""

    def _get_name(self) -> str:
        return "Linear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SelfAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention (batch first) as self-attention: one input, no weights out."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__(dim, heads, dropout=dropout, batch_first=True)

    def _get_name(self) -> str:
        return "MultiheadAttention"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, x, x, need_weights=False)[0]


def to_torch(graph: Graph, in_place: bool = True, logits: bool = False) -> ArchModule:
    """Build the module; `in_place=False` never overwrites a tensor (slower, same results);
    `logits=True` leaves out a final softmax (the module gives scores, for training). Its
    parameters are allocated (float32): a network too large for this machine's memory is
    refused first (archdsl.memory)."""
    from archdsl.memory import check_fits
    check_fits(graph, 1, 4, "building", copies=1)
    return ArchModule(graph, in_place, logits)

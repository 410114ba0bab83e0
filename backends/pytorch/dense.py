"""VGG's dense evaluation (Simonyan & Zisserman 2015, Section 3.2): "the fully-connected layers
are first converted to convolutional layers (the first FC layer to a 7×7 conv. layer, the last
two FC layers to 1×1 conv. layers). The resulting fully-convolutional net is then applied to
the whole (uncropped) image ... the class score map is spatially averaged."

`densify` does that to any built network: an FC layer over a C×H×W map becomes an H×W
convolution with the same weights, the FC layers after it 1×1 convolutions; activations and
dropout between them work on maps as they are. Over an input of the spec's size the result
equals the network's; over a larger one it is the average of the network's scores over every
window the convolutions slide to.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from archdsl.errors import UsageError
from archdsl.ir import Graph

# Ops that act on each value (or channel vector) alone: they take score maps as they are.
POINTWISE = ("act", "regularizer")


class Dense(nn.Module):
    """A network made fully convolutional; gives the class scores averaged over space."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        return y.mean(dim=(2, 3)) if y.dim() == 4 else y


def densify(model: nn.Module, graph: Graph) -> Dense:
    """A copy of `model` (an ArchModule built from `graph`) with its FC layers as
    convolutions. Refuses a network where something other than an activation or dropout
    would meet a score map."""
    model = copy.deepcopy(model)
    spatial: set[int] = set()  # nodes whose value becomes a map once FC layers are convs
    for k, (nid, ins, call, _, free) in enumerate(model._steps):
        node = graph.node(nid)
        shape = graph.node(ins[0]).shape if ins else ()
        if node.op == "flatten" and len(shape) == 3 and shape[1] * shape[2] > 1:
            raise UsageError(f"dense evaluation: `{node.name}` flattens a {shape[1]}×"
                             f"{shape[2]} map, whose size then fixes the FC layer after it",
                             node.span, "write FC-N directly after the map (it flattens), or "
                             "evaluate with centre or ten crops")
        if node.op == "fc" and (len(shape) == 3 or ins[0] in spatial):
            conv = _as_conv(call, shape if len(shape) == 3 else (shape[0], 1, 1))
            _replace(model, node.name, conv)
            model._steps[k] = (nid, ins, conv, False, free)
            spatial.add(nid)
        elif any(i in spatial for i in ins):
            if node.opdef.category not in POINTWISE:
                raise UsageError(f"dense evaluation: `{node.name}` ({node.op}) comes after an "
                                 "FC layer turned convolution, and only activations and "
                                 "dropout can take its score map", node.span,
                                 "evaluate with centre or ten crops instead")
            spatial.add(nid)
    return Dense(model)


def _as_conv(linear: nn.Linear, shape: tuple[int, ...]) -> nn.Conv2d:
    """The convolution over a C×H×W map that computes `linear` over its flattening."""
    c, h, w = shape
    conv = nn.Conv2d(c, linear.out_features, (h, w), bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, c, h, w))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv.to(linear.weight.device)


def _replace(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)

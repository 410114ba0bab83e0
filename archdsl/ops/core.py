"""What every op declaration is made of: `OpDef`, its attributes (`AttrSpec`), what it keeps
for backward (`Keeps`), and the error a shape rule raises."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]
REQUIRED = object()


class OpShapeError(Exception):
    """Raised by a shape rule; the elaborator adds the location and the producing layer."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class AttrSpec:
    """An attribute: its type (int, float, bool, pad, choice, act, norm), default and range."""

    type: str
    default: Any = REQUIRED
    minimum: float | None = None
    choices: tuple = ()
    maximum: float | None = None
    doc: str = ""


def _nothing(a: dict, ins: list[Shape], out: Shape) -> int:
    return 0


@dataclass(frozen=True)
class Keeps:
    """What an op keeps for its backward pass when it trains, as PyTorch's autograd does
    (measured with saved_tensors_hooks; tests/backends/test_training_memory.py): what the
    gradient of its input needs (`for_input`), and what the gradients of its own parameters
    need (`for_params`) — "inputs" (its input tensors), "output", "extra" (tensors of its
    own: `extra` values per image in the activation dtype plus `extra_bytes` per image, such
    as max pooling's int64 indices, and `per_batch` values however large the batch: batch
    norm's batch mean and 1/σ)."""

    for_input: tuple[str, ...] = ()
    for_params: tuple[str, ...] = ()
    extra: Callable[[dict, list[Shape], Shape], int] = _nothing
    extra_bytes: Callable[[dict, list[Shape], Shape], int] = _nothing
    per_batch: Callable[[dict, list[Shape], Shape], int] = _nothing


INPUTS = Keeps(("inputs",))
OUTPUT = Keeps(("output",))
FOR_WEIGHTS = Keeps((), ("inputs",))  # conv/FC/linear: their input, for the weight gradient


@dataclass(frozen=True)
class OpDef:
    name: str
    # conv | linear | attention | pool | norm | scale | act | regularizer | shape | sequence |
    # join | source
    category: str
    doc: str
    attrs: dict[str, AttrSpec] = field(default_factory=dict)
    shape: Callable[[dict, list[Shape]], Shape] = lambda a, ins: ins[0]
    positional: tuple[str, ...] = ()  # order of call arguments: dropout(0.5), lrn(5)
    kernel: str | None = None  # attribute set by a digit suffix: conv3 → k=3
    dash: str | None = None  # attribute set by "-N": conv3-64 → out=64
    slash: str | None = None  # attribute set by "/S": maxpool3/2 → stride=2
    attaches: bool = False  # takes norm=/act= (emitted as separate nodes after it)
    # which of norm=/act= a network `defaults` line gives it: papers normalize convolutions,
    # almost never the classifier, so FC takes a norm only when one is written on it
    default_attach: tuple[str, ...] = ("norm", "act")
    arity: tuple[int, int] = (1, 1)  # (min, max) inputs; max 0 = unbounded
    in_syntax: bool = True  # can be written as a layer (joins come from add/concat/mul {...})
    prepare: Callable[[dict, list[Shape]], tuple[str, dict]] | None = None
    lowers_to: str | None = None  # the op `prepare` turns this one into (dwconv → conv)
    weights: Callable[[dict, list[Shape], Shape], int] = lambda a, ins, out: 0
    biases: Callable[[dict, list[Shape], Shape], int] = lambda a, ins, out: 0
    fan_in: Callable[[dict, list[Shape], Shape], int] = lambda a, ins, out: 0
    # for ops whose windows differ in size (adaptive pooling): the exact total
    total_connections: Callable[[dict, list[Shape], Shape], int] | None = None
    makes_units: bool = True
    weighted: bool = False  # MACs = connections
    # subtracts a per-channel mean (batch norm): a bias on the layer before has no effect, so
    # `bias=auto` there means none, even when the norm is written as a layer of its own
    cancels_bias: bool = False
    # the tensors a layer holds at inference, suffix → shape, keyed like PyTorch's state_dict
    # ("weight", "running_mean", "out_proj.weight"; "" is a tensor registered under the
    # layer's own name, like torchvision's `class_token`); backends and tests read this
    tensors: Callable[[dict, list[Shape], Shape], dict[str, Shape]] = lambda a, ins, out: {}
    # a layer that is valid but probably not what was meant: (warning, hint) or None
    advice: Callable[[dict, list[Shape]], tuple[str, str] | None] | None = None
    # those of `tensors` that are computed from the attributes rather than learned (buffers
    # like Swin's relative_position_index): suffix → values, flat and row-major
    derived: Callable[[dict, list[Shape], Shape], dict[str, tuple]] = lambda a, ins, out: {}
    # a user-defined op's own lowerings, by backend ("pytorch", "tvm"); the built-in ops'
    # are in each backend's table (archdsl.plugins.register_op)
    lowerings: dict[str, Callable] = field(default_factory=dict)
    keeps: Keeps = Keeps()  # what it keeps for backward in training
    view: bool = False  # its output is a view of its input (no memory of its own)

    def params(self, attrs: dict, ins: list[Shape], out: Shape) -> int:
        return self.weights(attrs, ins, out) + self.biases(attrs, ins, out)

    def units(self, out: Shape) -> int:
        return math.prod(out) if self.makes_units else 0

    def connections(self, attrs: dict, ins: list[Shape], out: Shape) -> int:
        if self.total_connections is not None:
            return self.total_connections(attrs, ins, out)
        return self.units(out) * self.fan_in(attrs, ins, out)

    def macs(self, attrs: dict, ins: list[Shape], out: Shape) -> int:
        return self.connections(attrs, ins, out) if self.weighted else 0


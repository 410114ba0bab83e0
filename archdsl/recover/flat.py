"""What an importer hands to structure recovery: a flat, typed graph of archdsl ops.

The importer (e.g. the PyTorch backend's) maps a traced network onto archdsl's op declarations
and records, per node, the module path it came from. Recovery (this package) needs no
framework: it turns a `FlatNet` into spec text a person would write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ops import OPS, REQUIRED, Shape


@dataclass
class FlatNode:
    id: int
    op: str
    attrs: dict[str, Any]
    inputs: list[int]
    shape: Shape
    # the module path (state_dict prefix) of the layer, or of the parameter for ops that hold
    # one tensor (`class_token`); None for a functional op (torch.flatten, `x + y`)
    name: str | None = None
    # the scope the node sits in: the module path whose forward made it
    scope: tuple[str, ...] = ()
    # the name must be kept: the node holds tensors and its name is their state_dict key
    keep_name: bool = False


@dataclass
class Unmapped:
    """A part of the network archdsl cannot express (yet): where it is and what to do."""

    where: str  # the module path, or the traced node's name for a functional op
    op: str  # the module class or function
    shapes: str  # input → output shapes
    reason: str
    suggestion: str = ""
    count: int = 1

    def render(self) -> str:
        text = f"{self.where}: {self.op} ({self.shapes}): {self.reason}"
        if self.count > 1:
            text += f" [and {self.count - 1} more like it]"
        if self.suggestion:
            text += f"\n  hint: {self.suggestion}"
        return text


@dataclass
class FlatNet:
    name: str
    input_shape: Shape
    nodes: list[FlatNode]  # in a topological order; nodes[0] is the input
    output: int
    classes: dict[str, str] = field(default_factory=dict)  # module path → class name
    source: str = ""  # what was imported, for the spec's header
    unmapped: list[Unmapped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cut: int | None = None  # the last node made before the first unmapped op
    # module paths called more than once (torchvision's Swin block runs its one
    # `stochastic_depth` twice): a scope cannot be opened twice, so what they make has none
    shared: set[str] = field(default_factory=set)

    def node(self, nid: int) -> FlatNode:
        return self.nodes[self._index()[nid]]

    def add(self, op: str, attrs: dict[str, Any], inputs: list[int], name: str | None = None,
            scope: tuple[str, ...] | None = None) -> FlatNode:
        """Append a node: attributes completed with the op's defaults and prepared as
        elaboration does (`pad=same` made a number, dwconv made a conv), its shape from the
        op's declaration (OpShapeError if it rejects the inputs), its scope from its name
        unless given. Node 0, the input, is made with the net."""
        full = {}
        for key, spec in OPS[op].attrs.items():
            if key in attrs:
                full[key] = attrs[key]
            elif spec.default is not REQUIRED:
                full[key] = spec.default
            else:
                raise KeyError(f"{op} needs `{key}`")
        if full.get("bias") == "auto":
            raise KeyError(f"{op} needs `bias` (true or false): a flat graph has no attached "
                           "norm to decide it")
        ins = [self.node(i).shape for i in inputs]
        if OPS[op].prepare is not None:
            op, full = OPS[op].prepare(full, ins)
        op_def = OPS[op]
        shape = tuple(op_def.shape(full, ins))
        keep = name is not None and bool(op_def.tensors(full, ins, shape))
        if scope is None:
            scope = tuple(name.split(".")[:-1]) if name else ()
        node = FlatNode(len(self.nodes), op, full, list(inputs), shape, name, scope, keep)
        self.nodes.append(node)
        return node

    @classmethod
    def start(cls, name: str, input_shape: Shape, **kw: Any) -> FlatNet:
        """An empty network: its input node only."""
        shape = tuple(input_shape)
        return cls(name, shape, [FlatNode(0, "input", {"shape": shape}, [], shape)], 0, **kw)

    def _index(self) -> dict[int, int]:
        if getattr(self, "_idx", None) is None or len(self._idx) != len(self.nodes):
            self._idx = {n.id: i for i, n in enumerate(self.nodes)}
        return self._idx

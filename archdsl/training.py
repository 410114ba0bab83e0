"""What training a network costs: memory and multiply-accumulates, forward and backward.

Counted from each op's declaration (`OpDef.keeps`, archdsl/ops/), as PyTorch's autograd behaves:

- **kept for backward**, per image: every tensor some op keeps — a conv's input (for its
  weight gradient), a ReLU's output, a max pool's indices — once, however many ops keep it
  (a view keeps its source). An op keeps what the gradient of its input needs only when
  that input needs a gradient (something before it trains), and what its parameters'
  gradients need only when they train: a frozen backbone keeps almost nothing.
- **parameter gradients**: one value per trainable parameter; **optimizer state**: SGD with
  momentum one more, Adam two more (its first and second moments).
- **forward + backward MACs**: a layer's forward MACs, once more for the gradient of its
  input (when something before it trains) and once more for its weights' gradients (when it
  trains) — the usual convention of 3× the forward MACs when every layer trains, less the
  first layer's input gradient (the images need none).

Freezing (`frozen(graph, ...)`) follows `archdsl.backends.pytorch.freeze`: everything but the
head — the last layer with parameters — and the last `last_stages` top-level stages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .ir import Graph
from .ops import OPS

OPTIMIZERS = {"sgd": 1, "adam": 2}  # values of state per trainable parameter (momentum; m, v)


@dataclass
class LayerCost:
    kept: int = 0  # bytes kept for backward per image, of tensors this layer keeps first
    kept_per_batch: int = 0  # bytes kept once per batch (batch norm's batch statistics)
    train_macs: int = 0  # forward + backward
    trainable: int = 0  # parameters
    frozen: int = 0


@dataclass
class KindCost(LayerCost):
    """The same, summed over the nodes of one kind of op (OpDef.category)."""

    params: int = 0
    macs: int = 0  # forward
    nodes: int = 0


@dataclass
class Training:
    dtype_bytes: int
    layers: dict[str, LayerCost] = field(default_factory=dict)  # by layer (Stats row) name
    kinds: dict[str, KindCost] = field(default_factory=dict)  # conv, linear, norm, act...

    @property
    def kept(self) -> int:
        return sum(x.kept for x in self.layers.values())

    @property
    def kept_per_batch(self) -> int:
        return sum(x.kept_per_batch for x in self.layers.values())

    def kept_for(self, batch: int) -> int:
        """Bytes kept for backward by a batch."""
        return batch * self.kept + self.kept_per_batch

    @property
    def trainable(self) -> int:
        return sum(x.trainable for x in self.layers.values())

    @property
    def frozen(self) -> int:
        return sum(x.frozen for x in self.layers.values())

    @property
    def train_macs(self) -> int:
        return sum(x.train_macs for x in self.layers.values())

    def memory(self, batch: int, optimizer: str) -> int:
        """Bytes to train on a batch: parameters, their gradients, the optimizer's state and
        the activations kept for backward."""
        params = (self.trainable + self.frozen) * self.dtype_bytes
        grads = self.trainable * self.dtype_bytes
        state = OPTIMIZERS[optimizer] * self.trainable * self.dtype_bytes
        return params + grads + state + self.kept_for(batch)


def trainable_names(graph: Graph, train: list[str] | None = None,
                    last_stages: int = 0) -> set[str]:
    """The layers that train after freezing: those named in `train` (and what they hold), or
    the head; with the last `last_stages` top-level stages holding parameters."""
    holders = [n.name for n in graph.nodes if _params(graph, n) > 0]
    if not holders:
        return set()
    keep = list(train) if train is not None else [holders[-1]]
    if last_stages:
        heads = {k.split(".")[0] for k in keep}
        stages: list[str] = []
        for name in holders:
            top = name.split(".")[0]
            if top not in heads and top not in stages:
                stages.append(top)
        keep += stages[-last_stages:]
    return {n for n in holders if any(n == k or n.startswith(k + ".") for k in keep)}


def _params(graph: Graph, node) -> int:
    if node.op == "input":
        return 0
    ins = [graph.node(i).shape for i in graph.inputs(node.id)]
    if node.shape is None or any(s is None for s in ins):
        return 0
    return OPS[node.op].params(node.attrs, ins, node.shape)


def costs(graph: Graph, dtype_bytes: int, trains: set[str] | None = None) -> Training:
    """Training costs per layer; `trains`: the names of the layers that train (None: all)."""
    out = Training(dtype_bytes)
    grad: dict[int, bool] = {}  # does this node's output need a gradient?
    storage: dict[int, int] = {}  # the node whose memory a node's output is
    kept: set[int] = set()
    layer_names = {n.id: n.name for n in graph.nodes if n.layer == n.id}
    for node in graph.nodes:
        storage[node.id] = node.id
        if node.op == "input":
            grad[node.id] = False
            continue
        op = OPS[node.op]
        ins = graph.inputs(node.id)
        if op.view:
            storage[node.id] = storage[ins[0]]
        params = _params(graph, node)
        trains_here = params > 0 and (trains is None or node.name in trains)
        needs_input = any(grad[i] for i in ins)
        grad[node.id] = needs_input or trains_here
        shapes = [graph.node(i).shape for i in ins]
        macs = op.macs(node.attrs, shapes, node.shape) if node.shape is not None else 0
        what = (op.keeps.for_input if needs_input else ()) + \
            (op.keeps.for_params if trains_here else ())
        mine = LayerCost(
            _kept(graph, node, what, ins, storage, kept, dtype_bytes),
            op.keeps.per_batch(node.attrs, shapes, node.shape) * dtype_bytes
            if "extra" in what and node.shape is not None else 0,
            macs * (1 + needs_input + trains_here),
            params if trains_here else 0, 0 if trains_here else params)
        _add(out.layers.setdefault(layer_names[node.layer], LayerCost()), mine)
        kind = out.kinds.setdefault(op.category, KindCost())
        _add(kind, mine)
        kind.params, kind.macs, kind.nodes = kind.params + params, kind.macs + macs, \
            kind.nodes + 1
    return out


def _add(total: LayerCost, part: LayerCost) -> None:
    for key in ("kept", "kept_per_batch", "train_macs", "trainable", "frozen"):
        setattr(total, key, getattr(total, key) + getattr(part, key))


def _kept(graph: Graph, node, what: tuple[str, ...], ins: list[int], storage: dict[int, int],
          kept: set[int], dtype_bytes: int) -> int:
    """Bytes per image this node keeps that no earlier node kept."""
    if node.shape is None:
        return 0
    tensors = []
    if "inputs" in what:
        tensors += [storage[i] for i in ins]
    if "output" in what:
        tensors.append(storage[node.id])
    total = 0
    for t in tensors:
        if t not in kept:
            kept.add(t)
            total += math.prod(graph.node(t).shape) * dtype_bytes  # type: ignore[arg-type]
    if "extra" in what:
        op = OPS[node.op]
        shapes = [graph.node(i).shape for i in ins]
        total += op.keeps.extra(node.attrs, shapes, node.shape) * dtype_bytes
        total += op.keeps.extra_bytes(node.attrs, shapes, node.shape)
    return total


# ---------------------------------------------------------------- for `archdsl stats`

def attach(stats, graph: Graph, batch: int = 1, trains: set[str] | None = None) -> Training:
    """Count the training costs of `graph` into `stats.extra` (what the training columns,
    JSON and CSV read): "training" (a Training) and "batch"."""
    from .analysis import DTYPE_BYTES
    training = costs(graph, DTYPE_BYTES[stats.dtype], trains)
    stats.extra.update(training=training, batch=batch)
    return training


def for_stats(stats, graph: Graph, batch: int = 1, freeze: bool = False,
              train_last: int = 0) -> Training:
    """`attach`, with the layers that train chosen as `stats --freeze [--train-last N]`
    chooses them: the head (and the last N stages), or all."""
    trains = trainable_names(graph, last_stages=train_last) if freeze or train_last else None
    return attach(stats, graph, batch, trains)


# the training columns `stats --training` adds to the default ones
DEFAULT_COLUMNS = ("trainable", "train_macs", "kept_mb", "adam_mb")


def of_layers(stats, name: str) -> LayerCost:
    """The costs of one layer, or of all the layers a rolled-up row (`layer1`) holds."""
    layers: dict[str, LayerCost] = stats.extra["training"].layers
    if name in layers:
        return layers[name]
    total = LayerCost()
    for key, cost in layers.items():
        if key.startswith(name + "."):
            _add(total, cost)
    return total


def definitions(batch: int) -> str:
    """What the training columns mean, for the table's caption."""
    per = "a batch of 1" if batch == 1 else f"a batch of {batch}"
    return (f"Kept = activations kept for backward, for {per}; Grad = parameter gradients; "
            "SGD/Adam = parameters + gradients + optimizer state (momentum; 2 moments) + Kept; "
            "Train MACs = forward + backward: 3 × forward, less the gradients nothing needs "
            "(the images', a frozen layer's weights')")

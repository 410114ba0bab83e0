"""Channel routing and arithmetic with numbers in a traced forward → archdsl's `slice`,
`channel_shuffle` and `affine`.

- `x.chunk(n, 1)`, `torch.split(x, sizes, 1)`, `x[:, a:b]`, `x.narrow(1, a, n)`: slices of the
  channels (of a map; the features of tokens or of a vector). A chunk's parts that are used
  are made at once, in order, as `split {}` makes them;
- `x.view(N, G, C // G, H, W)`, its transpose (1, 2), then a view back to N×C×H×W: ShuffleNet's
  `channel_shuffle(G)` (builder.py's `grouped` and `shuffled` layouts);
- `x * a + b` with numbers: an `affine` (one value), made when something else reads it; each
  channel picked (`x[:, i]`), unsqueezed, scaled and shifted, then concatenated in order
  (torchvision's `transform_input`): one `affine` with a value per channel.
"""

from __future__ import annotations

import operator
from typing import Any

from archdsl.ops import chunk_bounds, features

from .builder import PENDING, Builder, Part, Picked, Scaled, Ten, Unmappable


def number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------- parts of the channels

def _feature_dim(b: Builder, t: Ten) -> int:
    """The axis (batch first) that holds the channels of a map or the features of tokens."""
    if t.layout == "last":
        return 3
    if t.layout != "std":
        raise Unmappable("cutting the channels of a value not held as N×C×H×W")
    return 2 if len(b.shape(t)) == 2 else 1


def _channel_axis(b: Builder, t: Ten, dim: int, what: str) -> None:
    rank = len(b.torch_shape(t)) + 1
    if int(dim) % rank != _feature_dim(b, t):
        raise Unmappable(f"{what} along dimension {dim}",
                         "archdsl cuts channels (the features of tokens) only")


def _parts(b: Builder, t: Ten, sizes: list[int]) -> tuple[Part, ...]:
    """The parts, those the traced graph reads made now, in order."""
    ends = [sum(sizes[:k + 1]) for k in range(len(sizes))]
    scope = b.scope_of(b.node)
    parts = tuple(Part(t, e - s, e, scope) for s, e in zip(sizes, ends, strict=True))
    for k in _used(b, len(parts)):
        b.tensor(parts[k])
    return parts


def _used(b: Builder, n: int) -> list[int]:
    users = list(b.node.users) if b.node is not None else []
    if any(u.target is not operator.getitem for u in users):
        return list(range(n))  # the tuple itself is passed on
    return sorted({int(u.args[1]) % n for u in users if u.users})


def chunk(b: Builder, x: Any, chunks: int, dim: int = 0) -> tuple[Part, ...]:
    t = b.tensor(x, "chunk")
    _channel_axis(b, t, dim, "a chunk")
    c = features(b.shape(t))
    size = -(-c // int(chunks))
    n = -(-c // size)
    return _parts(b, t, [e - s for s, e in (chunk_bounds(c, n, i) for i in range(n))])


def split(b: Builder, x: Any, size: Any, dim: int = 0) -> tuple[Part, ...]:
    t = b.tensor(x, "split")
    _channel_axis(b, t, dim, "a split")
    c = features(b.shape(t))
    if isinstance(size, int):
        sizes = [min(size, c - s) for s in range(0, c, size)]
    else:
        sizes = [int(s) for s in size]
    return _parts(b, t, sizes)


def narrow(b: Builder, x: Any, dim: int, start: int, length: int) -> Part:
    t = b.tensor(x, "narrow")
    _channel_axis(b, t, dim, "a narrow")
    start = int(start) % features(b.shape(t))
    return Part(t, start, start + int(length), b.scope_of(b.node))


def index_channels(b: Builder, t: Ten, index: tuple) -> Part | Picked | None:
    """`x[:, a:b]` (`x[..., a:b]` channels-last or over tokens' features), `x[:, i]`; None
    for any other index."""
    rank = len(b.torch_shape(t)) + 1
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (slice(None),) * (rank - len(index) + 1) + index[k + 1:]
    dim = _feature_dim(b, t) if t.layout in ("std", "last") else -1
    if len(index) != dim + 1 or any(i != slice(None) for i in index[:dim]):
        return None
    c, at = features(b.shape(t)), index[dim]
    scope = b.scope_of(b.node)
    if isinstance(at, int) and t.layout == "std" and len(b.shape(t)) == 3:
        return Picked(t, at % c, scope)
    if isinstance(at, slice) and at.step in (None, 1):
        start, end, _ = at.indices(c)
        if start < end:
            return Part(t, start, end, scope)
    return None


def torch_shape(b: Builder, v: Part | Picked | Scaled) -> tuple[int, ...]:
    """How PyTorch holds a value not made yet, without the batch axis."""
    if isinstance(v, Scaled):
        return b.torch_shape(v.src) if isinstance(v.src, Ten) else torch_shape(b, v.src)
    shape = list(b.torch_shape(v.src))
    axis = _feature_dim(b, v.src) - 1
    if isinstance(v, Picked):
        return tuple(shape[:axis] + shape[axis + 1:])
    return tuple(shape[:axis] + [v.end - v.start] + shape[axis + 1:])


def unsqueeze(b: Builder, x: Any, dim: int) -> Any:
    if isinstance(x, Picked) and int(dim) in (1, -3):
        return Part(x.src, x.index, x.index + 1, x.scope)
    raise Unmappable(f"unsqueeze({dim})", "archdsl adds an axis only where it restores a "
                     "channel taken as x[:, i]")


# ---------------------------------------------------------------- numbers

def scaled(b: Builder, x: Any, scale: float = 1.0, shift: float = 0.0) -> Scaled:
    """`x * scale + shift`: a multiplication then an addition fold into one pending affine,
    computed as PyTorch computes them (anything more starts a new one)."""
    scope = b.scope_of(b.node)
    if isinstance(x, Scaled) and x.shift == 0.0 and scale == 1.0:
        return Scaled(x.src, x.scale, float(shift), x.scope)
    src = x if isinstance(x, Part) else b.tensor(x, "arithmetic")
    return Scaled(src, float(scale), float(shift), scope)


def arithmetic(b: Builder, op: Any, x: Any, y: Any) -> Scaled | None:
    """A value and a number: `+ - * /` as an affine; None if either is not that."""
    if number(x) and op in (operator.add, operator.mul):
        x, y = y, x
    elif number(x) and op is operator.sub:
        return scaled(b, scaled(b, y, -1.0), 1.0, float(x))
    if not number(y) or not isinstance(x, (Ten, *PENDING)):
        return None
    if op is operator.add:
        return scaled(b, x, shift=y)
    if op is operator.sub:
        return scaled(b, x, shift=-y)
    if op is operator.mul:
        return scaled(b, x, y)
    return scaled(b, x, 1.0 / y) if op is operator.truediv and y else None


def fused(b: Builder, items: list[Any]) -> Ten | None:
    """Parts of one map, each scaled and shifted, concatenated back in order: one affine
    with a value per channel (or the map itself). None if `items` are not that."""
    parts = []
    for v in items:
        p, scale, shift = (v.src, v.scale, v.shift) if isinstance(v, Scaled) else (v, 1.0, 0.0)
        if not isinstance(p, Part) or p in b.made:
            return None
        parts.append((p, scale, shift))
    src = parts[0][0].src
    bounds = [(p.start, p.end) for p, _, _ in parts]
    if src.layout != "std" or any(p.src != src for p, _, _ in parts) or \
            bounds != list(zip([0] + [e for _, e in bounds[:-1]], [e for _, e in bounds],
                               strict=True)) or bounds[-1][1] != features(b.shape(src)):
        return None
    scale = tuple(s for p, s, _ in parts for _ in range(p.end - p.start))
    shift = tuple(t for p, _, t in parts for _ in range(p.end - p.start))
    if set(scale) == {1.0} and set(shift) == {0.0}:
        return src
    return b.emit("affine", {"scale": scale, "shift": shift}, [src], scope=parts[0][0].scope)


# ---------------------------------------------------------------- channel shuffle

def grouped_view(b: Builder, t: Ten, out: list[int]) -> Ten | None:
    """A view that starts or ends a channel shuffle; None if `out` is not one."""
    shape = b.shape(t)
    if t.layout == "std" and len(shape) == 3 and len(out) == 4 and out[0] * out[1] == \
            shape[0] and out[2:] == list(shape[1:]):
        return Ten(t.nid, "grouped", out[0])
    if t.layout in ("grouped", "shuffled") and out == list(shape):
        if t.layout == "grouped":
            return Ten(t.nid)
        return b.emit("channel_shuffle", {"groups": t.groups}, [Ten(t.nid)])
    return None


def grouped_permute(t: Ten, perm: tuple[int, ...]) -> Ten | None:
    if t.layout in ("grouped", "shuffled") and perm == (0, 2, 1, 3, 4):
        return Ten(t.nid, "shuffled" if t.layout == "grouped" else "grouped", t.groups)
    return None

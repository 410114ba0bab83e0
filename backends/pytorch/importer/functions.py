"""Functions and tensor methods in a traced forward → archdsl ops (or layout changes).

`x + y` and `x * y` are joins (residual, gate) — or, with a parameter, the ops that hold one
(`pos_embedding`, `layerscale`); `torch.cat` is a concat (or ViT's class token); permutes,
views and flattens change how a value is held (builder.py) and make nodes only where
archdsl has one (`tokens`, `flatten`, `token`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from archdsl.ops import scale_shape

from . import activations as A
from . import channels as C
from . import modules as M
from .builder import Builder, Expanded, Param, Ten, Unmappable

Handler = Callable[..., Any]


def _owner(p: Any) -> str | None:
    """The module path of a parameter read with get_attr (`features.0.1.weight` →
    `features.0.1`): a functional layer is named after the module that holds its weights."""
    return p.name.rsplit(".", 1)[0] if isinstance(p, Param) and "." in p.name else None


def add(b: Builder, x: Any, y: Any, *rest: Any, **kw: Any) -> Any:
    if not rest and kw.get("alpha", 1) == 1:
        value = C.arithmetic(b, operator.add, x, y)
        if value is not None:
            return value
    if isinstance(x, Param) and isinstance(y, Ten):
        x, y = y, x
    if isinstance(y, Param) and isinstance(x, Ten):
        t = b.std(x, "adding a parameter")
        if len(b.shape(t)) == 2 and y.shape == (1, *b.shape(t)):
            return b.emit("pos_embedding", {}, [t], y.name)
        raise Unmappable(f"adding a parameter of shape {y.shape}",
                         "archdsl adds a parameter only as a position embedding (1×L×D)")
    if rest or kw.get("alpha", 1) != 1:
        raise Unmappable("a scaled sum (alpha)")
    return join(b, "add", [x, y])


def mul(b: Builder, x: Any, y: Any) -> Any:
    value = C.arithmetic(b, operator.mul, x, y)
    if value is not None:
        return value
    if isinstance(x, Param) and isinstance(y, Ten):
        x, y = y, x
    if isinstance(y, Param) and isinstance(x, Ten):
        shape = b.shape(Ten(x.nid))
        want = (shape[0],) if x.layout == "last" else scale_shape([shape])
        if x.layout not in ("std", "last") or tuple(y.shape) != tuple(want):
            raise Unmappable(f"multiplying by a parameter of shape {y.shape}",
                             "archdsl scales by a parameter only per feature (layerscale)")
        return b.emit("layerscale", {"init": b.constant(y.name)}, [Ten(x.nid)], y.name,
                      layout=x.layout)
    return join(b, "mul", [x, y])


def numbers(op: Any) -> Handler:
    """`x - 1`, `x / 2`: only with a number (archdsl has no difference or quotient of maps)."""
    def handle(b: Builder, x: Any, y: Any) -> Any:
        value = C.arithmetic(b, op, x, y)
        if value is None:
            raise Unmappable(f"{op.__name__} of two tensors",
                             "archdsl joins branches by add, mul and concat")
        return value
    return handle


def neg(b: Builder, x: Any) -> Any:
    return C.scaled(b, x, -1.0)


def join(b: Builder, op: str, items: list[Any]) -> Ten:
    ts = [b.tensor(v, op) for v in items]
    layouts = {t.layout for t in ts}
    if len(layouts) > 1:
        raise Unmappable(f"joining values held in different layouts ({', '.join(layouts)})")
    layout = layouts.pop()
    if layout in ("cl",):
        raise Unmappable(f"{op} of flattened pixels")
    return b.emit(op, {}, [Ten(t.nid) for t in ts], layout=layout)


def cat(b: Builder, items: Any, dim: int = 0) -> Ten:
    items = list(items)
    if len(items) == 1:
        return b.tensor(items[0], "torch.cat")
    joined = C.fused(b, items) if dim in (1, -3) else None
    if joined is not None:
        return joined
    if len(items) == 2 and isinstance(items[0], Expanded) and isinstance(items[1], Ten):
        seq = b.std(items[1], "a class token")
        if dim == 1 and len(b.shape(seq)) == 2 and \
                items[0].param.shape == (1, 1, b.shape(seq)[1]):
            return b.emit("class_token", {}, [seq], items[0].param.name)
    ts = [b.std(v, "torch.cat") for v in items]
    rank = len(b.shape(ts[0]))
    if dim not in (1, 1 - rank - 1) or rank != 3:
        raise Unmappable(f"concatenation along dimension {dim}",
                         "archdsl concatenates maps along channels")
    return b.concat(ts)


def flatten(b: Builder, x: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
    t = b.tensor(x, "flatten")
    if t.layout not in ("std", "grouped", "shuffled"):
        raise Unmappable("flattening a value not held as N×C×H×W")
    rank = len(b.torch_shape(t)) + 1
    start, end = start_dim % rank, end_dim % rank
    if start == 1 and end == rank - 1:
        return t if rank == 2 else Ten(t.nid, "flat")
    if rank == 4 and (start, end) == (2, 3):
        return Ten(t.nid, "cl")
    if t.layout in ("grouped", "shuffled") and (start, end) == (1, 2):
        return C.grouped_view(b, t, list(b.shape(t)))
    raise Unmappable(f"flatten({start_dim}, {end_dim})")


def reshape(b: Builder, x: Any, *shape: Any) -> Any:
    """A view whose result is flat, C×(H·W) or unchanged; others (channel shuffles,
    windows) are not archdsl's."""
    t = b.tensor(x, "reshape")
    dims = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    out = _resolve(list(dims), b.torch_shape(t))
    if out == list(b.torch_shape(t)):
        return t
    shuffle = C.grouped_view(b, t, out)
    if shuffle is not None:
        return shuffle
    if t.layout == "std" and out == [math.prod(b.shape(t))]:
        return Ten(t.nid, "flat")
    if t.layout == "std" and len(b.shape(t)) == 3:
        c, h, w = b.shape(t)
        if out == [c, h * w]:
            return Ten(t.nid, "cl")
    raise Unmappable(f"a reshape to N×{'×'.join(map(str, out))}",
                     "archdsl reshapes only by flatten and tokens")


def _resolve(dims: list[Any], per_image: tuple[int, ...]) -> list[int]:
    """The per-image shape a view asks for (the first entry is the batch, -1 inferred)."""
    dims = [int(d) for d in dims][1:]
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = math.prod(per_image) // known if known else 0
    return dims


def permute(b: Builder, x: Any, *dims: Any) -> Any:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    t = b.tensor(x, "permute")
    rank = len(b.torch_shape(t)) + 1
    perm = tuple(int(d) % rank for d in dims)
    if perm == tuple(range(rank)):
        return t
    if t.layout == "std" and perm == (0, 2, 3, 1):
        return Ten(t.nid, "last")
    if t.layout == "last" and perm == (0, 3, 1, 2):
        return Ten(t.nid, "std")
    if t.layout == "cl" and perm == (0, 2, 1):
        return b.emit("tokens", {}, [Ten(t.nid)])
    grouped = C.grouped_permute(t, perm)
    if grouped is not None:
        return grouped
    raise Unmappable(f"a permute {perm} of a value held {t.layout}",
                     "archdsl changes layout only for channels-last blocks and tokens")


def transpose(b: Builder, x: Any, d0: int, d1: int) -> Any:
    rank = len(b.torch_shape(b.tensor(x, "transpose"))) + 1
    perm = list(range(rank))
    perm[d0 % rank], perm[d1 % rank] = perm[d1 % rank], perm[d0 % rank]
    return permute(b, x, tuple(perm))


def mean(b: Builder, x: Any, dim: Any = None, keepdim: bool = False, **kw: Any) -> Any:
    t = b.std(x, "mean")
    dims = {int(d) % 4 for d in (dim if isinstance(dim, (tuple, list)) else [dim])} \
        if dim is not None else set()
    if len(b.shape(t)) == 3 and dims == {2, 3}:
        out = b.emit("gap", {}, [t])
        return out if keepdim else Ten(out.nid, "flat")
    raise Unmappable(f"a mean over dimensions {sorted(dims)}",
                     "archdsl averages over the pixels of a map (gap)")


def getitem(b: Builder, x: Any, index: Any) -> Any:
    if isinstance(x, (tuple, list)):
        return x[index]
    t = b.tensor(x, "indexing")
    part = C.index_channels(b, t, index if isinstance(index, tuple) else (index,))
    if part is not None:
        return part
    t = b.std(t, "indexing")
    if len(b.shape(t)) == 2 and isinstance(index, tuple) and len(index) in (2, 3) and \
            index[0] == slice(None) and isinstance(index[1], int) and \
            all(i == slice(None) for i in index[2:]):
        return b.emit("token", {"index": index[1] % b.shape(t)[0]}, [t])
    raise Unmappable(f"indexing a tensor with {index!r}",
                     "archdsl takes one token of a sequence (token(i))")


def expand(b: Builder, x: Any, *sizes: Any) -> Any:
    if isinstance(x, Param) and len(x.shape) == 3 and x.shape[:2] == (1, 1):
        return Expanded(x)
    raise Unmappable("expanding a tensor")


def act(op: str, *params: str) -> Handler:
    """An activation function; `params` name its arguments after the input, in order
    (F.leaky_relu(x, 0.2) is leakyrelu with negative_slope 0.2); `inplace` changes nothing."""
    def handle(b: Builder, x: Any, *args: Any, **kw: Any) -> Ten:
        given = dict(zip(params, args, strict=False))
        given.update({k: v for k, v in kw.items() if k in params})
        attrs = {k: float(v) if C.number(v) else v for k, v in given.items()}
        return A.elementwise(b, op, attrs, x, None)
    return handle


def hardtanh(b: Builder, x: Any, min_val: float = -1.0, max_val: float = 1.0, *r: Any,
             **kw: Any) -> Ten:
    if (min_val, max_val) == (0.0, 6.0):
        return A.elementwise(b, "relu6", {}, x, None)
    return A.elementwise(b, "hardtanh", {"min_val": float(min_val), "max_val": float(max_val)},
                         x, None)


def prelu(b: Builder, x: Any, weight: Any) -> Ten:
    if not isinstance(weight, Param):
        raise Unmappable("a PReLU whose slopes are computed")
    return A.prelu_layer(b, x, weight.shape, b.constant(weight.name, 0.25), _owner(weight))


def dropout(b: Builder, x: Any, p: float = 0.5, training: bool = True, *r: Any,
            **kw: Any) -> Ten:
    return A.elementwise(b, "dropout", {"p": float(p)}, x, None)


def stochastic_depth(b: Builder, x: Any, p: float, mode: str, training: bool = True) -> Ten:
    if mode != "row":
        raise Unmappable(f"stochastic depth in {mode!r} mode",
                         "archdsl's droppath drops each sample's branch (mode='row')")
    return A.elementwise(b, "droppath", {"p": float(p)}, x, None)


def softmax(b: Builder, x: Any, dim: int | None = None, *r: Any, **kw: Any) -> Ten:
    return A.softmax_layer(b, x, dim, None)


def log_softmax(b: Builder, x: Any, dim: int | None = None, *r: Any, **kw: Any) -> Ten:
    return A.softmax_layer(b, x, dim, None, "log_softmax")


def layer_norm(b: Builder, x: Any, shape: Any, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Ten:
    if not isinstance(weight, Param) or not isinstance(bias, Param):
        raise Unmappable("a layer norm without a learned scale and shift")
    return M.layernorm_layer(b, x, tuple(shape), eps, _owner(weight))


def batch_norm(b: Builder, x: Any, mean: Any, var: Any, weight: Any = None, bias: Any = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Ten:
    affine = isinstance(weight, Param) and isinstance(bias, Param)
    return M.batchnorm_layer(b, x, affine, isinstance(mean, Param), eps, momentum,
                             _owner(weight))


def linear(b: Builder, x: Any, weight: Any, bias: Any = None) -> Ten:
    if not isinstance(weight, Param):
        raise Unmappable("a linear layer whose weight is computed")
    return M.linear_layer(b, x, weight.shape[0], bias is not None, _owner(weight))


def max_pool2d(b: Builder, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Ten:
    if return_indices:
        raise Unmappable("max pooling that returns indices")
    return M.pool_layer(b, "maxpool", x, kernel_size, stride, padding, ceil_mode, dilation)


def avg_pool2d(b: Builder, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: Any = None) -> Ten:
    return M.pool_layer(b, "avgpool", x, kernel_size, stride, padding, ceil_mode, 1,
                        count_include_pad, divisor_override)


def adaptive(kind: str) -> Handler:
    def handle(b: Builder, x: Any, output_size: Any, *rest: Any, **kw: Any) -> Ten:
        return M.adaptive_layer(b, x, output_size, kind, None)
    return handle


def contiguous(b: Builder, x: Any, *rest: Any, **kw: Any) -> Any:
    return x


FUNCTIONS: dict[Any, Handler] = {
    operator.add: add, torch.add: add, operator.iadd: add,
    operator.mul: mul, torch.mul: mul, operator.imul: mul,
    torch.cat: cat, torch.concat: cat, torch.concatenate: cat,
    torch.flatten: flatten, torch.reshape: reshape,
    torch.permute: permute, torch.transpose: transpose, torch.swapaxes: transpose,
    torch.mean: mean, operator.getitem: getitem,
    operator.sub: numbers(operator.sub), torch.sub: numbers(operator.sub),
    operator.truediv: numbers(operator.truediv), torch.div: numbers(operator.truediv),
    operator.neg: neg, torch.neg: neg,
    torch.chunk: C.chunk, torch.split: C.split, torch.narrow: C.narrow,
    torch.unsqueeze: C.unsqueeze,
    F.relu: act("relu"), torch.relu: act("relu"), F.relu6: act("relu6"),
    F.hardtanh: hardtanh, F.hardtanh_: hardtanh, torch.sigmoid: act("sigmoid"),
    F.sigmoid: act("sigmoid"), torch.tanh: act("tanh"), F.tanh: act("tanh"),
    F.silu: act("swish"), F.hardswish: act("hardswish"), F.hardsigmoid: act("hardsigmoid"),
    F.gelu: act("gelu", "approximate"), F.leaky_relu: act("leakyrelu", "negative_slope"),
    F.leaky_relu_: act("leakyrelu", "negative_slope"), F.elu: act("elu", "alpha"),
    F.elu_: act("elu", "alpha"), F.celu: act("celu", "alpha"), torch.celu: act("celu", "alpha"),
    F.selu: act("selu"), torch.selu: act("selu"), F.mish: act("mish"),
    F.softplus: act("softplus", "beta", "threshold"), F.softsign: act("softsign"),
    F.logsigmoid: act("logsigmoid"), F.prelu: prelu, torch.prelu: prelu,
    F.softmax: softmax, torch.softmax: softmax, F.log_softmax: log_softmax,
    torch.log_softmax: log_softmax, F.dropout: dropout,
    F.layer_norm: layer_norm, F.batch_norm: batch_norm, F.linear: linear,
    F.max_pool2d: max_pool2d, F.avg_pool2d: avg_pool2d,
    F.adaptive_avg_pool2d: adaptive("avg"), F.adaptive_max_pool2d: adaptive("max"),
}
# functions of other libraries, by "module.name" (so that they need not be imported here)
NAMED_FUNCTIONS: dict[str, Handler] = {
    "torchvision.ops.stochastic_depth.stochastic_depth": stochastic_depth,
}
METHODS: dict[str, Handler] = {
    "add": add, "add_": add, "mul": mul, "mul_": mul, "flatten": flatten, "view": reshape,
    "reshape": reshape, "permute": permute, "transpose": transpose, "contiguous": contiguous,
    "mean": mean, "expand": expand, "relu": act("relu"), "relu_": act("relu"),
    "sigmoid": act("sigmoid"), "sigmoid_": act("sigmoid"), "tanh": act("tanh"),
    "softmax": softmax, "log_softmax": log_softmax, "sub": numbers(operator.sub),
    "div": numbers(operator.truediv), "neg": neg, "chunk": C.chunk, "split": C.split,
    "narrow": C.narrow, "unsqueeze": C.unsqueeze,
}
# what archdsl lacks, and what to say about it
SUGGESTIONS: dict[str, str] = {
    "pad": "archdsl pads symmetrically, as part of a convolution or pooling",
    "roll": "archdsl rolls maps only inside window_attention (Swin's shifted windows)",
    "einsum": "archdsl has no einsum",
}

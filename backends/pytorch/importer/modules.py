"""torch.nn modules → archdsl ops: one handler per module class (the inverse of the
backend's MODULES table). A handler checks that the module does what the archdsl op does —
zero padding, an affine norm — and raises Unmappable with the reason if not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from archdsl.ops import OPS, axes, pair

from .activations import ACTIVATIONS, PER_VALUE, elementwise
from .builder import Builder, Opaque, Ten, Unmappable

Handler = Callable[..., Any]


def _axes(value: Any, what: str) -> int | tuple[int, int]:
    """A size per axis as archdsl holds it: an int when height and width agree."""
    if isinstance(value, int):
        return value
    if len(value) != 2:
        raise Unmappable(f"a {what} over {len(value)} axes", "archdsl's maps are 2-D")
    return axes((int(value[0]), int(value[1])))


def _conv_pad(m: nn.Conv2d) -> int | tuple[int, int]:
    if m.padding == "valid":
        return 0
    if m.padding == "same":
        (kh, kw), (dh, dw) = pair(_axes(m.kernel_size, "kernel")), pair(_axes(m.dilation,
                                                                              "dilation"))
        if dh * (kh - 1) % 2 or dw * (kw - 1) % 2:
            raise Unmappable("padding='same' with an even kernel pads one side more")
        return axes((dh * (kh - 1) // 2, dw * (kw - 1) // 2))
    return _axes(m.padding, "padding")


def conv2d(b: Builder, m: nn.Conv2d, x: Any) -> Ten:
    if m.padding_mode != "zeros":
        raise Unmappable(f"padding_mode={m.padding_mode!r}", "archdsl pads with zeros")
    attrs = {"out": m.out_channels, "k": _axes(m.kernel_size, "kernel"),
             "stride": _axes(m.stride, "stride"), "pad": _conv_pad(m),
             "dilation": _axes(m.dilation, "dilation"), "groups": m.groups,
             "bias": m.bias is not None}
    return b.emit("conv", attrs, [b.std_map(x, "a convolution")], b.module_name())


def linear(b: Builder, m: nn.Linear, x: Any) -> Ten:
    return linear_layer(b, x, m.out_features, m.bias is not None, b.module_name())


def linear_layer(b: Builder, x: Any, out: int, bias: bool, name: str | None) -> Ten:
    """nn.Linear acts on the last dimension: over a flattened value it is archdsl's FC, over
    tokens or a channels-last map it is `linear` (per position); over a vector, FC — or
    `linear` when the vector is a token of a sequence (a transformer's head)."""
    t = b.tensor(x, "a linear layer")
    attrs = {"out": out, "bias": bias}
    if t.layout == "flat":
        return b.emit("fc", attrs, [Ten(t.nid)], name)
    if t.layout == "last":
        return b.emit("linear", attrs, [Ten(t.nid)], name, layout="last")
    if t.layout != "std":
        raise Unmappable("a linear layer over the flattened pixels of each channel")
    rank = len(b.shape(t))
    if rank == 2 or (rank == 1 and _from_sequence(b, t)):
        return b.emit("linear", attrs, [t], name)
    if rank == 1:
        return b.emit("fc", attrs, [t], name)
    raise Unmappable("a linear layer over the width of an N×C×H×W map",
                     "archdsl's linear acts on channels (after a permute to channels-last)")


def _from_sequence(b: Builder, t: Ten) -> bool:
    node = b.net.nodes[t.nid]
    while (node.op in PER_VALUE or node.op in ("layernorm", "bn")) and node.inputs:
        node = b.net.nodes[node.inputs[0]]
    return node.op == "token"


def batchnorm(b: Builder, m: nn.modules.batchnorm._BatchNorm, x: Any) -> Ten:
    return batchnorm_layer(b, x, m.affine, m.track_running_stats, m.eps, m.momentum,
                           b.module_name())


def batchnorm_layer(b: Builder, x: Any, affine: bool, stats: bool, eps: float,
                    momentum: float | None, name: str | None) -> Ten:
    if not affine or not stats:
        raise Unmappable("a batch norm without affine parameters or running statistics",
                         "archdsl's bn has both (affine=True, track_running_stats=True)")
    if momentum is None:
        raise Unmappable("a batch norm with a cumulative moving average (momentum=None)")
    t = b.std(x, "a batch norm")
    if len(b.shape(t)) == 2:
        raise Unmappable("a batch norm over tokens")
    return b.emit("bn", {"eps": float(eps), "momentum": float(momentum)}, [t], name)


def layernorm(b: Builder, m: nn.LayerNorm, x: Any) -> Ten:
    if not m.elementwise_affine or getattr(m, "bias", True) is None:
        raise Unmappable("a layer norm without a learned scale and shift")
    return layernorm_layer(b, x, tuple(m.normalized_shape), m.eps, b.module_name())


def layernorm_layer(b: Builder, x: Any, shape: tuple[int, ...], eps: float,
                    name: str | None) -> Ten:
    t = b.tensor(x, "a layer norm")
    if len(shape) != 1:
        raise Unmappable(f"a layer norm over {len(shape)} dimensions",
                         "archdsl's layernorm normalizes the features of each position")
    if t.layout == "last":
        return b.emit("layernorm", {"eps": float(eps)}, [Ten(t.nid)], name, layout="last")
    t = b.std(t, "a layer norm")
    if len(b.shape(t)) == 3:
        raise Unmappable("a layer norm over the width of an N×C×H×W map",
                         "archdsl's layernorm acts on channels (ConvNeXt's LayerNorm2d)")
    return b.emit("layernorm", {"eps": float(eps)}, [t], name)


def dropout(b: Builder, m: nn.Dropout, x: Any) -> Ten:
    return elementwise(b, "dropout", {"p": float(m.p)}, x, b.module_name())


def pool(op: str) -> Handler:
    def handle(b: Builder, m: Any, x: Any) -> Ten:
        return pool_layer(b, op, x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                          getattr(m, "dilation", 1), getattr(m, "count_include_pad", True),
                          getattr(m, "divisor_override", None), b.module_name())
    return handle


def pool_layer(b: Builder, op: str, x: Any, k: Any, stride: Any, pad: Any, ceil: bool,
               dilation: Any = 1, count_pad: bool = True, divisor: Any = None,
               name: str | None = None) -> Ten:
    k = _axes(k, "window")
    stride = _axes(stride if stride not in (None, ()) else k, "stride")
    pad = _axes(pad, "padding")
    if _axes(dilation, "dilation") != 1:
        raise Unmappable("a dilated pooling window")
    if divisor is not None or (not count_pad and pad):
        raise Unmappable("average pooling that leaves the padding out of the mean",
                         "archdsl's avgpool counts padding, as count_include_pad=True does")
    attrs = {"k": k, "stride": stride, "pad": pad, "ceil": bool(ceil)}
    return b.emit(op, attrs, [b.std_map(x, "pooling")], name)


def adaptive_avg(b: Builder, m: Any, x: Any) -> Ten:
    return adaptive_layer(b, x, m.output_size, "avg", b.module_name())


def adaptive_max(b: Builder, m: Any, x: Any) -> Ten:
    return adaptive_layer(b, x, m.output_size, "max", b.module_name())


def adaptive_layer(b: Builder, x: Any, size: Any, kind: str, name: str | None) -> Ten:
    t = b.std_map(x, "adaptive pooling")
    if size is None or (isinstance(size, (tuple, list)) and None in size):
        raise Unmappable("adaptive pooling that keeps a dimension")
    s = _axes(size, "output size")
    if s == 1:
        return b.emit("gap" if kind == "avg" else "gmp", {}, [t], name)
    if kind == "max":
        raise Unmappable(f"adaptive max pooling to {'×'.join(map(str, pair(s)))}",
                         "archdsl has gmp (to 1×1)")
    return b.emit("adaptive_avgpool", {"size": s}, [t], name)


def flatten(b: Builder, m: nn.Flatten, x: Any) -> Any:
    t = b.std(x, "flatten")
    if m.start_dim != 1 or m.end_dim != -1:
        raise Unmappable(f"Flatten({m.start_dim}, {m.end_dim})")
    if len(b.shape(t)) == 1:
        return t
    return b.emit("flatten", {}, [t], b.module_name())


def lrn(b: Builder, m: nn.LocalResponseNorm, x: Any) -> Ten:
    # PyTorch divides alpha by the window size (as Caffe does); archdsl's alpha is the paper's
    attrs = {"size": m.size, "alpha": m.alpha / m.size, "beta": float(m.beta), "k": float(m.k)}
    return b.emit("lrn", attrs, [b.std_map(x, "LRN")], b.module_name())


def attention(b: Builder, m: nn.MultiheadAttention, q: Any, k: Any = None, v: Any = None,
              key_padding_mask: Any = None, need_weights: bool = True, attn_mask: Any = None,
              average_attn_weights: bool = True, is_causal: bool = False) -> Any:
    """nn.MultiheadAttention as self-attention over tokens (batch first)."""
    if not (k == q and v == q):
        raise Unmappable("attention whose queries, keys and values differ (cross-attention)")
    if key_padding_mask is not None or attn_mask is not None or is_causal:
        raise Unmappable("attention with a mask")
    if not m.batch_first:
        raise Unmappable("attention over L×N×D inputs (batch_first=False)",
                         "archdsl's attention takes N×L×D tokens")
    if not m._qkv_same_embed_dim or m.in_proj_bias is None or m.bias_k is not None \
            or m.add_zero_attn:
        raise Unmappable("attention with other projections than Q, K, V and output with biases")
    t = b.std(q, "attention")
    out = b.emit("attention", {"heads": m.num_heads, "dropout": float(m.dropout)}, [t],
                 b.module_name())
    return (out, Opaque("attention weights") if need_weights else None)


def window_attention(b: Builder, m: Any, x: Any) -> Ten:
    """torchvision's ShiftedWindowAttention(V2), on a channels-last map, as archdsl's
    window_attention (Swin): heads, window, shift; v2's cosine attention and bias MLP."""
    t = b.tensor(x, "window attention")
    if t.layout != "last":
        raise Unmappable("window attention over a map not held channels-last")
    v2 = hasattr(m, "cpb_mlp")
    bias = m.qkv.bias is not None
    if bias != (m.proj.bias is not None):
        raise Unmappable("window attention with biases on only one of its projections")
    attrs = {"heads": m.num_heads, "window": _pair(m.window_size),
             "shift": _pair(m.shift_size), "bias": bias,
             "position_bias": "mlp" if v2 else "table", "cosine": v2,
             "dropout": float(m.attention_dropout), "proj_dropout": float(m.dropout)}
    if v2:
        attrs["mlp_hidden"] = m.cpb_mlp[0].out_features
    return b.emit("window_attention", attrs, [Ten(t.nid)], b.module_name(), layout="last")


def patch_merging(b: Builder, m: Any, x: Any) -> Ten:
    """torchvision's PatchMerging(V2) on a channels-last map: Swin's downsampling."""
    t = b.tensor(x, "patch merging")
    if t.layout != "last":
        raise Unmappable("patch merging of a map not held channels-last")
    attrs = {"out": m.reduction.out_features, "eps": float(m.norm.eps),
             "post_norm": type(m).__name__.endswith("V2")}
    return b.emit("patch_merging", attrs, [Ten(t.nid)], b.module_name(), layout="last")


def partition_attention(b: Builder, m: Any, x: Any) -> Ten:
    """torchvision's MaxViT PartitionAttentionLayer — partition a map into windows (or a grid
    of them), pre-norm attention and MLP with residuals per token, departition — as the layers
    archdsl writes on the map itself: LayerNorm and the MLP act per position whatever the
    partition, and window_attention partitions inside (partition=window or grid)."""
    t = b.std_map(x, "MaxViT's partition attention")
    norm, attn, drop = m.attn_layer
    c, h, w = b.shape(t)
    if (h, w) != tuple(m.grid_size) or (m.partition_type == "grid" and h != w):
        raise Unmappable(f"MaxViT attention built for {tuple(m.grid_size)} on a {h}×{w} map")
    if attn.scale_factor != c ** -0.5 or attn.n_heads * attn.head_dim != c:
        raise Unmappable("MaxViT attention with another scale or width than torchvision's")
    name, p = b.module_name(), float(m.stochastic_dropout.p)
    attrs = {"heads": attn.n_heads, "window": attn.size, "partition": m.partition_type,
             "scale": "channels", "keys": "maxvit"}
    y = b.emit("layernorm", {"eps": float(norm.eps)}, [t], f"{name}.attn_layer.0")
    y = b.emit("window_attention", attrs, [y], f"{name}.attn_layer.1")
    y = b.emit("dropout", {"p": float(drop.p)}, [y], f"{name}.attn_layer.2")
    y = b.emit("droppath", {"p": p}, [y], f"{name}.stochastic_dropout")
    t = b.emit("add", {}, [t, y])
    norm, fc1, act, fc2, drop = m.mlp_layer
    if type(act) is not nn.GELU or fc1.bias is None or fc2.bias is None:
        raise Unmappable("a MaxViT MLP other than torchvision's (GELU, biases)")
    y = b.emit("layernorm", {"eps": float(norm.eps)}, [t], f"{name}.mlp_layer.0")
    y = b.emit("linear", {"out": fc1.out_features, "bias": True}, [y], f"{name}.mlp_layer.1")
    y = b.emit("gelu", {"approximate": act.approximate}, [y], f"{name}.mlp_layer.2")
    y = b.emit("linear", {"out": fc2.out_features, "bias": True}, [y], f"{name}.mlp_layer.3")
    y = b.emit("dropout", {"p": float(drop.p)}, [y], f"{name}.mlp_layer.4")
    y = b.emit("droppath", {"p": p}, [y], f"{name}.stochastic_dropout_mlp")
    return b.emit("add", {}, [t, y])


def _pair(value: Any) -> Any:
    h, w = (value, value) if isinstance(value, int) else tuple(value)
    return int(h) if h == w else [int(h), int(w)]


def identity(b: Builder, m: nn.Module, x: Any, *rest: Any, **kw: Any) -> Any:
    return x


MODULES: dict[type, Handler] = {
    nn.Conv2d: conv2d,
    nn.Linear: linear,
    nn.BatchNorm2d: batchnorm,
    nn.BatchNorm1d: batchnorm,
    nn.LayerNorm: layernorm,
    nn.Dropout: dropout,
    nn.MaxPool2d: pool("maxpool"),
    nn.AvgPool2d: pool("avgpool"),
    nn.AdaptiveAvgPool2d: adaptive_avg,
    nn.AdaptiveMaxPool2d: adaptive_max,
    nn.Flatten: flatten,
    nn.LocalResponseNorm: lrn,
    nn.MultiheadAttention: attention,
    nn.Identity: identity,
    **ACTIVATIONS,
}

def register_module(cls: type, op: str, attrs: Callable[[nn.Module], dict[str, Any]]
                    ) -> None:
    """Import every module of class `cls` (exactly that class) as the archdsl op `op`, with
    the attributes `attrs(module)` gives, instead of tracing into it: how a module of one's own
    that an archdsl op describes — or that a user-defined op declares — is imported. The op's
    declared tensors must be the module's state_dict entries (the import's parameter check
    compares their sizes)."""
    if op not in OPS:
        raise KeyError(f"no archdsl op `{op}`")
    per_value = OPS[op].category in ("act", "regularizer")

    def handle(b: Builder, m: nn.Module, x: Any, *rest: Any, **kw: Any) -> Ten:
        if per_value:
            return elementwise(b, op, attrs(m), x, b.module_name())
        return b.emit(op, attrs(m), [b.std(x, op)], b.module_name())
    MODULES[cls] = handle


# modules of other libraries, by "module.ClassName" (they need not be imported here)
NAMED_MODULES: dict[str, Handler] = {
    **{f"torchvision.models.swin_transformer.{name}": handler for name, handler in (
        ("ShiftedWindowAttention", window_attention),
        ("ShiftedWindowAttentionV2", window_attention),
        ("PatchMerging", patch_merging), ("PatchMergingV2", patch_merging))},
    "torchvision.models.maxvit.PartitionAttentionLayer": partition_attention}


def handler_for(cls: type) -> Handler | None:
    return MODULES.get(cls) or NAMED_MODULES.get(f"{cls.__module__}.{cls.__qualname__}")


# modules archdsl does not have yet, and what to say about them
SUGGESTIONS: dict[str, str] = {
    "Conv1d": "archdsl's convolutions are 2-D",
    "Conv3d": "archdsl's convolutions are 2-D",
    "Dropout2d": "archdsl's dropout drops single values, not channels",
}

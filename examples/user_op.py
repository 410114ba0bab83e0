"""A user-defined op: group normalization (Wu & He, "Group Normalization", ECCV 2018), which
archdsl does not have built in, declared here and used from a spec without editing archdsl.

    python examples/user_op.py                            # declare, use, count, build, compile
    archdsl --plugin examples/user_op.py check SPEC.arch  # the same op from the command line

The declaration is an `OpDef`, as every op of archdsl/ops/ is: its attributes, its shape rule
and its counts (here: no weights, 2·C params for the per-channel scale and shift, no MACs,
C·H·W units), and the tensors it holds, keyed as PyTorch's state_dict keys them. The lowerings
are the op's own: a function making its `nn.Module` and, optionally, one making its Relax
expression for TVM. `category="norm"` makes it usable as `norm=groupnorm` too.
"""

from __future__ import annotations

import sys

import archdsl
from archdsl import AttrSpec, OpDef, OpShapeError, register_op


def _shape(attrs: dict, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    if len(ins[0]) != 3:
        raise OpShapeError(f"groupnorm needs a C×H×W map, got {ins[0]}")
    if ins[0][0] % attrs["num_groups"]:
        raise OpShapeError(f"{attrs['num_groups']} groups must divide the {ins[0][0]} channels")
    return ins[0]


GROUPNORM = OpDef(
    "groupnorm", "norm", "group normalization: groupnorm(32), or norm=groupnorm num_groups=32",
    # PyTorch's name, num_groups: a conv's `groups` is another attribute (defaults groups=...
    # would set both)
    attrs={"num_groups": AttrSpec("int", 32, 1), "eps": AttrSpec("float", 1e-5, 0)},
    positional=("num_groups",), shape=_shape,
    biases=lambda a, ins, out: 2 * ins[0][0],  # scale and shift per channel: params, not weights
    tensors=lambda a, ins, out: {"weight": (ins[0][0],), "bias": (ins[0][0],)})


def _torch(node, shapes):
    from torch import nn
    return nn.GroupNorm(node.attrs["num_groups"], shapes[0][0], eps=node.attrs["eps"])


def _tvm(ctx, node, xs, shapes):
    from tvm import relax
    return relax.op.nn.group_norm(
        xs[0], ctx.const(ctx.weights[f"{node.name}.weight"]),
        ctx.const(ctx.weights[f"{node.name}.bias"]), node.attrs["num_groups"], channel_axis=1,
        axes=[2, 3], epsilon=node.attrs["eps"])


# `archdsl --plugin examples/user_op.py` imports this file: registering is all it has to do
if "groupnorm" not in archdsl.OPS:
    register_op(GROUPNORM, pytorch=_torch, tvm=_tvm, aliases=["gn"])

SPEC = """
arch resnet_gn_stem(classes = 10)
input 3x32x32
defaults norm=groupnorm num_groups=8 act=relu
conv1: conv3-32
conv2: conv3-64/2
gn: groupnorm(16)
gap
fc: FC-{classes} act=none
"""


def main() -> None:
    net = archdsl.load(SPEC)
    print(net.format())
    for row in net.stats().rows:
        print(f"{row.name:8} {'+'.join(row.ops):22} params {row.params:6,}  macs {row.macs:,}")
    try:
        import torch
    except ImportError:
        print("PyTorch: not installed")
        return
    model = net.to_torch().eval()
    print("state_dict:", ", ".join(model.state_dict()))
    x = torch.randn(2, *net.graph.input_shape)
    with torch.no_grad():
        y = model(x)
    print(f"forward {tuple(x.shape)} -> {tuple(y.shape)}")
    try:
        compiled = net.compile("llvm", weights=model.state_dict(), batch=2)
    except ImportError:
        print("TVM: not installed")
        return
    diff = float(abs(compiled(x.numpy()) - y.numpy()).max())
    print(f"TVM: max abs diff vs PyTorch {diff:.2e}")


if __name__ == "__main__":
    main()
    sys.exit(0)

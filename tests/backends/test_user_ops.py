"""A user-defined op's lowerings: PyTorch's module must hold the tensors the op declares; TVM's
is used when given, and its absence is said when a network needs it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import archdsl  # noqa: E402
from archdsl import AttrSpec, OpDef, register_op, unregister_op  # noqa: E402

BIAS = OpDef("channel_bias", "scale", "adds a learned bias per channel",
             attrs={"init": AttrSpec("float", 0.0)},
             biases=lambda a, ins, out: ins[0][0],
             tensors=lambda a, ins, out: {"bias": (ins[0][0], 1, 1)})


class ChannelBias(torch.nn.Module):
    def __init__(self, shape) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(shape))

    def forward(self, x):
        return x + self.bias


def _tvm(ctx, node, xs, ins):
    from tvm import relax
    return relax.op.add(xs[0], ctx.const(ctx.weights[f"{node.name}.bias"].reshape(1, -1, 1, 1)))


@pytest.fixture
def registered(request):
    shape, tvm = request.param
    register_op(BIAS, pytorch=lambda node, ins: ChannelBias(shape(ins[0][0])), tvm=tvm)
    yield
    unregister_op("channel_bias")


NET = "arch a\ninput 3x4x4\nconv1-4\nb: channel_bias\n"


@pytest.mark.parametrize("registered", [(lambda c: (c, 1, 1), _tvm)], indirect=True)
def test_module_and_tvm_lowering(registered):
    pytest.importorskip("tvm")
    net = archdsl.load(NET)
    model = net.to_torch().eval()
    assert list(model.state_dict()) == ["0.weight", "0.bias", "b.bias"]
    with torch.no_grad():
        model.b.bias.normal_()
        x = torch.randn(2, 3, 4, 4)
        ref = model(x).numpy()
    got = net.compile("llvm", weights=model.state_dict(), batch=2)(x.numpy())
    assert np.abs(got - ref).max() < 1e-5


@pytest.mark.parametrize("registered", [(lambda c: (c,), None)], indirect=True)
def test_a_module_that_breaks_its_declaration_is_refused(registered):
    with pytest.raises(ValueError, match=r"holds \{'bias': \(4,\)\}, its declaration"):
        archdsl.load(NET).to_torch()


@pytest.mark.parametrize("registered", [(lambda c: (c, 1, 1), None)], indirect=True)
def test_without_a_tvm_lowering_compiling_says_so(registered):
    pytest.importorskip("tvm")
    with pytest.raises(NotImplementedError, match="registered without one"):
        archdsl.load(NET).compile("llvm")

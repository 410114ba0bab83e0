"""`archdsl import` of the language's channel routing, per-axis kernels and activations, each
written both as modules and as functions: every network round-trips (counts, strict
state_dict, same outputs) and becomes the op it is."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from test_import import round_trip  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import archdsl  # noqa: E402
from archdsl.backends.pytorch.importer import ImportFailed  # noqa: E402


def _ops(arch: archdsl.Architecture) -> list[str]:
    return [n.op for n in arch.graph.nodes]


class Acts(nn.Module):
    """Every activation with a setting that is not its default; PReLU per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.mods = nn.Sequential(
            nn.LeakyReLU(0.2), nn.ELU(0.5), nn.CELU(1.5), nn.SELU(), nn.Mish(),
            nn.Softplus(2.0, 10.0), nn.Softsign(), nn.Hardsigmoid(), nn.Hardswish(),
            nn.Hardtanh(-2.0, 2.0), nn.GELU("tanh"), nn.PReLU(6, 0.1), nn.LogSigmoid())
        self.prelu = nn.PReLU()

    def forward(self, x):
        x = self.mods(self.conv(x))
        x = F.leaky_relu(x, 0.3) + F.elu(x, 0.7) + F.hardsigmoid(x) + F.gelu(x, approximate="tanh")
        x = F.softplus(x, beta=0.5) + F.hardtanh(x, -3.0, 1.0) + F.mish(x) + F.selu(x)
        return F.log_softmax(self.prelu(x).mean((2, 3)), dim=1)


def test_activations_keep_their_settings():
    torch.manual_seed(0)
    arch = round_trip(Acts(), (3, 8, 8))
    attrs = {n.op: n.attrs for n in arch.graph.nodes}
    assert attrs["leakyrelu"]["negative_slope"] in (0.2, 0.3)
    assert attrs["softplus"]["threshold"] in (10.0, 20.0) and attrs["gelu"]["approximate"] == "tanh"
    prelus = [n.attrs for n in arch.graph.nodes if n.op == "prelu"]
    assert {(a["per_channel"], a["init"]) for a in prelus} == {(True, 0.1), (False, 0.25)}
    assert "log_softmax" in attrs and "hardtanh" in attrs


def test_the_shrinks_threshold_rrelu_and_softmin_import_as_their_ops():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Hardshrink(0.3), nn.Softshrink(0.2),
                           nn.Tanhshrink(), nn.Threshold(0.1, 2.0), nn.RReLU(0.1, 0.3),
                           nn.Softmin(dim=1))
    arch = round_trip(module, (3, 8, 8))
    attrs = {n.op: n.attrs for n in arch.graph.nodes}
    assert attrs["hardshrink"] == {"lambd": 0.3} and attrs["softshrink"] == {"lambd": 0.2}
    assert attrs["threshold"] == {"threshold": 0.1, "value": 2.0}
    assert attrs["rrelu"] == {"lower": 0.1, "upper": 0.3}
    assert "tanhshrink" in attrs and "softmin" in attrs


class Shuffle(nn.Module):
    """ShuffleNet v2's unit written by hand: chunk, a branch, concat, channel shuffle as
    view / transpose / view; then split, narrow, a slice and a rescaling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        x = self.conv(x)
        a, b = x.chunk(2, dim=1)
        x = torch.cat([a, self.branch(b)], 1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        p, q, r = torch.split(self.head(x), [1, 2, 3], dim=1)
        return torch.cat([r, p * 2.0 - 1.0, q.narrow(1, 1, 1)], 1) + x[:, 2:7]


def test_channel_split_chunk_and_shuffle_become_the_ops():
    torch.manual_seed(0)
    arch = round_trip(Shuffle(), (3, 6, 6))
    ops = _ops(arch)
    assert ops.count("channel_shuffle") == 1 and ops.count("slice") == 7
    assert "affine" in ops and "reshape" not in ops


class Inputs(nn.Module):
    """torchvision's transform_input: each channel picked, rescaled, concatenated again."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, (1, 5), padding=(0, 2))
        self.conv2 = nn.Conv2d(4, 4, (3, 1), stride=(2, 1), padding=(1, 0))

    def forward(self, x):
        x = torch.cat([torch.unsqueeze(x[:, i], 1) * s + t for i, (s, t) in
                       enumerate(((0.5, 0.1), (0.25, -0.2), (2.0, 0.0)))], 1)
        return self.conv2(self.conv(x))


def test_per_channel_rescaling_is_one_affine_and_kernels_are_per_axis():
    torch.manual_seed(0)
    arch = round_trip(Inputs(), (3, 6, 10))
    nodes = {n.op: n for n in arch.graph.nodes if n.op != "input"}
    assert list(nodes) == ["affine", "conv"] and len(_ops(arch)) == 4
    assert nodes["affine"].attrs["scale"] == (0.5, 0.25, 2.0)
    text = archdsl.from_torch(Inputs(), (3, 6, 10)).text
    assert "conv1x5-4" in text and "conv3x1-4 stride=2x1" in text


def test_what_is_still_missing_is_named():
    class Height(nn.Module):
        def forward(self, x):
            return x[:, :, 1:3]

    with pytest.raises(ImportFailed, match="getitem"):
        archdsl.from_torch(Height(), (3, 4, 4))


@pytest.mark.parametrize("name", [
    "Inputs", *[pytest.param(n, marks=[] if os.environ.get("ARCHDSL_FULL_ZOO") == "1" else
                             [pytest.mark.skip(reason="TVM builds take tens of seconds; "
                                               "ARCHDSL_FULL_ZOO=1 runs them")])
                for n in ("Shuffle", "Acts")]])
def test_tvm_build_of_the_imported_ops_computes_what_pytorch_does(name):
    pytest.importorskip("tvm")
    module, shape = {"Inputs": (Inputs, (3, 6, 10)), "Shuffle": (Shuffle, (3, 6, 6)),
                     "Acts": (Acts, (3, 8, 8))}[name]
    torch.manual_seed(0)
    model = module().eval()
    compiled = archdsl.from_torch(model, shape).load().compile("llvm",
                                                              weights=model.state_dict())
    x = torch.randn(1, *shape)
    with torch.no_grad():
        want = model.double()(x.double()).numpy()
    assert abs(compiled(x.numpy()) - want).max() <= 1e-4 * max(1.0, abs(want).max())

"""Per-op counts: parameters and output shapes against the equivalent torch.nn layer, and
units/weights/connections/MACs against the conventions in archdsl/ops/__init__.py's docstring:

  units = C·H·W of a layer's output; weights = multiplicative weights only;
  params = weights + biases + norm scale/shift; connections = units × fan-in
  (conv K·K·Cin/groups, FC in, pooling K·K); MACs = connections of conv/FC; FLOPs = 2 × MACs.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

from archdsl.analysis import analyse
from archdsl.api import load
from archdsl.ir import validate
from archdsl.ops import pair

torch = pytest.importorskip("torch")
nn = torch.nn


def build(shape: tuple, *lines: str):
    """An arch with the given input shape and layers; returns (graph, stats, last row)."""
    text = "arch t\ninput " + "x".join(map(str, shape)) + "\n" + "\n".join(lines) + "\n"
    g = load(text).graph
    validate(g)
    stats = analyse(g)
    return g, stats, stats.rows[-1]


def torch_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def torch_shape(module, shape: tuple) -> tuple:
    with torch.no_grad():
        return tuple(module(torch.zeros(1, *shape)).shape[1:])


# ---------------------------------------------------------------- convolution

CONV_CASES = [
    # spec line, input C×H×W, torch layer
    ("conv3-16", (3, 32, 32), lambda: nn.Conv2d(3, 16, 3, padding=1)),
    ("conv7-64/2", (3, 224, 224), lambda: nn.Conv2d(3, 64, 7, stride=2, padding=3)),
    ("conv11-96/4 pad=valid", (3, 227, 227), lambda: nn.Conv2d(3, 96, 11, stride=4)),
    ("conv5-6 pad=valid", (1, 32, 32), lambda: nn.Conv2d(1, 6, 5)),
    ("conv3-32 groups=4 bias=false", (8, 15, 15),
     lambda: nn.Conv2d(8, 32, 3, padding=1, groups=4, bias=False)),
    ("conv5-256 groups=2", (96, 27, 27), lambda: nn.Conv2d(96, 256, 5, padding=2, groups=2)),
    ("conv1-8/2 pad=valid", (4, 7, 7), lambda: nn.Conv2d(4, 8, 1, stride=2)),
    ("conv3-8/2", (4, 7, 7), lambda: nn.Conv2d(4, 8, 3, stride=2, padding=1)),
    ("conv3-8/2 pad=2", (4, 9, 9), lambda: nn.Conv2d(4, 8, 3, stride=2, padding=2)),
    ("conv3-8 dilation=2", (4, 16, 16), lambda: nn.Conv2d(4, 8, 3, padding=2, dilation=2)),
    ("conv2-8 pad=valid", (4, 9, 9), lambda: nn.Conv2d(4, 8, 2)),
    ("conv3-8 bias=false", (4, 8, 8), lambda: nn.Conv2d(4, 8, 3, padding=1, bias=False)),
    ("dwconv3/2", (32, 16, 16), lambda: nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32)),
    ("dwconv3-64", (32, 16, 16), lambda: nn.Conv2d(32, 64, 3, padding=1, groups=32)),
    ("dwconv5 pad=valid bias=false", (16, 9, 9),
     lambda: nn.Conv2d(16, 16, 5, groups=16, bias=False)),
    # kernels, strides, padding and dilation per axis (Inception v3's 1×7 and 7×1)
    ("conv1x7-192", (128, 17, 17), lambda: nn.Conv2d(128, 192, (1, 7), padding=(0, 3))),
    ("conv7x1-192 pad=3,0", (128, 17, 17), lambda: nn.Conv2d(128, 192, (7, 1), padding=(3, 0))),
    ("conv-8 k=1x3", (4, 9, 9), lambda: nn.Conv2d(4, 8, (1, 3), padding=(0, 1))),
    ("conv-8 k=[3, 1] pad=valid", (4, 9, 9), lambda: nn.Conv2d(4, 8, (3, 1))),
    ("conv3x5-8/2 dilation=1x2", (4, 16, 16),
     lambda: nn.Conv2d(4, 8, (3, 5), stride=2, padding=(1, 4), dilation=(1, 2))),
    ("conv3-8 stride=1x2 pad=0,1", (4, 9, 9),
     lambda: nn.Conv2d(4, 8, 3, stride=(1, 2), padding=(0, 1))),
    ("dwconv1x5/2", (6, 10, 10), lambda: nn.Conv2d(6, 6, (1, 5), 2, (0, 2), groups=6)),
]


@pytest.mark.parametrize("line,shape,make", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_against_torch(line, shape, make):
    layer = make()
    g, stats, row = build(shape, line)
    node = g.nodes[1]
    assert node.op == "conv"
    assert node.shape == torch_shape(layer, shape)
    assert row.params == torch_params(layer)
    assert row.weights == layer.weight.numel()
    kh, kw = layer.kernel_size
    cin, cout, groups = shape[0], node.attrs["out"], node.attrs["groups"]
    assert groups == layer.groups and pair(node.attrs["stride"]) == layer.stride
    assert pair(node.attrs["pad"]) == layer.padding
    assert row.weights == kh * kw * (cin // groups) * cout
    units = math.prod(node.shape)
    assert row.units == units
    assert row.connections == units * kh * kw * cin // groups
    assert row.macs == row.connections
    assert stats.totals["flops"] == 2 * row.macs


def test_conv_with_norm_and_act_is_one_layer():
    torch_layer = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                nn.ReLU())
    g, stats, row = build((3, 32, 32), "conv3-16 norm=bn act=relu")
    assert [n.op for n in g.nodes[1:]] == ["conv", "bn", "relu"]
    assert len(stats.rows) == 1 and row.ops == ["conv", "bn", "relu"]
    assert row.params == torch_params(torch_layer) == 3 * 3 * 3 * 16 + 2 * 16
    assert row.weights == 3 * 3 * 3 * 16
    assert row.units == 16 * 32 * 32  # the layer's output, not conv + bn + relu outputs
    assert row.connections == row.macs == 16 * 32 * 32 * 27
    assert g.output_shape == torch_shape(torch_layer, (3, 32, 32))


def test_conv_bias_true_with_norm():
    torch_layer = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=True), nn.BatchNorm2d(8))
    _, _, row = build((3, 8, 8), "conv3-8 norm=bn bias=true")
    assert row.params == torch_params(torch_layer)


# ---------------------------------------------------------------- fully connected

FC_CASES = [
    (("FC-10",), (16, 5, 5), lambda: nn.Sequential(nn.Flatten(), nn.Linear(400, 10))),
    (("FC-4096",), (256, 6, 6), lambda: nn.Sequential(nn.Flatten(), nn.Linear(9216, 4096))),
    (("FC-7 bias=false",), (3, 2, 2),
     lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 7, bias=False))),
    (("FC-20", "FC-10"), (20,), lambda: nn.Linear(20, 10)),
    (("flatten", "dense_layer-5"), (2, 3, 3),
     lambda: nn.Sequential(nn.Flatten(), nn.Linear(18, 5))),
]


@pytest.mark.parametrize("lines,shape,make", FC_CASES, ids=[" ".join(c[0]) for c in FC_CASES])
def test_fc_against_torch(lines, shape, make):
    layer = make()
    if lines[0] == "FC-20":  # a vector input comes from an earlier FC
        g, _, row = build((20, 1, 1), "flatten", *lines[1:])
    else:
        g, _, row = build(shape, *lines)
    node = g.nodes[-1]
    assert node.op == "fc"
    assert node.shape == torch_shape(layer, shape)
    assert row.params == torch_params(layer)
    fan_in = math.prod(shape)
    assert row.weights == fan_in * node.attrs["out"]
    assert row.units == node.attrs["out"]
    assert row.connections == row.macs == node.attrs["out"] * fan_in


def test_fc_with_act_and_norm():
    layer = nn.Sequential(nn.Flatten(), nn.Linear(48, 10, bias=False), nn.BatchNorm1d(10),
                          nn.ReLU())
    g, _, row = build((3, 4, 4), "FC-10 norm=bn act=relu")
    assert [n.op for n in g.nodes[1:]] == ["fc", "bn", "relu"]
    assert row.params == torch_params(layer)
    assert row.units == 10 and row.macs == 480


# ---------------------------------------------------------------- pooling

POOL_CASES = [
    ("maxpool", (3, 32, 32), lambda: nn.MaxPool2d(2, 2)),
    ("maxpool", (3, 7, 7), lambda: nn.MaxPool2d(2, 2)),
    ("maxpool3/2", (64, 55, 55), lambda: nn.MaxPool2d(3, 2)),
    ("maxpool3/2 ceil=true", (64, 112, 112), lambda: nn.MaxPool2d(3, 2, ceil_mode=True)),
    ("maxpool3/2 ceil=true", (480, 28, 28), lambda: nn.MaxPool2d(3, 2, ceil_mode=True)),
    ("maxpool3/2 pad=1 ceil=true", (5, 10, 10), lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
    ("maxpool3/2 pad=1", (64, 112, 112), lambda: nn.MaxPool2d(3, 2, 1)),
    ("maxpool3/1 pad=same", (192, 28, 28), lambda: nn.MaxPool2d(3, 1, 1)),
    ("maxpool2/1", (3, 5, 5), lambda: nn.MaxPool2d(2, 1)),
    ("avgpool2/2", (6, 28, 28), lambda: nn.AvgPool2d(2, 2)),
    ("avgpool5/3 pad=valid", (512, 14, 14), lambda: nn.AvgPool2d(5, 3)),
    ("avgpool3/2 pad=1 ceil=true", (4, 8, 8), lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True)),
    ("avgpool3", (4, 9, 9), lambda: nn.AvgPool2d(3)),
    ("maxpool1x3/1 pad=0,1", (4, 9, 9), lambda: nn.MaxPool2d((1, 3), 1, (0, 1))),
    ("avgpool3x2 stride=2x1", (4, 9, 9), lambda: nn.AvgPool2d((3, 2), (2, 1))),
]


@pytest.mark.parametrize("line,shape,make", POOL_CASES,
                         ids=[f"{c[0]}@{c[1][1]}" for c in POOL_CASES])
def test_pooling_against_torch(line, shape, make):
    layer = make()
    g, _, row = build(shape, line)
    node = g.nodes[1]
    assert node.shape == torch_shape(layer, shape)
    assert row.params == torch_params(layer) == 0 and row.weights == 0
    units = math.prod(node.shape)
    assert row.units == units
    kh, kw = pair(node.attrs["k"])
    assert row.connections == units * kh * kw
    assert row.macs == 0


@pytest.mark.parametrize("line,make", [("gap", lambda: nn.AdaptiveAvgPool2d(1)),
                                       ("gmp", lambda: nn.AdaptiveMaxPool2d(1))])
def test_global_pooling(line, make):
    shape = (512, 7, 5)
    g, _, row = build(shape, line)
    assert g.output_shape == torch_shape(make(), shape) == (512, 1, 1)
    assert row.units == 512 and row.params == 0 and row.macs == 0
    assert row.connections == 512 * 7 * 5  # units × fan-in (the whole map)


def torch_adaptive_window_total(size: int, out: int) -> int:
    """Sum of PyTorch's adaptive window lengths, read off adaptive_avg_pool1d on one-hots."""
    eye = torch.eye(size).unsqueeze(1)  # batch j: a one-hot at position j
    pooled = nn.functional.adaptive_avg_pool1d(eye, out)  # (size, 1, out)
    return int((pooled > 0).sum())


@pytest.mark.parametrize("shape,size", [((512, 14, 14), 7), ((256, 13, 13), 6),
                                        ((256, 6, 6), 6), ((8, 7, 5), 3), ((3, 3, 3), 5),
                                        ((16, 1, 1), 7), ((4, 10, 10), 1), ((4, 10, 9), (3, 4)),
                                        ((2, 5, 7), (7, 2))])
def test_adaptive_pooling(shape, size):
    layer = nn.AdaptiveAvgPool2d(size)
    written = size if isinstance(size, int) else "x".join(map(str, size))
    g, _, row = build(shape, f"adaptive_avgpool({written})")
    assert g.output_shape == torch_shape(layer, shape)
    assert row.units == math.prod(g.output_shape) and row.params == 0 and row.macs == 0
    c, h, w = shape
    oh, ow = (size, size) if isinstance(size, int) else size
    expected = c * torch_adaptive_window_total(h, oh) * torch_adaptive_window_total(w, ow)
    assert row.connections == expected


def test_adaptive_pooling_hand_computed():
    # 7 → 3: windows [0,3) [2,5) [4,7), three of 3: 9 per axis
    _, _, row = build((2, 7, 7), "adaptive_avgpool(3)")
    assert row.connections == 2 * 9 * 9
    # equal windows: units × (H/S)²
    _, _, row = build((512, 14, 14), "adaptive_avgpool(7)")
    assert row.connections == 512 * 7 * 7 * 4


def test_adaptive_pooling_with_a_huge_output_size_is_fast():
    # the window sum has a closed form; building a Python list of `size` windows does not scale
    # (600,000² outputs per channel: just within archdsl's limit on a tensor, limits.py)
    code = textwrap.dedent("""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
        from archdsl.api import load
        a = load("arch a\\ninput 3x8x8\\nadaptive_avgpool(600000)\\n")
        print(a.stats().totals["connections"])
    """)
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=30, env={"OPENBLAS_NUM_THREADS": "1", "PATH": ""})
    except subprocess.TimeoutExpired:
        pytest.fail("analysing adaptive_avgpool(600000) took more than 30 s")
    assert res.returncode == 0, res.stderr[-2000:]
    # every one of the 600,000 windows per axis covers exactly one input position
    assert int(res.stdout.strip()) == 3 * 600_000 * 600_000


# ---------------------------------------------------------------- normalization, activations

def test_batchnorm():
    g, _, row = build((64, 14, 14), "bn")
    assert g.output_shape == torch_shape(nn.BatchNorm2d(64).eval(), (64, 14, 14))
    assert row.params == torch_params(nn.BatchNorm2d(64)) == 128
    assert row.weights == 0 and row.connections == 0 and row.macs == 0
    assert row.units == 64 * 14 * 14


def test_lrn():
    g, _, row = build((96, 55, 55), "LRN")
    assert g.output_shape == torch_shape(nn.LocalResponseNorm(5), (96, 55, 55))
    assert row.params == torch_params(nn.LocalResponseNorm(5)) == 0
    assert row.units == 96 * 55 * 55 and row.macs == 0


@pytest.mark.parametrize("name,make", [
    ("relu", nn.ReLU), ("relu6", nn.ReLU6), ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh),
    ("gelu", nn.GELU), ("swish", nn.SiLU), ("hardswish", nn.Hardswish),
    ("softmax", lambda: nn.Softmax(dim=1)), ("hardsigmoid", nn.Hardsigmoid),
    ("hardtanh(-2, 3)", lambda: nn.Hardtanh(-2, 3)), ("leakyrelu(0.2)", lambda: nn.LeakyReLU(0.2)),
    ("elu", nn.ELU), ("celu(2)", lambda: nn.CELU(2.0)), ("selu", nn.SELU),
    ("softplus(2, 10)", lambda: nn.Softplus(2, 10)), ("mish", nn.Mish), ("softsign", nn.Softsign),
    ("logsigmoid", nn.LogSigmoid), ("log_softmax", lambda: nn.LogSoftmax(dim=1)),
    ("gelu approximate=tanh", lambda: nn.GELU(approximate="tanh")),
    ("prelu", nn.PReLU), ("prelu per_channel=true", lambda: nn.PReLU(8)),
    ("hardshrink(0.3)", lambda: nn.Hardshrink(0.3)), ("softshrink", nn.Softshrink),
    ("tanhshrink", nn.Tanhshrink), ("threshold(0.1, 20)", lambda: nn.Threshold(0.1, 20)),
    ("rrelu", nn.RReLU), ("softmin", lambda: nn.Softmin(dim=1))])
def test_activations(name, make):
    shape = (8, 5, 3)
    g, _, row = build(shape, name)
    assert g.nodes[1].op == name.split("(")[0].split()[0]
    assert g.output_shape == torch_shape(make(), shape) == shape
    assert row.params == row.weights == torch_params(make())  # prelu's slopes, else none
    assert row.units == 8 * 5 * 3
    assert row.connections == row.macs == 0


@pytest.mark.parametrize("alias,op", [("silu", "swish"), ("hard_sigmoid", "hardsigmoid"),
                                      ("hswish", "hardswish"), ("leaky_relu", "leakyrelu")])
def test_activation_spellings(alias, op):
    g, _, _ = build((4, 3, 3), alias, f"conv1-4 act={alias}")
    assert [n.op for n in g.nodes[1:]] == [op, "conv", op]


def test_dropout_and_flatten_make_no_units():
    g, stats, _ = build((4, 3, 3), "dropout(0.4)", "flatten")
    drop, flat = stats.rows
    assert g.output_shape == torch_shape(nn.Flatten(), (4, 3, 3)) == (36,)
    for row in (drop, flat):
        assert (row.units, row.params, row.connections, row.macs) == (0, 0, 0, 0)
    assert drop.shape == (4, 3, 3)


# ---------------------------------------------------------------- joins

def test_add_join():
    g, stats, row = build((8, 6, 6), "add { | conv3-8 }")
    assert row.op == "add" and g.output_shape == (8, 6, 6)
    assert row.units == 8 * 6 * 6 and row.params == row.connections == row.macs == 0
    conv = stats.rows[0]
    assert stats.totals["params"] == conv.params == 8 * 8 * 9 + 8


def test_concat_join():
    a = torch.zeros(1, 2, 5, 5)
    b = torch.zeros(1, 3, 5, 5)
    g, stats, row = build((4, 5, 5), "concat { conv1-2 | conv3-3 | }")
    assert g.output_shape == tuple(torch.cat([a, b, torch.zeros(1, 4, 5, 5)], 1).shape[1:])
    assert row.op == "concat" and row.units == 0 and row.params == 0
    assert stats.totals["units"] == (2 + 3) * 25
    assert stats.totals["params"] == (4 * 2 + 2) + (4 * 9 * 3 + 3)


def test_mul_join_broadcasts_a_gate():
    g, _, row = build((16, 4, 4), "gate { gap; conv1-16 act=sigmoid }")
    assert row.op == "mul" and g.output_shape == (16, 4, 4)
    assert row.units == 16 * 16 and row.params == 0


# ---------------------------------------------------------------- totals

def test_small_network_totals_against_torch():
    spec = ("conv5-6 pad=valid act=tanh", "avgpool2/2", "conv5-16 pad=valid norm=bn act=relu",
            "maxpool", "FC-120 act=relu", "dropout", "FC-10")
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, 5, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Dropout(), nn.Linear(120, 10))
    g, stats, _ = build((1, 32, 32), *spec)
    t = stats.totals
    assert t["params"] == torch_params(model)
    assert g.output_shape == torch_shape(model.eval(), (1, 32, 32))
    weights = sum(m.weight.numel() for m in model if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert t["weights"] == weights
    conv1, conv2 = 6 * 28 * 28 * 25, 16 * 10 * 10 * 150
    assert t["macs"] == conv1 + conv2 + 400 * 120 + 120 * 10
    assert t["flops"] == 2 * t["macs"]
    assert t["units"] == 6 * 28 * 28 + 6 * 14 * 14 + 16 * 10 * 10 + 16 * 5 * 5 + 120 + 10
    assert t["connections"] == t["macs"] + 6 * 14 * 14 * 4 + 16 * 5 * 5 * 4
    assert t["param_bytes"] == 4 * t["params"] and t["activation_bytes"] == 4 * t["units"]
    half = analyse(g, dtype="float16").totals
    assert half["param_bytes"] == 2 * t["params"] and half["activation_bytes"] == 2 * t["units"]


def test_unknown_dtype():
    g, _, _ = build((3, 4, 4), "relu")
    with pytest.raises(ValueError, match="unknown dtype"):
        analyse(g, dtype="float8")

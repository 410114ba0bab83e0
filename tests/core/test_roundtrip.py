"""The canonical formatter round-trips: load → format_graph → load gives the same graph
(same names, ops, attributes, shapes and wiring), for every arch of the zoo and inline specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from archdsl.api import elaborate, load, load_spec
from archdsl.formatter import format_graph, layer_text
from archdsl.ir import Graph, validate

SPECS_DIR = Path(__file__).parents[2] / "specs"
ZOO = sorted(SPECS_DIR.glob("*.arch"))

INLINE = {
    "paper_tokens": """arch a
input 3x64x64
conv7-64/2 norm=bn act=relu
maxpool3/2 pad=1
LRN
dwconv3/2 norm=bn act=relu6
conv1-32 act=none pad=valid groups=2 bias=true
conv3-32 dilation=2 act=gelu
avgpool3/2 pad=1 ceil=true
maxpool3/2 ceil=true
adaptive_avgpool(7)
dropout(0.4)
flatten
FC-4096 act=relu
FC-10 norm=bn
soft-max
""",
    "labels_and_repeats": """arch a(n=2)
input 3x8x8
c: conv3-4 x2
0: conv3-4 norm=bn act=relu
j: add { | conv3-4 } x{n}
g: (conv3-4; relu)
conv1: conv3-4 norm=bn act=relu
stem: conv3-4 norm=bn act=tanh
(conv3-4; conv1-4) x2
""",
    "blocks_and_residuals": """block basic(planes, stride=1) {
  residual {
    conv3-{planes}/{stride} norm=bn act=relu
    conv3-{planes} norm=bn
  } shortcut(downsample) { conv1-{planes}/{stride} norm=bn }
  relu
}
block bottleneck(c, stride=1) {
  residual {
    conv1: conv1-{c} norm=bn act=relu
    conv2: conv3-{c}/{stride} norm=bn act=relu
    conv3: conv1-{4 * c} norm=bn
  } shortcut { conv1-{4 * c}/{stride} norm=bn }
  relu: relu
}
arch a
input 4x16x16
layer1: basic(4) x2
layer2: basic(8, 2)
layer3: bottleneck(4) x2
bottleneck(8, 2)
gap
FC-10
""",
    "joins": """arch a
input 4x8x8
inc: concat { conv1-2 | conv3-3 ; relu | maxpool3/1 pad=same | }
add { | conv3-13 }
mul { conv3-13 | }
se: gate { gap; conv1-2 act=relu; conv1-13 act=sigmoid }
dense { conv3-5 } x2
concat { concat { conv1-2 | } | residual { conv3-23 } }
""",
    "defaults_and_expressions": """arch a(width=1.5, deep=true)
input 3x32x32
defaults norm=bn act=swish pad=same
let c = make_divisible(16 * width)
let chans = [c, c * 2, int(c * 2.5)]
conv3-{chans[0]}/2
conv3-{chans[1]} x{2 if deep else 1}
conv3-{chans[-1]} act=none
avgpool2/2
FC-{c}
""",
    "routing_and_axes": """inline block two(c) { conv1x3-{c} norm=bn eps=0.001; relu }
arch a
input 6x9x9
defaults momentum=0.01
transform: affine(scale=[1, 2, 3, 4, 5, 6], shift=-0.5)
two(6)
s: split { | b2: (conv1-3 act=leakyrelu negative_slope=0.2; dwconv3x1 act=hardsigmoid) }
channel_shuffle(3)
split(2, 4) { slice(0, 1) | chunk(2, 1); prelu per_channel=true }
block1-0: conv-8 k=1x7 pad=0,3 stride=1x2 norm=bn act=gelu approximate=tanh
maxpool3x1/1 pad=1,0
""",
    "derived": """arch base(k=2, norm=none)
input 1x4x4
conv1-{k} norm={norm}
arch child = base(k=5, norm=bn)
""",
}


def _zoo_cases() -> list:
    cases = []
    for spec in ZOO:
        try:
            program = load_spec(spec)
        except Exception:  # reported by the test itself, with the spec's errors
            cases.append(pytest.param(spec, None, id=spec.name))
            continue
        cases += [pytest.param(spec, name, id=f"{spec.name}:{name}") for name in program.own]
    return cases


def _inline_cases() -> list:
    cases = []
    for key, text in INLINE.items():
        cases += [pytest.param(text, name, id=f"{key}:{name}") for name in load_spec(text).own]
    return cases


def assert_round_trip(g: Graph) -> str:
    validate(g)
    text = format_graph(g)
    g2 = load(text).graph
    validate(g2)
    assert g2.name == g.name
    assert g2.input_shape == g.input_shape and g2.output_shape == g.output_shape
    sig, sig2 = g.signature(), g2.signature()
    assert len(sig) == len(sig2)
    for a, b in zip(sig, sig2, strict=True):
        assert a == b
    # the canonical form is a fixed point (the re-read arch has no parameters to list)
    assert format_graph(g2) == _without_settings(text)
    return text


def _without_settings(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("# settings: "))


@pytest.mark.parametrize("source,arch", _zoo_cases() + _inline_cases())
def test_round_trip(source, arch):
    program = load_spec(source)  # raises the spec's own errors if it does not load
    names = program.own if arch is None else [arch]
    for name in names:
        assert_round_trip(elaborate(program, name))


def test_round_trip_with_overrides():
    text = INLINE["defaults_and_expressions"]
    for width, deep in ((1.0, False), (0.5, True), (2.0, True)):
        g = load(text, width=width, deep=deep).graph
        out = assert_round_trip(g)
        assert f"# settings: width={width!r}, deep={'true' if deep else 'false'}" in out


def test_canonical_form_is_explicit():
    g = load("arch a\ninput 3x8x8\nconv3-4 norm=bn act=relu\nmaxpool\n").graph
    text = format_graph(g)
    assert text.splitlines() == [
        "# canonical form of `a`",
        "arch a",
        "input 3x8x8",
        "0: conv3-4/1 bias=false dilation=1 groups=1 pad=1 norm=bn act=relu",
        "3: maxpool2/2 ceil=false pad=0",
    ]


def test_layer_text_of_each_primary_op():
    g = load(INLINE["paper_tokens"]).graph
    texts = {n.op: layer_text(n) for n in g.nodes if n.op != "input"}
    assert texts["conv"].startswith("conv")
    assert texts["lrn"] == "lrn alpha=0.0001 beta=0.75 k=2.0 size=5"
    assert texts["dropout"] == "dropout p=0.4"
    assert texts["adaptive_avgpool"] == "adaptive_avgpool size=7"
    assert texts["fc"].startswith("fc-")

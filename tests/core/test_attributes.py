"""Attributes of attached norms and activations (`conv1-64 norm=bn eps=0.001`), `defaults`
that reach them, the warning for a `defaults` attribute that no layer takes, and `bias=auto`."""

from __future__ import annotations

from pathlib import Path

import pytest

from archdsl.api import load, unique_archs
from archdsl.errors import ArchErrors, ArchWarning
from archdsl.formatter import format_graph

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.arch"))


def nodes(text: str) -> dict:
    g = load(text).graph
    assert load(format_graph(g)).graph.signature() == g.signature()  # the round trip
    return {n.name: n for n in g.nodes}


def test_norm_and_activation_attributes_written_on_the_layer():
    n = nodes("arch a\ninput 3x8x8\nconv1: conv3-8 norm=bn eps=0.001 momentum=0.01 act=relu\n"
              "fc: FC-4 act=leakyrelu negative_slope=0.2\n"
              "l: linear-4 norm=layernorm eps=1e-6 act=gelu approximate=tanh\n")
    assert n["bn1"].attrs == {"eps": 0.001, "momentum": 0.01}
    assert n["fc_leakyrelu"].attrs == {"negative_slope": 0.2}
    assert n["l_layernorm"].attrs == {"eps": 1e-6}
    assert n["l_gelu"].attrs == {"approximate": "tanh"}


def test_defaults_reach_attached_and_standalone_norms():
    # MobileNetV3, EfficientNetV2, GoogLeNet and Inception v3 use BN eps 0.001
    n = nodes("arch a\ninput 3x8x8\ndefaults norm=bn eps=0.001 act=relu\nc: conv3-8\nbn\n"
              "d: conv3-8 eps=1e-5\n")
    assert n["c_bn"].attrs["eps"] == 0.001
    assert n["0"].attrs["eps"] == 0.001  # the standalone bn
    assert n["d_bn"].attrs["eps"] == 1e-5  # the layer's own wins
    assert "eps" not in n["c"].attrs  # conv itself has no eps


def test_block_call_attributes_reach_the_attached_norms_inside():
    n = nodes("block b() { c: conv3-8 norm=bn }\narch a\ninput 3x8x8\nx: b() eps=0.01\n")
    assert n["x.c_bn"].attrs["eps"] == 0.01


@pytest.mark.parametrize("line,message", [
    ("conv3-8 eps=0.001", "has none that takes it"),
    ("conv3-8 norm=bn negative_slope=0.1", "has none that takes it"),
    ("conv3-8 norm=lrn act=elu alpha=2", "attribute of both `lrn` and `elu`"),
    ("conv3-8 norm=bn eps=-1", "at least 0"),
    ("conv3-8 norm=bn epsilon=0.1", "no attribute `epsilon`"),
])
def test_attribute_mistakes_are_located(line, message):
    with pytest.raises(ArchErrors, match=message) as info:
        load(f"arch a\ninput 3x8x8\n{line}\n")
    assert info.value.errors[0].span.line == 3


def test_an_unused_defaults_attribute_is_a_located_warning():
    a = load("arch a\ninput 3x8x8\ndefaults eps=0.001 act=relu\nconv3-8\n")
    (w,) = a.warnings
    assert isinstance(w, ArchWarning)
    assert "`eps=0.001` applies to no layer" in w.message
    assert (w.span.line, w.span.col) == (3, 10)
    assert w.render().startswith("<string>:3:10: warning:")


def test_block_call_attributes_that_reach_nothing_warn_too():
    a = load("block b() { relu }\narch a\ninput 3x8x8\nb() act=gelu\nconv3-8\n")
    assert [w.span.line for w in a.warnings] == [4]


def test_defaults_used_anywhere_do_not_warn():
    a = load("block b() { c: conv3-8 }\narch a\ninput 3x8x8\ndefaults norm=bn momentum=0.3\n"
             "relu\nb()\n")
    assert a.warnings == []
    assert a.graph.nodes[-1].attrs["momentum"] == 0.3


@pytest.mark.parametrize("spec,name", unique_archs(SPECS), ids=lambda x: str(x))
def test_the_zoo_has_no_warnings(spec, name):
    assert load(spec, arch=name).warnings == []


def test_bias_auto_before_a_batch_norm_layer():
    # a conv followed by a separate `bn` layer gets no bias (the bn cancels it); before a
    # layer norm or anything else it keeps one; bias=true is kept as written
    n = nodes("arch a\ninput 3x8x8\na: conv3-8; bn\nb: conv3-8 bias=true; bn\n"
              "c: conv3-8; layernorm\nd: conv3-8; residual { bn }\n")
    assert [n[k].attrs["bias"] for k in "abcd"] == [False, True, True, True]

"""Golden parses: every grammar feature, checked on the elaborated graph (names, ops, attrs,
shapes, wiring). Every graph built here also passes `archdsl.ir.validate`."""

from __future__ import annotations

import pytest

from archdsl import syntax as S
from archdsl.api import load, load_all, load_spec
from archdsl.errors import ArchErrors, IncludeError
from archdsl.ir import Graph, validate
from archdsl.parser import parse

CONV_DEFAULTS = {"bias": True, "dilation": 1, "groups": 1, "pad": 1, "stride": 1}


def graph_of(text: str, **kw) -> Graph:
    g = load(text, **kw).graph
    validate(g)
    return g


def by_name(g: Graph) -> dict:
    return {n.name: n for n in g.nodes}


def table(g: Graph) -> list[tuple]:
    """(name, op, shape, [input names]) for every node after the input."""
    names = {n.id: n.name for n in g.nodes}
    return [(n.name, n.op, n.shape, [names[i] for i in g.inputs(n.id)]) for n in g.nodes[1:]]


# ---------------------------------------------------------------- layer tokens

def test_conv_token_kernel_channels_stride():
    g = graph_of("arch a\ninput 3x224x224\nconv7-64/2\n")
    inp, conv = g.nodes
    assert inp.op == "input" and inp.shape == (3, 224, 224) and inp.name == "input"
    assert conv.name == "0" and conv.op == "conv"
    assert conv.attrs == {**CONV_DEFAULTS, "k": 7, "out": 64, "stride": 2, "pad": 3}
    assert conv.shape == (64, 112, 112)
    assert g.inputs(conv.id) == [inp.id]
    assert g.output_id == conv.id and g.output_shape == (64, 112, 112)


def test_conv_token_with_braced_expressions():
    g = graph_of("arch a(c=32, s=2)\ninput 3x16x16\nconv3-{c}/{s}\nconv3-{c * 2}/{s - 1}\n")
    c1, c2 = g.nodes[1:]
    assert (c1.attrs["out"], c1.attrs["stride"], c1.shape) == (32, 2, (32, 8, 8))
    assert (c2.attrs["out"], c2.attrs["stride"], c2.shape) == (64, 1, (64, 8, 8))


def test_dwconv_lowers_to_grouped_conv():
    g = graph_of("arch a\ninput 8x32x32\ndwconv3/2\ndwconv3-16\n")
    dw, dw16 = g.nodes[1:]
    assert dw.op == "conv"
    assert dw.attrs == {**CONV_DEFAULTS, "k": 3, "out": 8, "groups": 8, "stride": 2}
    assert dw.shape == (8, 16, 16)
    assert dw16.attrs["groups"] == 8 and dw16.attrs["out"] == 16 and dw16.shape == (16, 16, 16)


def test_pooling_tokens():
    g = graph_of("arch a\ninput 3x32x32\nmaxpool\nmaxpool3/2\navgpool3/1 pad=same\n")
    mp, mp3, ap = g.nodes[1:]
    assert mp.op == "maxpool" and mp.attrs == {"k": 2, "stride": 2, "pad": 0, "ceil": False}
    assert mp.shape == (3, 16, 16)
    assert mp3.attrs == {"k": 3, "stride": 2, "pad": 0, "ceil": False}
    assert mp3.shape == (3, 7, 7)
    assert ap.op == "avgpool" and ap.attrs["pad"] == 1 and ap.shape == (3, 7, 7)


def test_paper_notation_tokens():
    g = graph_of("arch a\ninput 3x14x14\nLRN\nadaptive_avgpool(7)\ndropout(0.4)\n"
                 "FC-4096\nsoft-max\n")
    lrn, adap, drop, fc, sm = g.nodes[1:]
    assert lrn.op == "lrn" and lrn.attrs == {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
    assert adap.op == "adaptive_avgpool" and adap.attrs == {"size": 7} and adap.shape == (3, 7, 7)
    assert drop.op == "dropout" and drop.attrs == {"p": 0.4} and drop.shape == (3, 7, 7)
    assert fc.op == "fc" and fc.attrs == {"out": 4096, "bias": True} and fc.shape == (4096,)
    assert sm.op == "softmax" and sm.shape == (4096,)


def test_op_call_arguments_positional_and_keyword():
    g = graph_of("arch a\ninput 3x8x8\nconv3-8(groups=1, dilation=2)\ndropout(p=0.3)\n"
                 "adaptive_avgpool(size=3)\nLRN(3)\nLRN(size=7, beta=0.5)\n")
    conv, drop, adap, lrn3, lrn7 = g.nodes[1:]
    assert conv.attrs["dilation"] == 2 and conv.attrs["pad"] == 2
    assert drop.attrs == {"p": 0.3} and adap.shape == (8, 3, 3)
    assert lrn3.attrs["size"] == 3 and (lrn7.attrs["size"], lrn7.attrs["beta"]) == (7, 0.5)


def test_aliases_and_case_insensitive_names():
    g = graph_of("arch a\ninput 3x8x8\nBatchNorm\nReLU\nglobal_avgpool\nDense_Layer-10\nSiLU\n")
    assert [n.op for n in g.nodes[1:]] == ["bn", "relu", "gap", "fc", "swish"]
    assert g.output_shape == (10,)
    # `linear` is its own op: per position, so a C×1×1 map stays a map (FC flattens)
    g = graph_of("arch a\ninput 3x8x8\nGAP\nLinear-10\nLN\n")
    assert [n.op for n in g.nodes[1:]] == ["gap", "linear", "layernorm"]
    assert g.output_shape == (10, 1, 1)


def test_attributes_act_pad_groups_bias():
    g = graph_of("arch a\ninput 4x8x8\n"
                 "conv3-8 act=none pad=valid groups=2 bias=true\n"
                 "conv3-8 pad=2 dilation=2 bias=false act=relu\n")
    c1, c2, relu = g.nodes[1:]
    assert c1.attrs == {**CONV_DEFAULTS, "k": 3, "out": 8, "pad": 0, "groups": 2}
    assert c1.shape == (8, 6, 6)
    assert c2.attrs == {**CONV_DEFAULTS, "k": 3, "out": 8, "pad": 2, "dilation": 2,
                        "bias": False}
    assert c2.shape == (8, 6, 6)
    assert relu.op == "relu" and relu.layer == c2.id and g.inputs(relu.id) == [c2.id]


def test_attribute_values_number_string_and_braced():
    g = graph_of('arch a(p=0.25)\ninput 3x8x8\ndropout p={p * 2}\nLRN alpha=0.001 beta=1\n'
                 'conv3-4 pad="valid"\n')
    drop, lrn, conv = g.nodes[1:]
    assert drop.attrs == {"p": 0.5}
    assert lrn.attrs["alpha"] == 0.001 and lrn.attrs["beta"] == 1.0
    assert conv.attrs["pad"] == 0 and conv.shape == (4, 6, 6)


def test_norm_and_act_become_separate_nodes_of_one_layer():
    g = graph_of("arch a\ninput 3x8x8\nconv3-4 norm=bn act=relu\nconv1: conv3-4 norm=bn "
                 "act=relu\nstem: conv3-4 norm=bn act=relu6\n")
    assert table(g) == [
        ("0", "conv", (4, 8, 8), ["input"]),
        ("1", "bn", (4, 8, 8), ["0"]),
        ("2", "relu", (4, 8, 8), ["1"]),
        ("conv1", "conv", (4, 8, 8), ["2"]),
        ("bn1", "bn", (4, 8, 8), ["conv1"]),
        ("relu1", "relu", (4, 8, 8), ["bn1"]),
        ("stem", "conv", (4, 8, 8), ["relu1"]),
        ("stem_bn", "bn", (4, 8, 8), ["stem"]),
        ("stem_relu6", "relu6", (4, 8, 8), ["stem_bn"]),
    ]
    nodes = by_name(g)
    assert nodes["bn1"].layer == nodes["relu1"].layer == nodes["conv1"].id
    assert nodes["conv1"].attrs["bias"] is False  # bias=auto and a norm follows


# ---------------------------------------------------------------- repetition and labels

def test_repetition_forms():
    g = graph_of("arch a(n=3)\ninput 3x8x8\nconv3-4 x2\nconv3-5 x{n}\nconv3-6 x0\n"
                 "(conv3-7; conv1-7) x2\n")
    assert [(n.name, n.attrs["out"], n.attrs["k"]) for n in g.nodes[1:]] == [
        ("0", 4, 3), ("1", 4, 3), ("2", 5, 3), ("3", 5, 3), ("4", 5, 3),
        ("5", 7, 3), ("6", 7, 1), ("7", 7, 3), ("8", 7, 1)]
    assert [g.inputs(n.id) for n in g.nodes[1:]] == [[i] for i in range(9)]


def test_repeat_with_unicode_times_and_spaces():
    g = graph_of("arch a\ninput 3×8×8\nconv3-4 ×3\nconv3-4 x 2\nconv3-4 x{1 + 1}\n")
    assert g.input_shape == (3, 8, 8)
    assert len(g.nodes) == 1 + 3 + 2 + 2


def test_labelled_groups_and_repeats_make_scopes():
    g = graph_of("arch a\ninput 3x8x8\nc: conv3-4 x2\ns: (conv3-8; conv1-8) x2\n"
                 "g: (conv3-4; relu)\n0: conv3-4 norm=bn act=relu\nconv3-4\n")
    assert [n.name for n in g.nodes[1:]] == [
        "c.0", "c.1", "s.0", "s.1", "s.2", "s.3", "g.0", "g.1", "0", "1", "2", "3"]


def test_label_on_block_with_repeat_numbers_instances():
    g = graph_of("""block bottleneck(planes, stride=1, expansion=4) {
  conv1: conv1-{planes} norm=bn act=relu
  conv2: conv3-{planes}/{stride} norm=bn act=relu
  conv3: conv1-{planes * expansion} norm=bn
}
arch a
input 3x8x8
layer1: bottleneck(4) x3
layer2: bottleneck(planes=8, stride=2)
bottleneck(2, expansion=1)
""")
    names = [n.name for n in g.nodes[1:]]
    per_block = ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3"]
    assert names == ([f"layer1.{i}.{p}" for i in range(3) for p in per_block]
                     + [f"layer2.{p}" for p in per_block] + [f"0.{p}" for p in per_block])
    nodes = by_name(g)
    assert nodes["layer1.2.conv3"].shape == (16, 8, 8)
    assert nodes["layer2.conv2"].attrs["stride"] == 2 and nodes["layer2.bn3"].shape == (32, 4, 4)
    assert nodes["0.conv3"].shape == (2, 4, 4)  # expansion=1 by keyword, planes positional
    assert g.inputs(nodes["layer1.1.conv1"].id) == [nodes["layer1.0.bn3"].id]


# ---------------------------------------------------------------- blocks

def test_block_defaults_keywords_and_attrs_on_call():
    g = graph_of("""block cbr(c, k=3, stride=1) {
  conv-{c}/{stride} k={k}
}
arch a
input 3x16x16
cbr(8)
cbr(8, 1)
cbr(c=4, stride=2) act=relu norm=bn
""")
    assert [(n.name, n.op, n.shape) for n in g.nodes[1:]] == [
        ("0.0", "conv", (8, 16, 16)), ("1.0", "conv", (8, 16, 16)),
        ("2.0", "conv", (4, 8, 8)), ("2.1", "bn", (4, 8, 8)), ("2.2", "relu", (4, 8, 8))]
    assert by_name(g)["1.0"].attrs["k"] == 1


def test_block_without_params_and_nested_blocks():
    g = graph_of("""block inner(c) { conv3-{c} }
block outer(c) { inner(c); inner(c * 2) }
block tail { gap }
arch a
input 3x8x8
o: outer(4)
tail
""")
    assert [(n.name, n.shape) for n in g.nodes[1:]] == [
        ("o.0.0", (4, 8, 8)), ("o.1.0", (8, 8, 8)), ("0.0", (8, 1, 1))]


def test_block_params_see_arch_params():
    g = graph_of("block b(c) { conv3-{c * width} }\narch a(width=2)\ninput 3x8x8\nb(4)\n",
                 width=3)
    assert g.output_shape == (12, 8, 8)


# ---------------------------------------------------------------- residual and joins

BASIC = """block basic(planes, stride=1) {
  residual {
    conv3-{planes}/{stride} norm=bn act=relu
    conv3-{planes} norm=bn
  } shortcut { conv1-{planes}/{stride} norm=bn }
  relu
}
"""


def test_residual_without_shape_change_has_identity_shortcut():
    g = graph_of(BASIC + "arch a\ninput 4x8x8\nlayer1: basic(4)\n")
    nodes = by_name(g)
    assert not any("shortcut" in n for n in nodes)
    add = nodes["layer1.5"]
    assert add.op == "add" and add.shape == (4, 8, 8)
    assert g.inputs(add.id) == [nodes["layer1.4"].id, g.input_id]
    assert nodes["layer1.6"].op == "relu" and g.output_id == nodes["layer1.6"].id


def test_residual_with_shape_change_uses_the_shortcut():
    g = graph_of(BASIC + "arch a\ninput 4x8x8\nlayer1: basic(4) x2\nlayer2: basic(8, 2)\n")
    nodes = by_name(g)
    assert [k for k in nodes if "shortcut" in k] == ["layer2.shortcut.0", "layer2.shortcut.1"]
    sc, sbn, add = nodes["layer2.shortcut.0"], nodes["layer2.shortcut.1"], nodes["layer2.5"]
    assert sc.op == "conv" and sc.attrs["k"] == 1 and sc.attrs["stride"] == 2
    assert sc.attrs["bias"] is False and sc.shape == (8, 4, 4)
    assert g.inputs(sc.id) == [nodes["layer1.1.6"].id]  # the block's input
    assert sbn.op == "bn" and g.inputs(add.id) == [nodes["layer2.4"].id, sbn.id]


def test_named_shortcut():
    g = graph_of("arch a\ninput 4x8x8\nresidual { conv3-8 } shortcut(downsample) { conv1-8 }\n")
    assert [n.name for n in g.nodes[1:]] == ["0", "downsample.0", "1"]


def test_concat_with_identity_branch_orders_inputs():
    g = graph_of("arch a\ninput 4x8x8\n"
                 "inc: concat { conv1-2 | conv3-3 ; relu | maxpool3/1 pad=same | }\n")
    nodes = by_name(g)
    inc = nodes["inc"]
    assert inc.op == "concat" and inc.shape == (2 + 3 + 4 + 4, 8, 8)
    assert g.inputs(inc.id) == [nodes["0"].id, nodes["2"].id, nodes["3"].id, g.input_id]
    assert g.inputs(nodes["1"].id) == [g.input_id]  # every branch starts from the join's input


def test_add_and_mul_joins():
    g = graph_of("arch a\ninput 4x8x8\nadd { | conv3-4 }\nm: mul { conv3-4 | }\n")
    conv0, add, conv1, mul = g.nodes[1:]
    assert add.op == "add" and g.inputs(add.id) == [g.input_id, conv0.id]
    assert mul.op == "mul" and mul.name == "m" and g.inputs(mul.id) == [conv1.id, add.id]


def test_gate_is_mul_with_broadcast():
    g = graph_of("arch a\ninput 16x8x8\n"
                 "se: gate { gap; conv1-4 act=relu; conv1-16 act=sigmoid }\n")
    nodes = by_name(g)
    se = nodes["se"]
    assert se.op == "mul" and se.shape == (16, 8, 8)
    assert nodes["0"].op == "gap" and nodes["4"].op == "sigmoid" and nodes["4"].shape == (16, 1, 1)
    assert g.inputs(se.id) == [g.input_id, nodes["4"].id]


def test_dense_concatenates_input_and_body():
    g = graph_of("arch a\ninput 4x8x8\ndense { conv3-5 } x2\n")
    c0, d0, c1, d1 = g.nodes[1:]
    assert (d0.op, d0.shape) == ("concat", (9, 8, 8))
    assert (d1.op, d1.shape) == ("concat", (14, 8, 8))
    assert g.inputs(d1.id) == [d0.id, c1.id]


# ---------------------------------------------------------------- includes

def test_include_relative_once_and_cyclic(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "blocks.arch").write_text('include "more.arch"\nblock two(c) { conv3-{c}; conv3-{c} }\n')
    (sub / "more.arch").write_text('include "blocks.arch"\nblock one(c) { conv1-{c} }\n')
    main = sub / "main.arch"
    main.write_text('include "blocks.arch"\ninclude "more.arch"\n'
                    'include "./blocks.arch"\narch m\ninput 3x8x8\ntwo(4)\none(2)\n')
    g = load(main).graph
    validate(g)
    assert [(n.name, n.op, n.shape) for n in g.nodes[1:]] == [
        ("0.0", "conv", (4, 8, 8)), ("0.1", "conv", (4, 8, 8)), ("1.0", "conv", (2, 8, 8))]
    prog = load_spec(main)
    assert sorted(prog.blocks) == ["one", "two"] and prog.own == ["m"]


def test_include_from_subfolder(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "b.arch").write_text("block b { relu }\n")
    (tmp_path / "m.arch").write_text('include "lib/b.arch"\narch m\ninput 3x4x4\nb\n')
    assert [n.op for n in load(tmp_path / "m.arch").graph.nodes] == ["input", "relu"]


def test_include_archs_are_not_offered_by_the_includer(tmp_path):
    (tmp_path / "base.arch").write_text("arch base\ninput 3x4x4\nrelu\n")
    (tmp_path / "d.arch").write_text('include "base.arch"\narch d = base\n')
    archs = load_all(tmp_path / "d.arch")
    assert [a.name for a in archs] == ["d"]


def test_include_escaping_the_directory_is_an_error(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "outside.arch").write_text("block z { relu }\n")
    spec = sub / "bad.arch"
    spec.write_text('arch m\ninput 3x8x8\ninclude "../outside.arch"\n')
    with pytest.raises(ArchErrors) as info:
        load(spec)
    (err,) = info.value.errors
    assert isinstance(err, IncludeError)
    assert "escapes the directory" in err.message and "../outside.arch" in err.message
    assert (err.span.line, err.span.col) == (3, 1)


def test_absolute_include_is_an_error(tmp_path):
    (tmp_path / "lib.arch").write_text("block z { relu }\n")
    spec = tmp_path / "sub" / "m.arch"
    spec.parent.mkdir()
    spec.write_text(f'include "{tmp_path / "lib.arch"}"\narch m\ninput 3x8x8\nz\n')
    with pytest.raises(ArchErrors) as info:
        load(spec)
    assert any(isinstance(e, IncludeError) and "escapes" in e.message
               for e in info.value.errors)


def test_include_from_spec_text_is_relative_to_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "lib.arch").write_text("block b(c) { conv1-{c} }\n")
    monkeypatch.chdir(tmp_path)
    g = graph_of('include "lib.arch"\narch m\ninput 3x4x4\nb(5)\n')
    assert g.output_shape == (5, 4, 4)


# ---------------------------------------------------------------- several archs, derived archs

MULTI = """arch b(k=2)
input 1x4x4
conv1-{k}
arch c = b(k=5)

arch e
input 3x2x2
gap
"""


def test_several_archs_in_one_file():
    archs = load_all(MULTI)
    assert [(a.name, a.settings, a.graph.output_shape) for a in archs] == [
        ("b", {"k": 2}, (2, 4, 4)), ("c", {"k": 5}, (5, 4, 4)), ("e", {}, (3, 1, 1))]
    for a in archs:
        validate(a.graph)
    assert [n.op for n in archs[2].graph.nodes] == ["input", "gap"]
    with pytest.raises(ArchErrors, match="defines 3 architectures"):
        load(MULTI)
    assert load(MULTI, arch="e").graph.output_shape == (3, 1, 1)


def test_derived_arch_overrides_and_can_be_overridden():
    c = load(MULTI, arch="c")
    assert c.name == "c" and c.settings == {"k": 5} and c.graph.output_shape == (5, 4, 4)
    assert load(MULTI, arch="c", k=7).graph.output_shape == (7, 4, 4)
    assert load(MULTI, arch="b", k=3).graph.output_shape == (3, 4, 4)


def test_derived_arch_of_a_derived_arch():
    text = MULTI + "arch d = c(k=7)\narch f = c\n"
    d = load(text, arch="d")
    assert d.settings == {"k": 7} and d.graph.output_shape == (7, 4, 4)
    f = load(text, arch="f")
    assert f.settings == {"k": 5} and f.graph.output_shape == (5, 4, 4)


def test_derived_arch_bare_word_is_a_symbol():
    text = ("arch net(norm=none)\ninput 3x8x8\nconv3-4 norm={norm}\n"
            "arch net_bn = net(norm=bn)\n")
    plain, with_bn = load_all(text)
    assert [n.op for n in plain.graph.nodes] == ["input", "conv"]
    assert [n.op for n in with_bn.graph.nodes] == ["input", "conv", "bn"]
    assert with_bn.settings == {"norm": "bn"}


# ---------------------------------------------------------------- let, defaults, expressions

def test_let_binds_in_order():
    g = graph_of("arch a(w=2)\ninput 3x8x8\nlet c = 8 * w\nconv3-{c}\nlet c = c + 1\nconv3-{c}\n")
    assert [n.attrs["out"] for n in g.nodes[1:]] == [16, 17]


def test_defaults_norm_applies_to_conv_only_and_act_to_fc():
    g = graph_of("arch a\ninput 3x8x8\ndefaults norm=bn act=relu\n"
                 "conv3-4\ndwconv3\nmaxpool\nFC-10\nFC-5 norm=bn act=none\n")
    assert [(n.name, n.op) for n in g.nodes[1:]] == [
        ("0", "conv"), ("1", "bn"), ("2", "relu"),
        ("3", "conv"), ("4", "bn"), ("5", "relu"),
        ("6", "maxpool"),
        ("7", "fc"), ("8", "relu"),
        ("9", "fc"), ("10", "bn")]
    nodes = by_name(g)
    assert nodes["0"].attrs["bias"] is False and nodes["3"].attrs["bias"] is False
    assert nodes["7"].attrs["bias"] is True and nodes["9"].attrs["bias"] is False


def test_bias_auto_and_explicit_bias():
    # auto: no bias with an attached norm (any), or where a batch norm is the next layer
    g = graph_of("arch a\ninput 3x8x8\nconv3-4\nconv3-4 norm=bn\nconv3-4 norm=bn bias=true\n"
                 "conv3-4 bias=false\nconv3-4 norm=lrn\nconv3-4; bn\nconv3-4 act=relu; bn\n"
                 "concat { conv1-4 | }; bn\nconv1-4; layernorm\nFC-4; bn\n")
    convs = [n for n in g.nodes if n.op in ("conv", "fc")]
    assert [c.attrs["bias"] for c in convs] == [True, False, True, False, False, False, True,
                                                True, True, False]


def test_layernorm_attaches_like_bn():
    g = graph_of("arch a\ninput 3x8x8\ndefaults norm=layernorm act=gelu\nconv3-4\n"
                 "stem: conv3-4 bias=true\n")
    assert [(n.name, n.op) for n in g.nodes[1:]] == [
        ("0", "conv"), ("1", "layernorm"), ("2", "gelu"),
        ("stem", "conv"), ("stem_layernorm", "layernorm"), ("stem_gelu", "gelu")]
    assert [n.attrs["bias"] for n in g.nodes if n.op == "conv"] == [False, True]


def test_defaults_are_scoped_and_overridable():
    g = graph_of("""block b { conv3-4 }
arch a
input 3x8x8
defaults act=relu pad=valid
conv3-4
b
conv3-4 act=none pad=same
defaults act=tanh
conv3-4
""")
    assert [(n.name, n.op, n.shape) for n in g.nodes[1:]] == [
        ("0", "conv", (4, 6, 6)), ("1", "relu", (4, 6, 6)),
        ("2.0", "conv", (4, 4, 4)), ("2.1", "relu", (4, 4, 4)),
        ("3", "conv", (4, 4, 4)),
        ("4", "conv", (4, 2, 2)), ("5", "tanh", (4, 2, 2))]


def test_defaults_inside_a_block_stay_inside():
    g = graph_of("block b { defaults act=relu; conv3-4 }\narch a\ninput 3x8x8\nb\nconv3-4\n")
    assert [n.op for n in g.nodes[1:]] == ["conv", "relu", "conv"]


@pytest.mark.parametrize("expr,value", [
    ("8 * w", 16), ("(w + 2) * 2 - 4 // 2 % 3", 6), ("int(w * 1.5)", 3), ("w / 2 * 8", 8),
    ("make_divisible(w * 12 * 0.75)", 24), ("make_divisible(w * 5, 4)", 12),
    ("w if deep else 1", 2), ("1 if not deep else 5", 5),
    ("[4, 8, 16][w]", 16), ("[4, 8, 16][-1]", 16), ("chans[1]", 6),
    ("len(chans)", 3), ("max(w, 7)", 7), ("min(w, 7)", 2), ("round(2.5)", 2),
    ("ceil(w * 1.1)", 3), ("floor(w * 1.9)", 3), ("abs(-w)", 2), ("int(sqrt(16))", 4),
    ("w if w > 1 and deep else 99", 2), ("3 if w == 2 or false else 4", 3),
    ("-(-w)", 2), ("+w", 2), ("w - -1", 3),
])
def test_expressions(expr, value):
    g = graph_of(f"arch a(w=2, deep=true)\ninput 3x8x8\nlet chans = [w, w * 3, 1]\n"
                 f"conv1-{{{expr}}}\n")
    assert g.nodes[1].attrs["out"] == value


def test_power_operator():
    # `**` is in the grammar (power: postfix "**" unary)
    g = graph_of("arch a\ninput 3x8x8\nconv1-{2 ** 3}\n")
    assert g.nodes[1].attrs["out"] == 8


def test_comments_semicolons_and_blank_lines_are_equivalent():
    a = graph_of("# a comment\narch a   # trailing\n\ninput 3x8x8 ; conv3-4 ; # c\n"
                 "\n\nmaxpool;;\nconv1-2 \\\n  act=relu\n")
    b = graph_of("arch a\ninput 3x8x8\nconv3-4\nmaxpool\nconv1-2 act=relu\n")
    assert a.signature() == b.signature()
    assert [n.op for n in a.nodes] == ["input", "conv", "maxpool", "conv", "relu"]


def test_crlf_line_endings():
    a = graph_of("arch a\r\ninput 3x8x8\r\nconv3-4 x2\r\n\r\nadd {\r\n  conv3-4\r\n|\r\n}\r\n")
    b = graph_of("arch a\ninput 3x8x8\nconv3-4 x2\nadd { conv3-4 | }\n")
    assert a.signature() == b.signature()


def test_group_bodies_accept_newlines():
    a = graph_of("arch a\ninput 3x8x8\ns: (\n  conv3-4\n  conv1-4\n) x2\n"
                 "add {\n  conv3-4\n|\n}\n")
    b = graph_of("arch a\ninput 3x8x8\ns: (conv3-4; conv1-4) x2\nadd { conv3-4 | }\n")
    assert a.signature() == b.signature()


def test_input_dims_may_be_expressions():
    g = graph_of("arch a(r=32)\ninput 3x{r}x{r // 2}\nconv3-4\n", r=64)
    assert g.input_shape == (3, 64, 32)


# ---------------------------------------------------------------- the syntax tree itself

def test_parse_tree_spans_and_structure():
    mod = parse("block b(c, s=2) {\n  conv3-{c}\n}\narch a(x=1)\ninput 3x8x8\n"
                "l: conv3-64/2(groups=1) act=relu x3\narch z = a(x=2)\n", "f.arch")
    assert mod.file == "f.arch" and [b.name for b in mod.blocks] == ["b"]
    assert [p.name for p in mod.blocks[0].params] == ["c", "s"]
    a, z = mod.archs
    assert isinstance(a, S.ArchDef) and isinstance(z, S.ArchAlias)
    assert z.target == "a" and z.args[0].name == "x"
    inp, item = a.stmts
    assert isinstance(inp, S.Input) and [d.args[0] for d in inp.dims] == [3, 8, 8]
    assert isinstance(item, S.Item) and item.label == "l"
    assert (item.label_span.line, item.label_span.col) == (6, 1)
    layer = item.atom
    assert isinstance(layer, S.Layer) and layer.name == "conv3"
    assert (layer.name_span.line, layer.name_span.col, layer.name_span.end_col) == (6, 4, 9)
    assert layer.channels.args == (64,) and layer.stride.args == (2,)
    assert layer.args[0].name == "groups" and [x.name for x in layer.attrs] == ["act"]
    assert item.repeat.args == (3,) and (item.repeat.span.line, item.repeat.span.col) == (6, 35)


def test_braces_are_allowed_where_an_expression_already_is():
    arch = load("arch a(p = 0.3)\ninput 3x8x8\ndropout({p})\nconv-4 k={1 + 2}\n")
    drop, conv = arch.graph.nodes[1:]
    assert drop.attrs["p"] == 0.3 and conv.attrs["k"] == 3


def test_label_template_names_each_repetition():
    arch = load("block b(c) { conv1-{c} }\narch a\ninput 3x8x8\n"
                "layer{i + 1}: b(4) x3\nfc{2 * i}: conv1-2 x2\n")
    names = [n.name for n in arch.graph.nodes][1:]
    assert names == ["layer1.0", "layer2.0", "layer3.0", "fc0", "fc2"]
    assert load(arch.format()).graph.signature() == arch.graph.signature()


def test_repeated_items_see_their_index():
    arch = load("block b(c) { conv1-{c} }\narch a(i = 100)\ninput 3x8x8\n"
                "conv1-{8 * (i + 1)} x3\nb(i + 1) x2\nstage: (conv1-{2 + i}; relu) x2\n"
                "layer{i}: b(10 * i + 1) x2\nconv1-{i}\n")
    outs = [(n.name, n.shape[0]) for n in arch.graph.nodes if n.op == "conv"]
    assert outs == [("0", 8), ("1", 16), ("2", 24), ("3.0", 1), ("4.0", 2),
                    ("stage.0", 2), ("stage.2", 3), ("layer0.0", 1), ("layer1.0", 11),
                    ("5", 100)]  # an outer `i` is seen again after the repeated items
    assert load(arch.format()).graph.signature() == arch.graph.signature()


def test_label_template_must_make_a_name():
    with pytest.raises(ArchErrors, match="is not a valid name"):
        load("arch a\ninput 3x8x8\nx{0.5}: conv1-2 x2\n")


def test_keywords_can_be_labels():
    # torchvision's EfficientNet names its MBConv bodies `block`
    arch = load("arch a\ninput 3x8x8\nblock: (conv3-8)\nadd: add { | conv1-8 }\ndense: relu\n")
    assert [n.name for n in arch.graph.nodes][1:] == ["block.0", "0", "add", "dense"]
    assert load(arch.format()).graph.signature() == arch.graph.signature()

"""Elaboration semantics beyond the grammar: naming and scoping rules, layer grouping, the
structure tree, parameter binding, the Python API, and the IR validator itself."""

from __future__ import annotations

import importlib

import pytest

from archdsl.api import Architecture, elaborate, load, load_all, load_spec, select_archs
from archdsl.errors import ArchErrors, UsageError, ValueError_
from archdsl.formatter import format_graph
from archdsl.ir import Graph, IRError, JoinRef, NodeRef, ScopeRef, validate

# the modules whose budgets a test makes small: where each is read
LAYERS = importlib.import_module("archdsl.elaborate.layers")  # MAX_NODES


def graph_of(text: str, **kw) -> Graph:
    g = load(text, **kw).graph
    validate(g)
    return g


def names(g: Graph) -> list[str]:
    return [n.name for n in g.nodes[1:]]


# ---------------------------------------------------------------- naming

def test_attached_layer_naming_conventions():
    g = graph_of("arch a\ninput 3x8x8\n"
                 "conv3-4 norm=bn act=relu\n"     # unlabelled: next indices
                 "7: conv3-4 norm=bn act=relu\n"  # numeric k: k+1, k+2
                 "conv2: conv3-4 norm=bn act=relu\n"  # convX: bnX, reluX (torchvision)
                 "conv: conv3-4 act=tanh\n"       # bare conv: bn/relu without a suffix
                 "head: conv3-4 norm=lrn act=sigmoid\n"  # other: L_kind
                 "conv3-4\n")
    assert names(g) == ["0", "1", "2", "7", "8", "9", "conv2", "bn2", "relu2", "conv", "tanh",
                        "head", "head_lrn", "head_sigmoid", "10"]


def test_numeric_labels_advance_the_counter():
    g = graph_of("block b(c, d=c*2) { conv1-{c}; conv1-{d} }\narch a(w=3)\ninput 3x4x4\n"
                 "5: conv3-4\nconv3-4\nb(2)\nb(c=w)\n")
    assert names(g) == ["5", "6", "7.0", "7.1", "8.0", "8.1"]
    nodes = {n.name: n for n in g.nodes}
    assert nodes["7.1"].attrs["out"] == 4  # d defaults to c * 2
    assert nodes["8.0"].attrs["out"] == 3 and nodes["8.1"].attrs["out"] == 6


def test_every_node_knows_its_layer():
    g = graph_of("arch a\ninput 3x8x8\nconv3-4 norm=bn act=relu\nadd { | conv1-4 act=relu }\n")
    layer = {n.name: g.node(n.layer).name for n in g.nodes}
    assert layer == {"input": "input", "0": "0", "1": "0", "2": "0", "3": "3", "4": "3",
                     "5": "5"}


def test_labels_with_the_same_name_in_different_scopes():
    g = graph_of("block b { x: relu }\narch a\ninput 3x4x4\nx: relu\ns1: b\ns2: b\n")
    assert names(g) == ["x", "s1.x", "s2.x"]


def test_an_item_repeated_zero_times_is_not_there_at_all():
    # so `x: a x{1 if c else 0}` and `x: b x{0 if c else 1}` can share a name
    g = graph_of("arch a\ninput 3x4x4\ne: conv3-4 x0\nrelu\n")
    assert names(g) == ["0"]
    assert len(g.structure) == 1
    assert load(format_graph(g)).graph.signature() == g.signature()
    g = graph_of("arch a(on = true)\ninput 3x4x4\nx: conv1-8 x{1 if on else 0}\n"
                 "x: conv1-2 x{0 if on else 1}\n")
    assert names(g) == ["x.0"] and g.output_shape == (8, 4, 4)


# ---------------------------------------------------------------- structure tree

def test_structure_tree_mirrors_the_spec():
    g = graph_of("arch a\ninput 3x4x4\ns: (conv3-4 norm=bn; relu)\nadd { | conv1-4 }\n")
    scope, join = g.structure
    assert isinstance(scope, ScopeRef) and scope.label == "s"
    assert [type(i) for i in scope.items] == [NodeRef, NodeRef, NodeRef]
    assert [g.node(i.id).name for i in scope.items] == ["s.0", "s.1", "s.2"]
    assert isinstance(join, JoinRef) and g.node(join.id).op == "add"
    assert join.branches[0] == []  # identity
    assert [g.node(i.id).op for i in join.branches[1]] == ["conv"]


def test_structure_covers_every_node_once():
    g = graph_of("""block basic(c, stride=1) {
  residual { conv3-{c}/{stride} norm=bn act=relu; conv3-{c} norm=bn } shortcut {
    conv1-{c}/{stride} norm=bn
  }
  relu
}
arch a
input 4x8x8
l1: basic(4) x2
l2: basic(8, 2)
concat { gap | gmp }
""")
    seen: list[int] = []

    def walk(items):
        for it in items:
            if isinstance(it, NodeRef):
                seen.append(it.id)
            elif isinstance(it, ScopeRef):
                walk(it.items)
            else:
                for branch in it.branches:
                    walk(branch)
                seen.append(it.id)

    walk(g.structure)
    assert sorted(seen) == [n.id for n in g.nodes[1:]]


# ---------------------------------------------------------------- shortcuts

def test_shortcut_used_when_only_channels_change():
    g = graph_of("arch a\ninput 4x8x8\nresidual { conv3-8 } shortcut { conv1-8 }\n")
    assert names(g) == ["0", "shortcut.0", "1"]
    add = g.nodes[-1]
    assert g.inputs(add.id) == [1, 2]


def test_shortcut_skipped_when_shape_is_kept():
    g = graph_of("arch a\ninput 8x8x8\nresidual { conv3-8 } shortcut { conv1-8 }\n")
    assert names(g) == ["0", "1"]
    assert g.inputs(g.nodes[-1].id) == [1, 0]


def test_residual_without_shortcut_is_identity():
    g = graph_of("arch a\ninput 8x8x8\nr: residual { conv3-8; relu }\n")
    assert names(g) == ["0", "1", "r"]
    assert g.inputs(g.node(3).id) == [2, 0]


# ---------------------------------------------------------------- values and defaults

def test_vector_input_and_fc_stack():
    g = graph_of("arch a\ninput 100\nFC-10 act=relu\ndropout\nFC-5\n")
    assert [(n.op, n.shape) for n in g.nodes] == [
        ("input", (100,)), ("fc", (10,)), ("relu", (10,)), ("dropout", (10,)), ("fc", (5,))]


def test_defaults_are_evaluated_where_written():
    g = graph_of("arch a\ninput 8x8x8\nlet g = 2\ndefaults groups={g}\nlet g = 4\n"
                 "conv3-8\nconv3-8 groups={g}\n")
    assert [n.attrs["groups"] for n in g.nodes[1:]] == [2, 4]


def test_block_call_attributes_override_outer_defaults():
    g = graph_of("block b { conv3-4; FC-3 }\narch a\ninput 3x4x4\ndefaults act=relu\n"
                 "b act=tanh\nFC-2\n")
    assert [n.op for n in g.nodes[1:]] == ["conv", "tanh", "fc", "tanh", "fc", "relu"]


def test_settings_hold_the_bound_parameters():
    text = "arch a(w=2, r=8)\ninput 3x{r}x{r}\nconv3-{w}\narch b = a(r=4)\n"
    a, b = load_all(text)
    assert a.settings == {"w": 2, "r": 8} and b.settings == {"w": 2, "r": 4}
    assert b.graph.input_shape == (3, 4, 4)
    assert load(text, arch="b", w=5).settings == {"w": 5, "r": 4}


def test_load_all_applies_parameters_to_the_archs_that_declare_them():
    # api.load_all: "parameters apply to each that declares them"
    text = "arch b(k=2)\ninput 1x4x4\nconv1-{k}\narch e\ninput 3x2x2\ngap\n"
    b, e = load_all(text, k=3)
    assert b.settings == {"k": 3} and b.graph.output_shape == (3, 4, 4)
    assert e.settings == {} and e.graph.output_shape == (3, 1, 1)


def test_node_cap(monkeypatch):
    monkeypatch.setattr(LAYERS, "MAX_NODES", 50)
    with pytest.raises(ArchErrors) as info:
        load("arch a\ninput 3x4x4\nconv3-4 x100\n")
    (err,) = info.value.errors
    assert isinstance(err, ValueError_) and "more than 50 nodes" in err.message
    assert (err.span.line, err.span.col) == (3, 1)  # the layer that is one too many
    assert [(n.line, n.col) for _, n in err.notes] == [(3, 10)]  # and the repetition


def test_errors_do_not_cascade_into_later_layers():
    # a failed layer leaves the shape unknown; later layers are not blamed for it
    with pytest.raises(ArchErrors) as info:
        load("arch a\ninput 3x8x8\nresidual { conv3-8 }\nconv3-4\nFC-10\nconv3-4\n")
    assert [e.span.line for e in info.value.errors] == [3]


# ---------------------------------------------------------------- the Python API

def test_architecture_object():
    arch = load("arch net(c=4)\ninput 3x8x8\nconv3-{c} act=relu\ngap\n")
    assert isinstance(arch, Architecture)
    assert arch.name == "net" and arch.settings == {"c": 4}
    assert repr(arch) == "Architecture('net', input=3×8×8, output=4×1×1, nodes=4)"
    assert arch.stats().totals["params"] == 3 * 9 * 4 + 4
    assert arch.format() == format_graph(arch.graph)


def test_load_from_path_and_text_agree(tmp_path):
    text = "arch net\ninput 3x8x8\nconv3-4\n"
    path = tmp_path / "net.arch"
    path.write_text(text)
    assert load(path).graph.signature() == load(text).graph.signature()
    assert load(str(path)).graph.signature() == load(text).graph.signature()


def test_select_archs():
    program = load_spec("arch a\ninput 3x4x4\nrelu\narch b = a\n")
    assert select_archs(program, None) == ["a", "b"]
    assert select_archs(program, "b") == ["b"]
    with pytest.raises(ArchErrors) as info:
        select_archs(program, "c")
    assert isinstance(info.value.errors[0], UsageError)


def test_elaborate_twice_gives_equal_graphs():
    program = load_spec("arch a(c=2)\ninput 3x4x4\nconv3-{c} x3\n")
    g1, g2 = elaborate(program, "a"), elaborate(program, "a", {"c": 2})
    assert g1.signature() == g2.signature()
    assert elaborate(program, "a", {"c": 3}).signature() != g1.signature()


# ---------------------------------------------------------------- the validator itself

def small() -> Graph:
    return graph_of("arch a\ninput 3x8x8\nconv3-4 norm=bn\nadd { | relu }\n")


def test_validate_detects_a_wrong_shape():
    g = small()
    g.node(1).shape = (5, 8, 8)
    with pytest.raises(IRError, match="shape"):
        validate(g)


def test_validate_detects_a_cycle():
    g = small()
    g.g.add_edge(g.output_id, 1, index=1)
    with pytest.raises(IRError):
        validate(g)


def test_validate_detects_duplicate_names():
    g = small()
    g.node(2).name = g.node(1).name
    with pytest.raises(IRError, match="duplicate"):
        validate(g)


def test_validate_detects_a_join_with_one_input():
    g = small()
    first = g.inputs(g.output_id)[0]
    g.g.remove_edge(first, g.output_id)
    with pytest.raises(IRError, match="inputs"):
        validate(g)


def test_validate_detects_a_bad_layer_reference():
    g = small()
    bn = next(n for n in g.nodes if n.op == "bn")
    conv = g.node(bn.layer)
    conv.layer = bn.id  # the conv's layer is now a node that is not a primary node
    with pytest.raises(IRError, match="primary"):
        validate(g)


def test_signature_sees_attribute_changes():
    g1, g2 = small(), small()
    assert g1.signature() == g2.signature()
    g2.node(1).attrs["bias"] = True
    assert g1.signature() != g2.signature()


# ---------------------------------------------------------------- the input of an item

def test_in_channels_is_the_input_of_each_item_and_repetition():
    g = graph_of("arch a\ninput 8x6x6\nconv3-{in_channels * 2} x3\nlet c = in_channels\n"
                 "conv1-{c // 4}\n"
                 "gate { gap; conv1-{in_channels // 4}; conv1-{in_channels * 4} act=sigmoid }\n"
                 "tokens\nlinear-{in_shape[0] + in_channels}\n")
    convs = [n.shape for n in g.nodes if n.op in ("conv", "linear")]
    assert convs == [(16, 6, 6), (32, 6, 6), (64, 6, 6), (16, 6, 6), (4, 1, 1), (16, 1, 1),
                     (36, 52)]


def test_in_channels_in_a_block_is_its_calls_input():
    # DenseNet-BC's transition (compression 0.5) and an SE gate written once for any width
    text = ("block transition() { conv1-{in_channels // 2}; avgpool2/2 }\n"
            "block se(r) { gate { gap; conv1-{in_channels // r}; conv1-{in_shape[0] * r} "
            "act=sigmoid } }\n"
            "arch a\ninput 3x8x8\nconv3-12\ntransition()\nse(3)\n")
    nodes = {n.name: n for n in graph_of(text).nodes}
    assert nodes["1.0"].shape == (6, 8, 8) and nodes["2.1"].shape == (2, 1, 1)
    assert nodes["2.2"].shape == (6, 1, 1)
    # a name the spec gives wins (a parameter, a `let`)
    g = graph_of("arch a(in_channels = 5)\ninput 3x8x8\nconv3-{in_channels}\n")
    assert g.output_shape == (5, 8, 8)


def test_in_channels_after_an_error_adds_no_error():
    with pytest.raises(ArchErrors) as info:
        load("arch a\ninput 3x8x8\ncnv3-8\nconv3-{in_channels}\nconv3-{nope}\n")
    assert [e.message for e in info.value.errors] == [
        "unknown op or block `cnv3`", "unknown name `nope`"]

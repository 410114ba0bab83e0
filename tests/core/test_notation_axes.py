"""Kernels, strides, padding and dilation per axis (`conv1x7-192`, `k=1x7`, `pad=0,3`), dashed
labels (`block1-0:`) and label templates with parts (`block{s}-{i}:`), and the expression
forms specs need for width rules: log/log2/ceil/floor, range, comprehensions, lists over lines."""

from __future__ import annotations

import pytest

from archdsl.api import load
from archdsl.errors import ArchErrors
from archdsl.formatter import format_graph
from archdsl.ir import validate


def nodes(text: str, **kw) -> dict:
    g = load(text, **kw).graph
    validate(g)
    assert load(format_graph(g)).graph.signature() == g.signature()  # the round trip
    return {n.name: n for n in g.nodes}


def test_kernel_per_axis_in_the_name_and_as_an_attribute():
    n = nodes("arch a\ninput 8x17x17\nc1: conv1x7-16\nc2: conv7x1-16\nc3: conv-16 k=1x7\n"
              "c4: conv-16 k=[7, 1] pad=valid\nc5: conv3x3-16\n")
    assert n["c1"].attrs["k"] == (1, 7) and n["c1"].attrs["pad"] == (0, 3)
    assert n["c2"].attrs["k"] == (7, 1) and n["c2"].attrs["pad"] == (3, 0)
    assert n["c3"].attrs["k"] == (1, 7) and n["c3"].shape == (16, 17, 17)
    assert n["c4"].shape == (16, 11, 17)
    assert n["c5"].attrs["k"] == 3  # the same on both axes: one number, as conv3


def test_k_1x7_is_a_kernel_not_a_repetition():
    # before: `k=1x7` was `k=1` repeated 7 times. Written with a space, it is a repeat.
    one = load("arch a\ninput 4x9x9\nconv-8 k=1x7\n").graph
    assert [n.attrs["k"] for n in one.nodes[1:]] == [(1, 7)]
    seven = load("arch a\ninput 4x9x9\nconv-4 k=1 x7\n").graph
    assert [n.attrs["k"] for n in seven.nodes[1:]] == [1] * 7


def test_padding_stride_dilation_per_axis():
    n = nodes("arch a\ninput 4x16x16\nc: conv3-8 pad=0,1 stride=1x2 dilation=2,1\n"
              "p: maxpool1x3/1 pad=0,1\nq: avgpool3x1 stride=2x1\n")
    assert n["c"].attrs["stride"] == (1, 2) and n["c"].shape == (8, 12, 8)
    assert n["p"].shape == (8, 12, 8)
    assert n["q"].shape == (8, 5, 8)


@pytest.mark.parametrize("line,message", [
    ("conv-8 k=1x2x3", "must be one number or \\[height, width\\]"),
    ("conv-8 k=0x3", "at least 1"),
    ("conv3-8 pad=1,-1", "at least 0"),
    ("maxpool1x3 pad=1,1", "more than half the window"),
    ("conv-8 kh=1 kw=7", "no attribute `kh`"),
])
def test_per_axis_mistakes_are_located_errors(line, message):
    with pytest.raises(ArchErrors, match=message) as info:
        load(f"arch a\ninput 4x9x9\n{line}\n")
    assert info.value.errors[0].span.line == 3


def test_kh_kw_point_to_the_per_axis_kernel():
    with pytest.raises(ArchErrors) as info:
        load("arch a\ninput 4x9x9\nconv-8 kh=1 kw=7\n")
    assert "k=1x7" in info.value.errors[0].hint


# ---------------------------------------------------------------- labels

def test_labels_with_dashes_name_layers_and_scopes():
    # torchvision's RegNet: trunk_output.block1.block1-0.f.a
    n = nodes("block b(c) { f: (a: conv1-{c}) }\narch a\ninput 4x8x8\n"
              "trunk_output: (block1: (block1-0: b(8); block1-1: b(8)))\nx-y: relu\n")
    assert "trunk_output.block1.block1-0.f.a" in n and "trunk_output.block1.block1-1.f.a" in n
    assert "x-y" in n


def test_label_templates_join_words_and_expressions():
    n = nodes("block b(c) { conv1-{c} }\narch a(s = 2)\ninput 4x8x8\n"
              "block{s}: (block{s}-{i}: b(8) x3)\nfc{i + 1}: conv1-4 x2\n")
    assert {"block2.block2-0.0", "block2.block2-1.0", "block2.block2-2.0", "fc1", "fc2"} <= set(n)


def test_a_dash_is_still_the_channel_count_of_a_layer():
    n = nodes("arch a\ninput 4x8x8\nconv3-8; c: conv3-{2 * 4}\nconv1-4 x2\n")
    assert [x.shape[0] for x in n.values()][1:] == [8, 8, 4, 4]


@pytest.mark.parametrize("label", ["x{0.5}", "x{\"a b\"}", "x{\"a.b\"}"])
def test_a_label_that_is_no_name_says_what_a_name_is(label):
    with pytest.raises(ArchErrors, match="is not a valid name") as info:
        load(f"arch a\ninput 4x8x8\n{label}: relu\n")
    assert "block1-0" in info.value.errors[0].hint


# ---------------------------------------------------------------- expressions

def test_math_functions():
    n = nodes("arch a\ninput 4x8x8\n"
              "c1: conv1-{int(log2(64))}\nc2: conv1-{round(log(1000, 10))}\n"
              "c3: conv1-{ceil(7 / 2)}\nc4: conv1-{floor(7 / 2)}\nc5: conv1-{round(exp(log(5)))}\n")
    assert [n[f"c{k}"].shape[0] for k in range(1, 6)] == [6, 3, 4, 3, 5]


def test_list_comprehensions_range_enumerate_zip_sum():
    n = nodes("arch a(ws = [8, 16, 16, 32])\ninput 4x8x8\n"
              "let doubled = [2 * w for w in ws if w > 8]\n"
              "let steps = [w for k, w in enumerate(ws) if k == 0 or w != ws[k - 1]]\n"
              "let pairs = [a * b for a, b in zip(range(1, 4), [1, 2, 3])]\n"
              "c1: conv1-{sum(doubled)}\nc2: conv1-{len(steps)}\nc3: conv1-{sum(pairs)}\n"
              "c4: conv1-{[k for k in range(10)][-1]}\n")
    assert [n[f"c{k}"].shape[0] for k in range(1, 5)] == [128, 3, 14, 9]


def test_lists_arguments_and_parameters_continue_over_lines():
    text = """arch a(widths = [8,
                  16,   # a comment inside the list
                  32],
       depth = 2,
)
input 3x8x8
let w = max(widths[0],
            widths[1])
b1: conv1-{w}
b2: conv1-{
  widths[2]
}
b3: conv1-{[c for c in widths
            if c > 8][0]}
"""
    n = nodes(text)
    assert [n[f"b{k}"].shape[0] for k in (1, 2, 3)] == [16, 32, 16]


def test_expressions_are_bounded():
    with pytest.raises(ArchErrors, match="longer than the limit"):
        load("arch a\ninput 4x8x8\nconv1-{len(range(10 ** 9))}\n")
    with pytest.raises(ArchErrors, match="cannot unpack"):
        load("arch a\ninput 4x8x8\nconv1-{len([a for a, b in [1, 2]])}\n")
    with pytest.raises(ArchErrors, match="cannot iterate"):
        load("arch a\ninput 4x8x8\nconv1-{len([a for a in 3])}\n")


@pytest.mark.parametrize("text,hint", [
    ("let x = 1 +\n  2\n", "end the line with `\\` to continue it"),
    ("conv3-64\n  act=relu\n", "an attribute on a line of its own"),
])
def test_a_statement_cut_by_a_line_break_says_how_to_continue(text, hint):
    with pytest.raises(ArchErrors) as info:
        load("arch a\ninput 3x8x8\n" + text)
    assert hint in info.value.errors[0].hint


# ---------------------------------------------------------------- names and indices

def test_inline_blocks_name_their_items_in_the_callers_scope():
    n = nodes("inline block pair(c) { conv3-{c}; relu }\nblock one(c) { conv1-{c} }\n"
              "inline block row(c, k) { one(c) x{k} }\narch a\ninput 3x8x8\n"
              "features: (pair(4); row(8, 2); row(16, 1))\nnamed: row(4, 1)\n")
    assert [k for k in n if k != "input"] == [
        "features.0", "features.1", "features.2.0", "features.3.0", "features.4.0",
        "named.0.0"]  # a named call of an inline block is a scope, as a named group is


def test_inline_block_names_clash_when_called_twice():
    with pytest.raises(ArchErrors, match="name `c` is used twice"):
        load("inline block b() { c: conv1-4 }\narch a\ninput 3x8x8\nb(); b()\n")


def test_a_residual_in_a_sequence_takes_an_index_per_body_layer_and_one_for_the_add():
    # documented in docs/language.md, "Names and indices"
    n = nodes("block unit() { residual { conv3-8 } }\narch a\ninput 8x4x4\n"
              "features: (conv3-8; residual { conv3-8 }; conv3-8; unit())\n")
    assert [(k, v.op) for k, v in n.items()][1:] == [
        ("features.0", "conv"), ("features.1", "conv"), ("features.2", "add"),
        ("features.3", "conv"), ("features.4.0", "conv"), ("features.4.1", "add")]

"""Channel routing: `split { | ... }` (ShuffleNetV2's x.chunk(2, dim=1)), `slice`, `chunk`,
`channel_shuffle` and the fixed per-channel `affine` (torchvision's transform_input): shapes,
counts (no weights, no units for the views), names, errors and the round trip."""

from __future__ import annotations

import pytest

from archdsl.analysis import analyse
from archdsl.api import load
from archdsl.errors import ArchErrors
from archdsl.formatter import format_graph
from archdsl.ir import validate


def graph(text: str):
    g = load(text).graph
    validate(g)
    assert load(format_graph(g)).graph.signature() == g.signature()  # the round trip
    return g


def test_split_routes_each_part_through_its_branch():
    # torchvision's ShuffleNetV2 unit: x1, x2 = x.chunk(2, dim=1); cat(x1, branch2(x2))
    g = graph("arch a\ninput 58x8x8\nunit: split { | branch2: (conv1-29; dwconv3) }\n"
              "channel_shuffle(2)\n")
    names = {n.name: n for n in g.nodes}
    slices = [n for n in g.nodes if n.op == "slice"]
    assert [(s.attrs["start"], s.attrs["end"]) for s in slices] == [(0, 29), (29, 58)]
    assert names["branch2.0"].shape == (29, 8, 8)
    unit = names["unit"]
    assert unit.op == "concat" and unit.shape == (58, 8, 8)
    assert [g.node(i).name for i in g.inputs(unit.id)] == [slices[0].name, "branch2.1"]


def test_split_with_sizes_and_more_branches():
    g = graph("arch a\ninput 10x4x4\nsplit(2, 3, 5) { relu | | conv1-4 }\n")
    slices = [(n.attrs["start"], n.attrs["end"]) for n in g.nodes if n.op == "slice"]
    assert slices == [(0, 2), (2, 5), (5, 10)]
    assert g.output_shape == (9, 4, 4)


def test_chunk_cuts_as_torch_chunk_and_lowers_to_slice():
    g = graph("arch a\ninput 7x4x4\nb: concat { chunk(2, 0) | chunk(2, 1) | chunk(3, 2) }\n")
    assert [(n.op, n.attrs) for n in g.nodes[1:4]] == [
        ("slice", {"start": 0, "end": 4}), ("slice", {"start": 4, "end": 7}),
        ("slice", {"start": 6, "end": 7})]


def test_slices_of_tokens_and_vectors_cut_features():
    g = graph("arch a\ninput 8x2x2\ntokens\nslice(2, 6)\ntoken(0)\nslice(1, 2)\n")
    assert [n.shape for n in g.nodes[1:]] == [(4, 8), (4, 4), (4,), (1,)]


def test_counts_views_make_no_units_affine_does():
    g = graph("arch a\ninput 6x4x4\nsplit { | conv1-3 }\nchannel_shuffle(3)\n"
              "affine(scale=[1, 2, 3, 4, 5, 6], shift=0.5)\n")
    rows = {r.op: r for r in analyse(g).rows}
    for op in ("slice", "channel_shuffle"):
        assert rows[op].units == rows[op].params == rows[op].macs == 0
    assert rows["affine"].units == 6 * 4 * 4 and rows["affine"].params == 0
    assert rows["affine"].macs == 0 and rows["concat"].units == 0


@pytest.mark.parametrize("line,message", [
    ("split { conv1-2 }", "at least two branches"),
    ("split(2, 3) { | }", "cannot cut 6 channels into 2 branches"),
    ("split { | | | | }", "make 3 chunks of 2, not 4"),
    ("slice(4, 9)", "are not a part of the 6"),
    ("slice(3, 3)", "are not a part"),
    ("chunk(2, 2)", "chunk 2 of 2 does not exist"),
    ("channel_shuffle(4)", "4 groups must divide the 6 channels"),
    ("affine(scale=[1, 2])", "`scale` has 2 values for 6 channels"),
    ("flatten; channel_shuffle(2)", "needs a C×H×W input"),
])
def test_mistakes_are_located(line, message):
    with pytest.raises(ArchErrors, match=message) as info:
        load(f"arch a\ninput 6x4x4\n{line}\n")
    assert info.value.errors[0].span.line == 3

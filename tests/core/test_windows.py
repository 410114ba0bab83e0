"""Windowed attention (Swin): the window geometry, the ops' shape rules and counts, the sequence ↔
map ops, and their errors. The numbers against torchvision's modules are in
tests/backends/test_pytorch_windows.py; Swin-T/S/B in test_zoo_transformers.py."""

from __future__ import annotations

import pytest

import archdsl
from archdsl.errors import ArchErrors
from archdsl.windows import WindowPlan, relative_position_index


def _torchvision_regions(ph: int, pw: int, window: tuple, shift: tuple) -> list[list[float]]:
    """torchvision's mask labels, by its own recipe: Python slices of the padded map assigned
    in order (an unshifted axis gives the slice (-0, None), which covers the whole axis)."""
    labels = [[0.0] * pw for _ in range(ph)]
    count = 0
    for h0, h1 in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for w0, w1 in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            for r in range(ph)[h0:h1]:
                for c in range(pw)[w0:w1]:
                    labels[r][c] = count
            count += 1
    return labels


@pytest.mark.parametrize("size,window,shift", [
    ((14, 14), (7, 7), (3, 3)), ((8, 8), (4, 4), (2, 2)), ((10, 13), (3, 5), (1, 2)),
    ((9, 7), (4, 4), (2, 3)), ((5, 12), (7, 3), (3, 1)),  # one axis covered whole: not shifted
])
def test_mask_regions_are_torchvisions(size, window, shift):
    plan = WindowPlan(size, window, shift)
    (ph, pw), (wh, ww), gw = plan.padded, plan.window, plan.grid[1]
    labels = _torchvision_regions(ph, pw, window, plan.shift)
    for k, got in enumerate(plan.regions()):
        i, j = divmod(k, gw)
        want = [labels[i * wh + a][j * ww + b] for a in range(wh) for b in range(ww)]
        # the mask only asks whether two tokens share a label
        assert [[x == y for y in got] for x in got] == [[x == y for y in want] for x in want]


def test_plan_pads_to_whole_windows_and_drops_a_shift_one_window_covers():
    plan = WindowPlan((5, 12), (7, 3), (3, 1))
    assert plan.padded == (7, 12) and plan.grid == (1, 4) and plan.windows == 4
    assert plan.shift == (0, 1) and plan.shifted
    assert not WindowPlan((7, 7), (7, 7), (3, 3)).shifted  # Swin's last stage at 224


def test_positions_are_the_shift_then_the_partition():
    plan = WindowPlan((4, 4), (2, 2), (1, 1))
    # window 0 reads rows 1-2 and columns 1-2 of the map; window 3 wraps around to row/col 0
    assert plan.positions()[:4] == [5, 6, 9, 10]
    assert plan.positions()[12:] == [15, 12, 3, 0]
    assert sorted(plan.positions()) == list(range(16))


def test_relative_position_index():
    # a 2×3 window: offsets (Δrow, Δcol) in [-1, 1] × [-2, 2], rows of 5
    index = relative_position_index((2, 3))
    assert len(index) == 36 and min(index) == 0 and max(index) == 3 * 5 - 1
    assert index[0] == 1 * 5 + 2  # a token with itself: offset (0, 0)
    assert index[5] == (0 - 1 + 1) * 5 + (0 - 2 + 2)  # token (0,0) and token (1,2)


SWIN_LIKE = """arch t
input 3x32x32
defaults norm=none act=none
conv4-16/4 pad=0
wa: window_attention(2) window=3 shift=1
pm: patch_merging
wb: window_attention(4) window={[3, 4]} shift={[1, 2]}
v2: window_attention(4) window=2 position_bias=mlp cosine=true mlp_hidden=8
pv: patch_merging-48 post_norm=true
tokens
pool: gap
"""


def test_window_attention_counts():
    a = archdsl.load(SWIN_LIKE)
    rows = {r.name: r for r in a.stats().rows}
    wa, c = rows["wa"], 16
    assert wa.shape == (16, 8, 8)
    # 8×8 padded to 9×9 in windows of 9 tokens: projections 4·P·C², QKᵀ and A·V 2·P·N·C
    assert wa.macs == 81 * (4 * c * c + 2 * 9 * c)
    assert wa.params == 4 * c * c + 4 * c + 5 * 5 * 2  # + the (2·3−1)² × 2-head table
    assert wa.weights == 4 * c * c + 5 * 5 * 2
    assert wa.units == 16 * 8 * 8
    # non-square: 4×4 padded to 6×4 (windows of 3×4)
    assert rows["wb"].macs == 24 * (4 * 32 * 32 + 2 * 12 * 32)
    assert rows["wb"].params == 4 * 32 * 32 + 4 * 32 + 5 * 7 * 4
    # v2: its position-bias MLP (2 → 8 → 4 heads) runs on every pass, on (2·2−1)² offsets
    v2 = rows["v2"]
    assert v2.macs == 16 * (4 * 32 * 32 + 2 * 4 * 32) + 9 * (2 * 8 + 8 * 4)
    assert v2.params == 4 * 32 * 32 + 4 * 32 + 4 + (2 * 8 + 8) + 8 * 4  # + logit scale, MLP


def test_patch_merging_counts():
    rows = {r.name: r for r in archdsl.load(SWIN_LIKE).stats().rows}
    pm = rows["pm"]
    assert pm.shape == (32, 4, 4)  # 2C by default
    assert pm.macs == 4 * 4 * (4 * 16) * 32 and pm.weights == 4 * 16 * 32
    assert pm.params == 4 * 16 * 32 + 2 * 4 * 16  # the norm over 4C features (v1)
    pv = rows["pv"]
    assert pv.shape == (48, 2, 2) and pv.params == 4 * 32 * 48 + 2 * 48  # norm after (v2)


def test_odd_maps_merge_with_padding():
    a = archdsl.load("arch t\ninput 6x7x5\npatch_merging\n")
    assert a.graph.output_shape == (12, 4, 3)


def test_token_pooling_and_grid():
    a = archdsl.load(SWIN_LIKE)
    rows = {r.name: r for r in a.stats().rows}
    assert rows["pool"].shape == (48,) and rows["pool"].connections == 48 * 4
    b = archdsl.load("arch t\ninput 8x4x6\ntokens\nlinear-5\nsq: grid(4)\ntokens\n"
                     "wide: grid(2, 12)\ntokens\ngmp\n")
    shapes = {n.name: n.shape for n in b.graph.nodes}
    assert shapes["sq"] == (5, 4, 6) and shapes["wide"] == (5, 2, 12)
    assert b.graph.output_shape == (5,)
    assert archdsl.load("arch t\ninput 8x4x4\ntokens\ng: grid\n").graph.output_shape == (8, 4, 4)


def _errors(text: str) -> str:
    with pytest.raises(ArchErrors) as info:
        archdsl.load(text)
    return str(info.value)


HEAD = "arch t\ninput 3x32x32\nconv-64/8 k=8 pad=0\n"


@pytest.mark.parametrize("line,message", [
    ("tokens\nconv3-8", "conv needs a C×H×W map, got 16×64: a sequence of 16 tokens"),
    ("tokens\nmaxpool", "pooling needs a C×H×W map, got 16×64"),
    ("tokens\nwindow_attention(4)", "window_attention needs a C×H×W map"),
    ("window_attention(5)", "5 heads must divide the 64 channels"),
    ("window_attention(4) window=4 shift=4", "a shift of 4 is not smaller than the window's"),
    ("window_attention(4) window={[2, 3, 4]}", "must be one number or [height, width]"),
    ("window_attention(4) window=0", "`window` of `window_attention` must be at least 1"),
    ("window_attention(4) position_bias=rel", "must be one of table, mlp, none"),
    ("window_attention(4) window=65", "a 65×65 window holds 4,225 tokens, more than archdsl's"),
    ("tokens\nclass_token\ngrid", "17 tokens are not a square grid"),
    ("tokens\ngrid(3, 5)", "a 3×5 grid holds 15 tokens, the sequence has 16"),
    ("grid", "grid needs a sequence of tokens (L×D), got 64×4×4"),
    ("flatten\npatch_merging", "patch_merging needs a C×H×W input, got 1024"),
])
def test_errors_are_located_and_say_what_to_do(line, message):
    text = _errors(HEAD + line + "\n")
    assert message in text
    assert text.startswith(f"<string>:{4 + line.count(chr(10))}:")  # the layer, or its attribute


def test_conv_on_tokens_names_the_way_back():
    text = _errors(HEAD + "tokens\nconv3-8\n")
    assert "`grid` makes L×D a D×H×W map" in text


def test_window_attributes_round_trip_through_the_formatter():
    from archdsl.api import elaborate, load_spec
    from archdsl.formatter import format_graph
    a = archdsl.load(SWIN_LIKE)
    text = format_graph(a.graph)
    assert "window=3x4\n" in text and "window=3\n" in text  # a size per axis: height × width
    again = elaborate(load_spec(text), "t")
    assert again.signature() == a.graph.signature()


def test_drawing_and_paper_notation_say_window_size_shift_and_width():
    from archdsl.drawing import draw
    from archdsl.notation import notation
    a = archdsl.load(SWIN_LIKE)
    src = draw(a).source
    assert "window attention 3×3, 2 heads, shift 1×1" in src
    assert "window attention 3×4, 4 heads, shift 1×2" in src and "patch merging, 32" in src
    nodes = {n.name: n for n in a.graph.nodes}
    assert notation(nodes["wb"]) == "window_attention(4) window={[3, 4]} shift={[1, 2]}"
    assert notation(nodes["v2"]) == "window_attention(4) window=2 position_bias=mlp cosine=true"
    assert notation(nodes["pv"]) == "patch_merging-48"

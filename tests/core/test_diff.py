"""archdsl.diff: layers added/removed/changed between two specs or two settings, and the
size deltas per stage and in total."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from rich.console import Console

import archdsl
from archdsl.diff import diff_archs, diff_dict, diff_markdown, diff_table

SPECS = Path(__file__).parents[2] / "specs"


@cache
def vgg(name: str, **params) -> archdsl.Architecture:
    return archdsl.load(SPECS / "vgg.arch", arch=name, **params)


@cache
def resnet(depth: int) -> archdsl.Architecture:
    return archdsl.load(SPECS / "resnet.arch", arch=f"resnet{depth}")


@cache
def mobilenet(**params) -> archdsl.Architecture:
    return archdsl.load(SPECS / "mobilenet_v1.arch", **params)


def render(d) -> str:
    console = Console(width=200, record=True, file=None)
    with console.capture() as cap:
        console.print(diff_table(d))
    return cap.get()


def totals(a) -> dict:
    return a.stats().totals


def test_vgg_a_to_b_adds_one_conv_to_each_of_the_first_two_stages() -> None:
    a, b = vgg("vgg_a"), vgg("vgg_b")
    d = diff_archs(a, b)
    assert [(x.name, x.text_b, x.shape_b) for x in d.added] == [
        ("features.2", "conv3-64", (64, 224, 224)),
        ("features.7", "conv3-128", (128, 112, 112)),
    ]
    assert not d.removed and not d.changed
    # the layers after the new ones are renumbered by torchvision-style indices, not changed
    assert ("features.2", "features.4") in d.renamed
    assert d.total.dparams == totals(b)["params"] - totals(a)["params"] == 184_512
    assert d.total.dmacs == totals(b)["macs"] - totals(a)["macs"]
    assert sum(x.dparams for x in d.layers) == d.total.dparams
    stages = {s.name: s for s in d.stages}
    assert list(stages) == ["features", "avgpool", "classifier", "softmax"]
    assert stages["features"].dparams == d.total.dparams
    assert stages["classifier"].dparams == 0 and stages["classifier"].pct_params == 0
    assert d.total.pct_params == pytest.approx(184_512 / 132_863_336 * 100)
    assert not d.is_empty


def test_vgg_c_to_d_changes_the_1x1_convs_to_3x3() -> None:
    d = diff_archs(vgg("vgg_c"), vgg("vgg_d"))
    assert not d.added and not d.removed
    assert [(x.name, x.text_a, x.text_b) for x in d.changed] == [
        ("features.14", "conv1-256", "conv3-256"),
        ("features.21", "conv1-512", "conv3-512"),
        ("features.28", "conv1-512", "conv3-512"),
    ]
    # the padding follows the kernel (`same`): not reported as a change of its own
    assert d.changed[0].details == ["conv1-256 → conv3-256"]
    assert d.changed[0].dparams == 3 * 3 * 256 * 256 - 1 * 1 * 256 * 256


def test_adding_batch_norm_changes_every_conv_and_renumbers_the_rest() -> None:
    d = diff_archs(vgg("vgg_a"), vgg("vgg11_bn"))
    assert not d.added and not d.removed
    assert len(d.changed) == 8  # the eight convolutions of configuration A
    assert all(x.details == ["norm=none → norm=bn"] for x in d.changed)
    assert [x.name for x in d.changed[:3]] == ["features.0", "features.3 → features.4",
                                               "features.6 → features.8"]
    assert sum(x.dparams for x in d.changed) == d.total.dparams == 2 * (64 + 128 + 2 * 256 +
                                                                        4 * 512)


def test_resnet18_to_34_adds_whole_blocks() -> None:
    a, b = resnet(18), resnet(34)
    d = diff_archs(a, b)
    assert not d.removed and not d.changed and not d.renamed
    blocks = sorted({x.name.rsplit(".", 1)[0] for x in d.added})
    # [2, 2, 2, 2] → [3, 4, 6, 3] blocks: the new ones are appended to each stage
    assert blocks == ["layer1.2", "layer2.2", "layer2.3", "layer3.2", "layer3.3", "layer3.4",
                      "layer3.5", "layer4.2"]
    assert {x.text_b for x in d.added if x.name.startswith("layer3.")} >= {"conv3-256"}
    assert d.total.dparams == totals(b)["params"] - totals(a)["params"] == 10_108_160
    assert d.total.dmacs == totals(b)["macs"] - totals(a)["macs"]
    stages = {s.name: s for s in d.stages}
    assert stages["conv1"].dparams == 0 and stages["fc"].dparams == 0
    assert stages["layer3"].dparams == 4 * 2 * (3 * 3 * 256 * 256 + 2 * 256)
    assert sum(s.dparams for s in d.stages) == d.total.dparams


def test_resnet34_to_50_changes_blocks_to_bottlenecks() -> None:
    d = diff_archs(resnet(34), resnet(50))
    first = {x.name: x for x in d.layers if x.name.startswith("layer1.0.")}
    assert first["layer1.0.conv1"].kind == "changed"
    assert first["layer1.0.conv1"].details[0] == "conv3-64 → conv1-64"
    assert first["layer1.0.conv3"].kind == "added"
    assert first["layer1.0.downsample.0"].kind == "added"  # 64 → 256 channels needs one
    assert sum(x.dparams for x in d.layers) == d.total.dparams == 25_557_032 - 21_797_672


def test_mobilenet_width_multiplier_changes_channels_only() -> None:
    a, b = mobilenet(alpha=1.0), mobilenet(alpha=0.5)
    d = diff_archs(a, b)
    assert not d.added and not d.removed and not d.renamed
    assert d.a == "mobilenet_v1 (alpha=1.0)" and d.b == "mobilenet_v1 (alpha=0.5)"
    changed = {x.name: x for x in d.changed}
    assert changed["conv1"].details[0] == "conv3-32/2 → conv3-16/2"
    assert "shape 32×112×112 → 16×112×112" in changed["conv1"].details
    assert changed["layers.0.pw"].text_a == "conv1-64"
    assert changed["layers.0.pw"].text_b == "conv1-32"
    # a depthwise conv keeps its notation; its shapes tell the change
    assert changed["layers.1.dw"].text_a == changed["layers.1.dw"].text_b == "dwconv3/2"
    assert "shape 64×56×56 → 32×56×56" in changed["layers.1.dw"].details
    # the classifier is changed because its input shrank
    assert changed["fc"].details == ["input 1024×1×1 → 512×1×1"]
    assert "softmax" not in changed  # same op, same shapes
    assert d.total.dparams == totals(b)["params"] - totals(a)["params"]
    assert d.total.pct_params == pytest.approx(
        (totals(b)["params"] - totals(a)["params"]) / totals(a)["params"] * 100)


def test_resolution_changes_shapes_not_parameters() -> None:
    d = diff_archs(mobilenet(resolution=224), mobilenet(resolution=160))
    assert not d.added and not d.removed
    assert d.total.dparams == 0 and d.total.dmacs < 0
    assert "shape 32×112×112 → 32×80×80" in {x.name: x for x in d.changed}["conv1"].details


def test_identical_architectures_give_an_empty_diff() -> None:
    d = diff_archs(resnet(50), resnet(50))
    assert d.is_empty and not d.layers and not d.renamed
    assert d.total.dparams == 0 and d.total.dmacs == 0
    assert d.summary == "no differences"
    assert "no differences" in render(d)
    assert "no differences" in diff_markdown(d)
    assert diff_dict(d)["empty"] is True


def test_stage_present_in_one_side_only() -> None:
    a = archdsl.load("arch a\ninput 3x8x8\nc1: conv3-8\nhead: FC-10\n")
    b = archdsl.load("arch b\ninput 3x8x8\nc1: conv3-8\nc2: conv3-8\nhead: FC-10\n")
    d = diff_archs(a, b)
    assert [x.name for x in d.added] == ["c2"]
    assert [x.name for x in d.changed] == []  # head sees the same 8×8×8 input
    stages = {s.name: s for s in d.stages}
    assert list(stages) == ["c1", "c2", "head"]
    assert not stages["c2"].in_a and stages["c2"].pct_params is None
    assert "new" in render(d)
    d = diff_archs(b, a)
    assert [x.name for x in d.removed] == ["c2"]
    assert d.total.dparams == -(3 * 3 * 8 * 8 + 8)


def test_depth_none_compares_layer_by_layer_and_depth_2_by_block() -> None:
    d = diff_archs(resnet(18), resnet(34), depth=2)
    names = [s.name for s in d.stages]
    assert names[:4] == ["conv1", "maxpool", "layer1.0", "layer1.1"]
    assert "layer1.2" in names and not next(s for s in d.stages if s.name == "layer1.2").in_a
    d = diff_archs(vgg("vgg_a"), vgg("vgg_b"), depth=None)
    assert len(d.stages) > 20


def test_renderers() -> None:
    d = diff_archs(resnet(18), resnet(34))
    text = render(d)
    assert "resnet18 → resnet34" in text and "32 added" in text
    assert "layer4.2.conv1" in text and "+10,108,160" in text
    md = diff_markdown(d)
    assert md.startswith("### resnet18 → resnet34")
    assert "| + | layer1.2.conv1 | conv3-64, 64×56×56 | +36,992 |" in md
    assert "| **total** | 11,689,512 | 21,797,672 | +10,108,160 | +86.5% |" in md
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert {len(line.strip("|").split("|")) for line in rows} == {5, 9}  # layers, stages
    data = diff_dict(d)
    json.dumps(data)  # JSON-able
    assert data["summary"] == {"added": 32, "removed": 0, "changed": 0, "renamed": 0}
    assert data["total"]["params"]["delta"] == 10_108_160
    assert data["layers"][0]["name_b"] == "layer1.2.conv1"
    assert data["layers"][0]["shape_b"] == [64, 56, 56]
    changed = diff_dict(diff_archs(vgg("vgg_c"), vgg("vgg_d")))["layers"][0]
    assert changed["kind"] == "changed" and changed["details"] == ["conv1-256 → conv3-256"]


def test_conventions_apply_to_the_sizes() -> None:
    from archdsl.analysis import Conventions
    d = diff_archs(vgg("vgg_a"), vgg("vgg_b"), conventions=Conventions(bias=False))
    assert d.total.dparams == 3 * 3 * 64 * 64 + 3 * 3 * 128 * 128  # weights only
    assert [x.dparams for x in d.added] == [3 * 3 * 64 * 64, 3 * 3 * 128 * 128]


@pytest.mark.parametrize("width", [80, 120])
def test_diff_size_table_fits_with_stage_names_and_whole_numbers(width):
    from rich.cells import cell_len
    from rich.console import Console

    from archdsl.diff import diff_table
    from archdsl.numfmt import compact, grouped
    d = diff_archs(archdsl.load(SPECS / "vgg.arch", arch="vgg_a"),
                   archdsl.load(SPECS / "vgg.arch", arch="vgg_e"))
    console = Console(width=width, record=True, color_system=None)
    console.print(diff_table(d))
    text = console.export_text()
    assert max(cell_len(line) for line in text.splitlines()) <= width
    size = text.split("Size by stage")[1]
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in size.splitlines() if line.startswith("│")}
    assert list(rows) == [s.name for s in d.stages] + ["total"]
    total = rows["total"]
    assert total[0] in (grouped(d.total.params_a), compact(d.total.params_a))
    signed = f"+{grouped(d.total.dparams)}", f"+{compact(d.total.dparams)}"
    assert total[2] in signed

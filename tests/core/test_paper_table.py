"""archdsl.paper_table: the papers' configuration tables regenerated from the zoo's specs."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from rich.console import Console

import archdsl
from archdsl.paper_table import (
    config_table,
    latex_escape,
    paper_table_latex,
    paper_table_markdown,
    paper_table_rich,
)

SPECS = Path(__file__).parents[2] / "specs"
VGG_COLUMNS = ["vgg_a", "vgg_a_lrn", "vgg_b", "vgg_c", "vgg_d", "vgg_e"]


@cache
def vgg_table():
    # the paper's six columns: the torchvision `*_bn` variants are left out (their cells equal
    # their plain twins'; only the params row differs)
    archs = [a for a in archdsl.load_all(SPECS / "vgg.arch") if not a.name.endswith("_bn")]
    return config_table(archs)


@cache
def resnet_table():
    return config_table(archdsl.load_all(SPECS / "resnet.arch"))


def test_vgg_table_1() -> None:
    t = vgg_table()
    assert t.columns == VGG_COLUMNS
    assert t.stage_labels == ["features 1", "features 2", "features 3", "features 4",
                              "features 5", "avgpool", "classifier", "softmax"]
    assert [r.label for r in t.rows][0] == "input"
    assert t.cell("input", "vgg_e") == ["3×224×224"]
    # a pooling layer ends a stage: the conv runs of Table 1, each closed by its max-pool
    assert t.cell("features 1", "vgg_a") == ["conv3-64", "maxpool"]
    assert t.cell("features 1", "vgg_a_lrn") == ["conv3-64", "LRN", "maxpool"]
    assert t.cell("features 1", "vgg_b") == ["conv3-64 ×2", "maxpool"]
    assert t.cell("features 3", "vgg_e") == ["conv3-256 ×4", "maxpool"]
    assert t.cell("features 3", "vgg_d") == ["conv3-256 ×3", "maxpool"]
    assert t.cell("features 3", "vgg_c") == ["conv3-256 ×2", "conv1-256", "maxpool"]
    assert t.cell("features 5", "vgg_c") == ["conv3-512 ×2", "conv1-512", "maxpool"]
    assert t.cell("classifier", "vgg_a") == ["FC-4096 ×2", "FC-1000"]  # dropout not shown
    assert t.cell("softmax", "vgg_e") == ["soft-max"]
    # Table 2: 133, 133, 133, 134, 138, 144 million parameters
    params = [round(float(x[0])) for x in t.rows[-1].cells]
    assert t.rows[-1].label == "params (M)" and params == [133, 133, 133, 134, 138, 144]


def test_resnet_table_1() -> None:
    t = resnet_table()
    assert t.columns == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert t.stage_labels == ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4",
                              "avgpool", "fc"]
    assert t.cell("conv1", "resnet50") == ["conv7-64/2"]
    assert t.cell("maxpool", "resnet18") == ["maxpool3/2"]
    # conv3_x of ResNet-50: [1×1, 128; 3×3, 128; 1×1, 512] × 4 (strides, shortcuts not shown)
    assert t.cell("layer2", "resnet50") == ["[conv1-128, conv3-128, conv1-512] ×4"]
    assert t.cell("layer1", "resnet18") == ["[conv3-64, conv3-64] ×2"]
    assert t.cell("layer3", "resnet34") == ["[conv3-256, conv3-256] ×6"]
    assert t.cell("layer3", "resnet101") == ["[conv1-256, conv3-256, conv1-1024] ×23"]
    assert t.cell("layer2", "resnet152") == ["[conv1-128, conv3-128, conv1-512] ×8"]
    assert t.cell("avgpool", "resnet152") == ["gap"]
    assert t.cell("fc", "resnet18") == ["FC-1000"]
    assert t.cell("params (M)", "resnet50") == ["25.6"]
    assert t.cell("MACs (G)", "resnet50") == ["4.09"]


def test_block_stage_at_depth_2_lists_the_block_layers() -> None:
    t = config_table([archdsl.load(SPECS / "resnet.arch", arch="resnet18"),
                      archdsl.load(SPECS / "resnet.arch", arch="resnet34")], depth=2)
    assert "layer1.2" in t.stage_labels
    assert t.cell("layer1.2", "resnet18") == []  # ResNet-18 has two blocks per stage
    assert t.cell("layer2.0", "resnet34") == ["conv3-128/2", "conv3-128"]  # no shortcut
    assert t.cell("layer2.1", "resnet34") == ["conv3-128 ×2"]


def test_settings_tell_columns_apart_and_names_override() -> None:
    a = archdsl.load(SPECS / "mobilenet_v1.arch")
    b = archdsl.load(SPECS / "mobilenet_v1.arch", alpha=0.5)
    t = config_table([a, b])
    assert t.columns == ["mobilenet_v1 (alpha=1.0)", "mobilenet_v1 (alpha=0.5)"]
    assert t.cell("conv1", t.columns[1]) == ["conv3-16/2"]
    assert t.cell("layers", t.columns[0])[0] == "[dwconv3, conv1-64]"
    assert t.cell("layers", t.columns[0])[3] == "[dwconv3, conv1-512] ×6"
    t = config_table([a, b], names=["1.0 MobileNet-224", "0.5 MobileNet-224"])
    assert t.columns == ["1.0 MobileNet-224", "0.5 MobileNet-224"]
    with pytest.raises(ValueError):
        config_table([a, b], names=["one"])


def test_small_totals_keep_significant_digits() -> None:
    t = config_table([archdsl.load(SPECS / "lenet5.arch")])
    assert t.cell("params (M)", "lenet5") == ["0.0617"]
    assert t.cell("S2", "lenet5") == ["avgpool"]


def test_conventions_apply_to_the_totals() -> None:
    from archdsl.analysis import Conventions
    a = archdsl.load(SPECS / "resnet.arch", arch="resnet50")
    t = config_table([a], conventions=Conventions(norm=False, count="flops"))
    assert t.cell("FLOPs (G)", "resnet50") == ["8.18"]
    assert t.cell("params (M)", "resnet50") == [f"{(25_557_032 - 53_120) / 1e6:.1f}"]


def test_markdown_has_one_column_per_arch() -> None:
    md = paper_table_markdown(vgg_table())
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert rows[0] == "| | " + " | ".join(VGG_COLUMNS) + " |"
    assert all(len(line.strip("|").split("|")) == 1 + len(VGG_COLUMNS) for line in rows)
    assert "| features 3 | conv3-256 ×2<br>maxpool |" in md
    assert "conv3-256 ×2<br>conv1-256<br>maxpool" in md
    assert len(rows) == 2 + len(vgg_table().rows)


def _check_latex(tex: str, columns: int) -> list[list[str]]:
    """Balanced braces and environments, and every row with the same number of cells."""
    body = re.sub(r"%[^\n]*", "", tex.replace(r"\%", ""))
    depth = 0
    for ch in re.sub(r"\\[{}]", "", body):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert body.count(r"\begin{tabular}") == body.count(r"\end{tabular}") == 1
    assert body.count("$") % 2 == 0
    inner = body.split(r"\begin{tabular}", 1)[1].split(r"\end{tabular}")[0]
    spec = re.match(r"\{([^}]*)\}", inner).group(1)
    assert len(spec.replace("|", "")) == columns
    rows = [r.strip() for r in inner[len(spec) + 2:].split(r"\\")]
    rows = [r.replace(r"\hline", "").strip() for r in rows]
    rows = [r for r in rows if r]
    for r in rows:
        assert len(re.findall(r"(?<!\\)&", r)) == columns - 1, r
    return [re.split(r"(?<!\\)&", r) for r in rows]


def test_latex_is_a_well_formed_tabular() -> None:
    tex = paper_table_latex(vgg_table())
    rows = _check_latex(tex, 1 + len(VGG_COLUMNS))
    assert [c.strip() for c in rows[0]][1:] == [latex_escape(c) for c in VGG_COLUMNS]
    assert r"vgg\_a\_lrn" in tex
    assert r"conv3-256 $\times$4" in tex
    assert tex.count(r"\hline") == 2 + len(vgg_table().rows)
    # ResNet's bracketed block summaries: `[` never follows `\\` unbraced
    tex = paper_table_latex(resnet_table())
    _check_latex(tex, 6)
    assert r"{[}conv1-128, conv3-128, conv1-512{]} $\times$8" in tex
    assert not re.search(r"\\\\\s*\[", tex)


def test_latex_escape() -> None:
    assert latex_escape("a_b & c% $d# {e} ~^\\") == (
        r"a\_b \& c\% \$d\# \{e\} \textasciitilde{}\textasciicircum{}\textbackslash{}")
    assert latex_escape("3×224") == r"3$\times$224"


def test_rich_table_renders_every_cell_literally() -> None:
    console = Console(width=250, record=True)
    with console.capture() as cap:
        console.print(paper_table_rich(resnet_table()))
    text = cap.get()
    assert "[conv1-128, conv3-128, conv1-512] ×4" in text  # brackets are not rich markup
    assert "resnet152" in text and "60.2" in text


@pytest.mark.parametrize("width", [80, 120])
def test_rich_table_fits_the_width_in_parts_without_breaking_a_cell(width) -> None:
    from rich.cells import cell_len
    t = resnet_table()
    console = Console(width=width, record=True)
    with console.capture() as cap:
        console.print(paper_table_rich(t))
    text = cap.get()
    assert max(cell_len(line) for line in text.splitlines()) <= width
    assert all(name in text for name in t.columns)  # every architecture's name, whole
    assert all(line in text for row in t.rows for cell in row.cells for line in cell)
    parts = paper_table_rich(t).groups(width)
    assert sorted(j for g in parts for j in g) == list(range(len(t.columns)))
    if len(parts) > 1:
        assert f"Configurations (columns 1–{len(parts[0])} of {len(t.columns)})" in text

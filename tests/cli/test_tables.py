"""`archdsl stats` tables at fixed terminal widths: every name whole, every number whole
(every digit, or 138.4M style — never cut), the conventions under the table, and what was
left out named (issue #14, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from archdsl.api import load, load_all, load_spec
from archdsl.cli import app
from archdsl.columns import COLUMNS, choose
from archdsl.numfmt import compact, grouped
from archdsl.report import FittedTable, comparison_table

SPECS = Path(__file__).parents[2] / "specs"
PLAIN = {"LINES": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None,
         "NO_COLOR": "1"}


def stats_at(width: int, *args: str) -> str:
    result = CliRunner(env={**PLAIN, "COLUMNS": str(width)}).invoke(
        app, ["stats", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stdout


def table_rows(out: str) -> tuple[list[str], list[list[str]]]:
    """The header cells and the body rows' cells of the first table in `out`."""
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    rows = [line for line in lines if line.startswith("│")]
    split = [[c.strip() for c in row.split("│")[1:-1]] for row in rows]
    return [c.strip() for c in header.split("┃")[1:-1]], split


def whole(text: str, value: int) -> bool:
    """A cell shows `value` whole: every digit, or rounded to four digits with its scale."""
    return text in (grouped(value), compact(value))


def assert_fits(out: str, width: int) -> None:
    assert max(cell_len(line) for line in out.splitlines()) <= width


@pytest.mark.parametrize("width", [80, 120])
def test_the_main_job_fits_and_shows_every_name_and_whole_numbers(width):
    out = stats_at(width, SPECS / "vgg.arch")
    assert_fits(out, width)
    header, rows = table_rows(out)
    archs = load_all(SPECS / "vgg.arch")
    assert [r[0] for r in rows] == [a.name for a in archs]
    for arch, row in zip(archs, rows, strict=True):
        totals = arch.stats().totals
        cells = dict(zip(header, row, strict=True))
        assert whole(cells["Params"], totals["params"]), cells
        assert whole(cells["MACs"], totals["macs"]), cells
        assert cells["Input"] == "3×224×224" and cells["Output"] == "1000"
    flat = " ".join(out.split())
    assert "params = all trainable parameters" in flat and "MACs = multiply-accumulates" in flat
    assert "MB = 2^20 bytes as float32" in out
    if width == 120:  # room for every digit
        assert "138,357,544" in out and "15,470,264,320" in out and "shortened" not in out
    else:  # 138.4M style, and the caption says so
        assert "138.4M" in out and "M, G = 10⁶, 10⁹: numbers shortened to fit" in out


def test_the_whole_zoo_at_80_columns():
    specs = sorted(SPECS.glob("*.arch"))
    out = stats_at(80, *specs)
    assert_fits(out, 80)
    names = [r[0] for r in table_rows(out)[1]]
    expected = [name for s in specs for name in load_spec(s).own]
    assert names == expected and "efficientnet_b7" in names and "wide_resnet101_2" in names


@pytest.mark.parametrize("width", [80, 120])
def test_per_layer_table_keeps_layer_names_and_says_what_it_left_out(width):
    out = stats_at(width, SPECS / "resnet50.arch", "--per-layer")
    assert_fits(out, width)
    header, rows = table_rows(out)
    stats = load(SPECS / "resnet50.arch").stats()
    assert [r[0] for r in rows[:-1]] == [r.name for r in stats.rows] and rows[-1][0] == "total"
    for row, layer in zip(rows, stats.rows, strict=False):
        cells = dict(zip(header, row, strict=True))
        assert whole(cells["Params"], layer.params) and whole(cells["MACs"], layer.macs)
    shown = set(header)
    left_out = [c.header for c in COLUMNS.values() if c.layer and c.layer_default
                and c.header not in shown and (c.abbrev or "") not in shown]
    if left_out:
        assert "not shown at this width: " + ", ".join(left_out) in out
    assert "layer4.2.conv3" in out and "conv+bn+relu" in out


def test_lenet_size_table_fits_80_columns_with_every_column():
    # the CSC421 lecture's table, every number exact (DESIGN.md)
    out = stats_at(80, SPECS / "lenet5.arch", "--per-layer")
    assert_fits(out, 80)
    header, rows = table_rows(out)
    assert header == ["Layer", "Op", "Output", "Units", "Weights", "Params", "Conn.", "MACs"]
    c1 = dict(zip(header, rows[0], strict=True))
    assert (c1["Units"], c1["Conn."], c1["Weights"]) == ("4,704", "117,600", "150")
    assert "Conn. = Connections" in out and "shortened" not in out


def test_labels_show_the_given_parameters_only():
    out = stats_at(120, SPECS / "mobilenet_v1.arch", "--set", "alpha=1.0,0.5")
    assert [r[0] for r in table_rows(out)[1]] == ["mobilenet_v1 (alpha=1.0)",
                                                   "mobilenet_v1 (alpha=0.5)"]
    out = stats_at(120, SPECS / "resnet.arch")
    assert [r[0] for r in table_rows(out)[1]] == [
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def test_a_long_label_wraps_between_words_not_inside_the_name():
    archs = [load(SPECS / "efficientnet.arch", arch="efficientnet_b7", classes=10,
                  stochastic_depth_prob=0.25)]
    table = comparison_table([a.stats() for a in archs])
    console = Console(width=60, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    assert_fits(text, 60)
    assert "efficientnet_b7" in text  # on one line, whole
    assert "classes=10" in text and "stochastic_depth_prob=0.25" in text


def test_columns_and_wide():
    out = stats_at(200, SPECS / "lenet5.arch", "--columns", "macs,params")
    header, rows = table_rows(out)
    assert header == ["Architecture", "MACs", "Params"]
    assert rows == [["lenet5", "416,520", "61,706"]]
    header, _ = table_rows(stats_at(200, SPECS / "lenet5.arch", "--wide"))
    assert header[0] == "Architecture" and set(header[1:]) == {  # latency: when measured
        c.header for c in COLUMNS.values() if c.arch and not c.measured}
    flops = table_rows(stats_at(200, SPECS / "lenet5.arch", "-c", "macs", "--count",
                                "flops"))
    assert flops == (["Architecture", "FLOPs"], [["lenet5", "833,040"]])


def test_unknown_column_is_a_usage_error():
    result = CliRunner(env=PLAIN).invoke(app, ["stats", str(SPECS / "lenet5.arch"),
                                               "--columns", "parms"])
    assert result.exit_code == 1 and "no column `parms`" in result.stderr
    assert "did you mean `params`" in result.stderr
    result = CliRunner(env=PLAIN).invoke(app, ["stats", str(SPECS / "lenet5.arch"),
                                               "--columns", "op"])
    assert result.exit_code == 1 and "only --per-layer has it" in result.stderr


def test_choose_defaults():
    assert [c.key for c in choose(None, False, per_layer=False)] == [
        "input", "output", "params", "macs", "param_mb", "act_mb"]
    assert "op" in [c.key for c in choose(None, False, per_layer=True)]


def test_fitted_table_drops_columns_only_when_short_numbers_do_not_fit():
    cols = [COLUMNS[k] for k in ("params", "connections", "units")]
    t = FittedTable("t", "Layer", ["a_long_layer_name"], cols, ["Params", "Connections", "Units"],
                    [[123_456_789, 9_876_543_210, 55_555_555]])
    wide = t.layout(200)
    assert list(wide) == [0, 1, 2] and set(wide.values()) == {0}
    snug = t.layout(55)
    assert list(snug) == [0, 1, 2] and 2 in snug.values()  # some numbers short, all shown
    narrow = t.layout(30)
    assert 0 in narrow and 1 not in narrow  # connections goes first (Column.drop)


@pytest.mark.parametrize("n, text", [
    (0, "0"), (999, "999"), (1000, "1.000K"), (9_999, "9.999K"), (99_950, "99.95K"),
    (999_960, "1.000M"), (11_689_512, "11.69M"), (138_357_544, "138.4M"),
    (4_089_184_256, "4.089G"), (-1234, "-1.234K")])
def test_compact(n, text):
    assert compact(n) == text

"""Budgets (`assert` lines) and switchable counting conventions."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import archdsl
from archdsl.analysis import Conventions
from archdsl.cli import app
from archdsl.errors import ArchErrors, ValueError_

NET = """arch tiny(classes = 10)
input 3x32x32
defaults norm=bn act=relu
{asserts}
conv3-16/2; conv3-32/2; gap; FC-{{classes}} act=none
"""
# conv 3·3·3·16 + bn 32; conv 3·3·16·32 + bn 64; fc 32·10 + 10
PARAMS = 432 + 32 + 4608 + 64 + 330
MACS = 432 * 16 * 16 + 4608 * 8 * 8 + 320


def _net(*asserts: str) -> str:
    return NET.format(asserts="\n".join(asserts))


def test_the_counts_used_below():
    totals = archdsl.load(_net()).stats().totals
    assert (totals["params"], totals["macs"]) == (PARAMS, MACS)


def test_budgets_that_hold_pass():
    arch = archdsl.load(_net("assert params <= 6K", "assert macs < 0.5M",
                             "assert output == [classes]", "assert flops == 2 * macs",
                             "assert input[1] == 32 and units > 0"))
    assert arch.stats().totals["params"] == PARAMS


def test_a_broken_budget_is_an_error_with_location_and_actual_value():
    with pytest.raises(ArchErrors) as info:
        archdsl.load(_net("assert params <= 5K", "assert macs <= 1M"))
    (err,) = info.value.errors
    assert isinstance(err, ValueError_)
    assert (err.span.line, err.span.col) == (4, 8)
    assert err.message == f"budget not met: params = {PARAMS:,} (5.47K)"


def test_budgets_see_parameters_and_settings():
    text = _net("assert output == [classes]")
    assert archdsl.load(text, classes=7).graph.output_shape == (7,)
    with pytest.raises(ArchErrors, match="budget not met"):
        archdsl.load(_net("assert classes <= 5"))


def test_scaled_numbers():
    arch = archdsl.load("arch s\ninput 3x8x8\nlet n = 2K\nassert n == 2000 and 1.5M == 1500000"
                        "\nassert 3G == 3 * 10**9 and 1T == 1000G\nconv1-{n / 1K}\n")
    assert arch.graph.output_shape == (2, 8, 8)


def test_several_broken_budgets_are_all_reported():
    with pytest.raises(ArchErrors) as info:
        archdsl.load(_net("assert params <= 1K", "assert macs <= 1K", "assert units < 0"))
    assert [e.span.line for e in info.value.errors] == [4, 5, 6]


def test_budget_in_a_block_is_a_syntax_error():
    with pytest.raises(ArchErrors) as info:
        archdsl.load("block b { assert params < 1 }\narch a\ninput 3x8x8\nb\n")
    assert info.value.errors[0].span.line == 1


def test_cli_check_fails_on_a_budget(tmp_path):
    spec = tmp_path / "t.arch"
    spec.write_text(_net("assert macs <= 100K"))
    result = CliRunner().invoke(app, ["check", str(spec)])
    assert result.exit_code == 1
    assert f"t.arch:4:8: error: budget not met: macs = {MACS:,}" in result.output


def test_conventions_leave_out_biases_and_norms():
    arch = archdsl.load(_net())
    full = arch.stats().totals["params"]
    no_norm = arch.stats(conventions=Conventions(norm=False)).totals["params"]
    no_bias = arch.stats(conventions=Conventions(bias=False)).totals["params"]
    neither = arch.stats(conventions=Conventions(bias=False, norm=False)).totals["params"]
    assert full - no_norm == 32 + 64          # bn scale and shift
    assert full - no_bias == 10               # only the FC has a bias (convs are followed by bn)
    assert neither == arch.stats().totals["weights"]


def test_cli_count_flops_and_header(tmp_path):
    spec = tmp_path / "t.arch"
    spec.write_text(_net())
    runner = CliRunner()
    out = runner.invoke(app, ["stats", str(spec), "--per-layer", "--count", "flops",
                              "--no-bias"]).output
    assert "FLOPs" in out and f"{2 * MACS:,}" in out
    assert "WITHOUT biases" in out
    data = json.loads(runner.invoke(app, ["stats", str(spec), "-f", "json", "--no-norm"]).output)
    assert data["conventions"] == {"bias": True, "norm": False, "count": "macs"}
    assert data["totals"]["params"] == PARAMS - 96

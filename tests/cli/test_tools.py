"""The CLI's drawing, paper-table and diff commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import archdsl
from archdsl.cli import app

SPECS = Path(__file__).resolve().parents[2] / "specs"
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_graph_writes_dot_without_graphviz(tmp_path):
    out = tmp_path / "r.dot"
    result = run("graph", SPECS / "resnet18.arch", "-o", out, "--depth", "1")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "digraph" in text and "layer4" in text


def test_graph_svg(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed")
    out = tmp_path / "g.svg"
    result = run("graph", SPECS / "googlenet.arch", "-o", out)
    assert result.exit_code == 0, result.output
    assert "<svg" in out.read_text() and "inception_3a" in out.read_text()


def test_graph_needs_one_architecture(tmp_path):
    result = run("graph", SPECS / "vgg.arch", "-o", tmp_path / "v.svg")
    assert result.exit_code == 1
    assert "takes one" in result.output and "--arch" in result.output


def test_one_architecture_commands_take_the_one_named_like_the_file(tmp_path):
    # vgg_e.arch defines vgg_e and vgg19_bn = vgg_e(norm=bn): `compile specs/vgg_e.arch` means
    # vgg_e (the file is named for it), as does archdsl.load; --arch still picks the other
    out = tmp_path / "v.dot"
    result = run("graph", SPECS / "vgg_e.arch", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("digraph vgg_e {")
    assert archdsl.load(SPECS / "vgg_e.arch").name == "vgg_e"
    assert archdsl.load(SPECS / "vgg_e.arch", arch="vgg19_bn").name == "vgg19_bn"
    result = run("graph", SPECS / "vgg_e.arch", "--arch", "vgg19_bn", "-o", out)
    assert result.exit_code == 0 and out.read_text().startswith("digraph vgg19_bn {")
    # a file not named for one of its architectures still asks which
    (tmp_path / "two.arch").write_text("arch a\ninput 1x8x8\nconv3-4\narch b = a\n")
    result = run("graph", tmp_path / "two.arch", "-o", out)
    assert result.exit_code == 1 and "takes one" in result.output


def test_table_markdown_has_a_column_per_architecture():
    result = run("table", SPECS / "resnet.arch", "-f", "markdown")
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert "[conv1-128, conv3-128, conv1-512] ×4" in result.output


def test_table_latex():
    result = run("table", SPECS / "vgg_e.arch", "--arch", "vgg_e", "-f", "latex")
    assert result.exit_code == 0, result.output
    assert "\\begin{tabular}" in result.output and "conv3-256 $\\times$4" in result.output


def test_diff_two_settings_json():
    result = run("diff", SPECS / "mobilenet_v1.arch", "--set-b", "alpha=0.5", "-f", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["total"]["params"]["delta"] == 1_331_592 - 4_231_976


def test_diff_two_specs_markdown():
    result = run("diff", SPECS / "resnet18.arch", SPECS / "resnet34.arch", "-f", "markdown")
    assert result.exit_code == 0, result.output
    assert "32 added, 0 removed, 0 changed" in result.output


def test_an_error_in_a_shared_include_is_reported_once(tmp_path):
    (tmp_path / "common.arch").write_text("block b { cnv3-4 }\n")
    for n in (1, 2, 3):
        (tmp_path / f"s{n}.arch").write_text(f'include "common.arch"\narch s{n}\ninput 3x8x8\nb\n')
    result = run("check", *sorted(tmp_path.glob("s*.arch")))
    assert result.exit_code == 1
    assert result.output.count("unknown op or block `cnv3`") == 1

"""The `archdsl` command line: check, stats (table, per-layer, depth, json, csv, markdown,
--set and sweeps), format and ops, driven through typer's CliRunner."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archdsl.api import load, load_all, load_spec
from archdsl.cli import app
from archdsl.cli_shell import parse_sets, parse_value

SPECS_DIR = Path(__file__).parents[2] / "specs"
ZOO = sorted(SPECS_DIR.glob("*.arch"))

NET = """block basic(c, stride=1) {
  residual {
    conv1: conv3-{c}/{stride} norm=bn act=relu
    conv2: conv3-{c} norm=bn
  } shortcut(downsample) { conv1-{c}/{stride} norm=bn }
  relu: relu
}
arch net(alpha=1.0, classes=10)
input 3x32x32
conv1: conv3-{int(16 * alpha)} norm=bn act=relu
layer1: basic(int(16 * alpha)) x2
layer2: basic(int(32 * alpha), 2)
gap
fc: FC-{classes}
"""

SMALL = """arch small
input 1x8x8
conv3-4 act=relu
maxpool
FC-2
arch small2 = small
"""

BROKEN = """arch bad
input 3x8x8
cnv3-4
conv3-4 strde=2
"""

TOTAL_KEYS = {"params", "weights", "units", "connections", "macs", "flops", "param_bytes",
              "activation_bytes"}
LAYER_KEYS = {"name", "op", "shape", "params", "weights", "units", "connections", "macs"}
TOP_KEYS = {"name", "settings", "input", "output", "dtype", "totals", "layers"}


# A plain, non-interactive terminal whatever the CI environment says (colour codes or a
# narrow COLUMNS would change the text the assertions read).
PLAIN_ENV = {"COLUMNS": None, "LINES": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None,
             "TTY_INTERACTIVE": None, "NO_COLOR": "1"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=PLAIN_ENV)


@pytest.fixture
def specs(tmp_path) -> dict[str, Path]:
    out = {}
    for name, text in (("net", NET), ("small", SMALL), ("broken", BROKEN)):
        out[name] = tmp_path / f"{name}.arch"
        out[name].write_text(text, encoding="utf-8")
    return out


def invoke(runner: CliRunner, *args, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    if code in (0, 1):
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            result.exception
    return result


# ---------------------------------------------------------------- check

def test_check_ok(runner, specs):
    result = invoke(runner, "check", specs["small"])
    net = load(SMALL, arch="small").graph
    assert result.stdout == f"ok: 2 architectures in 1 file, {2 * (len(net.g) - 1)} nodes\n"
    assert result.stderr == ""


def test_check_ok_several_files_and_arch(runner, specs):
    result = invoke(runner, "check", specs["small"], specs["net"])
    assert result.stdout.startswith("ok: 3 architectures in 2 files, ")
    result = invoke(runner, "check", specs["small"], "--arch", "small2")
    assert result.stdout.startswith("ok: 1 architecture in 1 file, 4 nodes")


def test_check_errors(runner, specs):
    result = invoke(runner, "check", specs["broken"], code=1)
    assert result.stdout == ""
    err = result.stderr
    assert "broken.arch:3:1: error: unknown op or block `cnv3`" in err
    assert "broken.arch:4:9: error: `conv` has no attribute `strde`" in err
    assert err.splitlines()[0].endswith("broken.arch:3:1: error: unknown op or block `cnv3`")
    assert "    cnv3-4\n    ^^^^\n" in err
    assert "hint: did you mean `conv3`" in err
    assert err.rstrip().endswith("2 errors")
    assert "Traceback" not in err


def test_check_reports_errors_from_every_file(runner, specs, tmp_path):
    other = tmp_path / "other.arch"
    other.write_text("arch o\ninput 3x8x8\nresidual { conv3-4 }\n")
    result = invoke(runner, "check", specs["broken"], other, specs["small"], code=1)
    assert "other.arch:3:1: error: cannot add 4×8×8 and 3×8×8" in result.stderr
    assert result.stderr.rstrip().endswith("3 errors")


def test_check_prints_warnings_and_succeeds(runner, tmp_path):
    spec = tmp_path / "w.arch"
    spec.write_text("arch w\ninput 3x8x8\ndefaults eps=0.001\nconv3-4\n")
    result = invoke(runner, "check", spec)
    assert result.stdout.startswith("ok: 1 architecture")
    assert "w.arch:3:10: warning: `eps=0.001` applies to no layer" in result.stderr
    assert "    defaults eps=0.001\n             ^^^^^^^^^\n" in result.stderr


def test_check_syntax_error(runner, tmp_path):
    spec = tmp_path / "syn.arch"
    spec.write_text("arch s\ninput 3x8x8\nconv3-4 )\n")
    result = invoke(runner, "check", spec, code=1)
    assert re.match(r"^\S*syn\.arch:3:9: error: unexpected `\)`", result.stderr)
    assert result.stderr.rstrip().endswith("1 error")


def test_check_missing_file(runner, tmp_path):
    result = invoke(runner, "check", tmp_path / "nope.arch", code=1)
    assert "cannot read" in result.stderr and "nope.arch" in result.stderr


def test_check_unknown_arch(runner, specs):
    result = invoke(runner, "check", specs["small"], "--arch", "big", code=1)
    assert "no spec defines an architecture `big`" in result.stderr


@pytest.mark.parametrize("spec", ZOO, ids=[p.name for p in ZOO])
def test_check_zoo(runner, spec):
    result = invoke(runner, "check", spec)
    assert result.stdout.startswith("ok: ")


# ---------------------------------------------------------------- stats: table

def test_stats_table_one_spec(runner, specs):
    out = invoke(runner, "stats", specs["net"]).stdout
    totals = load(NET).stats().totals
    assert "Architectures" in out
    rows = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert rows == ["net"]  # the defaults are not in the label; --set values are
    assert f"{totals['params']:,}" in out and f"{totals['macs']:,}" in out
    assert f"{totals['connections']:,}" not in out  # --wide shows it
    assert "more columns: units, weights, connections" in out
    assert "3×32×32" in out
    assert "MB = 2^20 bytes as float32" in out
    wide = invoke(runner, "stats", specs["net"], "--wide").stdout
    assert f"{totals['connections']:,}" in wide and "more columns" not in wide


def test_stats_table_compares_several_specs(runner, specs):
    out = invoke(runner, "stats", specs["net"], specs["small"]).stdout
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 3
    assert [r.split("│")[1].strip() for r in rows] == ["net", "small", "small2"]
    small = load(SMALL, arch="small").stats().totals
    assert f"{small['params']:,}" in rows[1]


def test_stats_per_layer(runner, specs):
    out = invoke(runner, "stats", specs["net"], "--per-layer").stdout
    stats = load(NET).stats()
    for row in stats.rows:
        assert row.name in out
    assert "layer2.downsample.0" in out and "conv+bn+relu" in out
    assert f"{stats.totals['params']:,}" in out and "total" in out


def test_stats_per_layer_several_specs_gives_a_table_each(runner, specs):
    out = invoke(runner, "stats", specs["net"], specs["small"], "--per-layer").stdout
    titles = [line.strip() for line in out.splitlines()
              if line.strip() in ("net", "small", "small2")]
    assert titles == ["net", "small", "small2"]
    assert out.count("│ total ") == 3


def test_stats_depth_rolls_up(runner, specs):
    out = invoke(runner, "stats", specs["net"], "--depth", "1").stdout
    body = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert body == ["conv1", "layer1", "layer2", "0", "fc", "total"]
    layer1 = next(line for line in out.splitlines() if line.startswith("│ layer1 "))
    assert "block" in layer1


def test_stats_dtype(runner, specs):
    out = invoke(runner, "stats", specs["small"], "--dtype", "float16", "--format",
                 "json", "--arch", "small").stdout
    data = json.loads(out)
    assert data["dtype"] == "float16"
    assert data["totals"]["param_bytes"] == 2 * data["totals"]["params"]
    result = invoke(runner, "stats", specs["small"], "--dtype", "float8", code=1)
    assert "unknown dtype" in result.stderr


# ---------------------------------------------------------------- stats: json, csv, markdown

def test_stats_json_one_arch(runner, specs):
    data = json.loads(invoke(runner, "stats", specs["net"], "--format", "json").stdout)
    assert isinstance(data, dict)
    assert TOP_KEYS <= set(data)
    assert data["name"] == "net"
    assert data["settings"] == {"alpha": 1.0, "classes": 10}
    assert data["input"] == [3, 32, 32] and data["output"] == [10]
    assert data["dtype"] == "float32"
    assert TOTAL_KEYS <= set(data["totals"])
    stats = load(NET).stats()
    assert {k: data["totals"][k] for k in stats.totals} == stats.totals
    assert all(LAYER_KEYS <= set(layer) for layer in data["layers"])
    assert [layer["name"] for layer in data["layers"]] == [r.name for r in stats.rows]
    first = data["layers"][0]
    assert first["name"] == "conv1" and first["op"] == "conv" and first["shape"] == [16, 32, 32]
    for key in ("params", "weights", "units", "connections", "macs"):
        assert sum(layer[key] for layer in data["layers"]) == data["totals"][key]
    assert data["totals"]["flops"] == 2 * data["totals"]["macs"]


def test_stats_json_several_archs_is_a_list(runner, specs):
    data = json.loads(invoke(runner, "stats", specs["small"], specs["net"], "--format",
                             "json").stdout)
    assert isinstance(data, list)
    assert [d["name"] for d in data] == ["small", "small2", "net"]
    assert all(TOP_KEYS <= set(d) for d in data)


def test_stats_json_with_depth(runner, specs):
    data = json.loads(invoke(runner, "stats", specs["net"], "--format", "json", "--depth",
                             "1").stdout)
    assert [layer["name"] for layer in data["layers"]] == ["conv1", "layer1", "layer2", "0",
                                                            "fc"]
    assert data["layers"][1]["op"] == "block"


def test_stats_csv(runner, specs):
    out = invoke(runner, "stats", specs["small"], specs["net"], "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["arch", "settings", "input", "output", "params", "weights",
                             "units", "connections", "macs", "flops", "param_bytes",
                             "activation_bytes"]
    assert [r["arch"] for r in rows] == ["small", "small2", "net"]
    net = load(NET).stats().totals
    assert int(rows[2]["params"]) == net["params"] and int(rows[2]["macs"]) == net["macs"]
    assert rows[2]["input"] == "3x32x32" and rows[2]["settings"] == "alpha=1.0, classes=10"


def test_stats_csv_per_layer(runner, specs):
    out = invoke(runner, "stats", specs["net"], "--format", "csv", "--per-layer").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    stats = load(NET).stats()
    assert list(rows[0]) == ["arch", "layer", "op", "shape", "params", "weights", "units",
                             "connections", "macs"]
    assert [r["layer"] for r in rows] == [r.name for r in stats.rows]
    assert sum(int(r["params"]) for r in rows) == stats.totals["params"]
    assert rows[0]["shape"] == "16x32x32"


def test_stats_markdown(runner, specs):
    out = invoke(runner, "stats", specs["small"], "--format", "markdown").stdout
    lines = out.splitlines()
    assert lines[0].startswith("| Architecture | Input | Output | Params |")
    assert lines[1].startswith("|---|---:|")
    assert lines[2].startswith("| small | 1×8×8 | 2 | 170 |")
    assert lines[3].startswith("| small2 |")
    per_layer = invoke(runner, "stats", specs["small"], "--format", "markdown", "--arch",
                       "small", "--per-layer").stdout
    assert "### small" in per_layer and "| **total** |" in per_layer


# ---------------------------------------------------------------- --set

def test_set_overrides_a_parameter(runner, specs):
    data = json.loads(invoke(runner, "stats", specs["net"], "--format", "json", "--set",
                             "classes=100", "-s", "alpha=0.5").stdout)
    assert data["settings"] == {"alpha": 0.5, "classes": 100}
    assert data["output"] == [100]
    expected = load(NET, alpha=0.5, classes=100).stats().totals
    assert {k: data["totals"][k] for k in expected} == expected


def test_set_sweep_gives_one_row_per_value(runner, specs):
    out = invoke(runner, "stats", specs["net"], "--set", "alpha=1.0,0.5").stdout
    rows = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert rows == ["net (alpha=1.0)", "net (alpha=0.5)"]
    data = json.loads(invoke(runner, "stats", specs["net"], "--format", "json", "--set",
                             "alpha=1.0,0.5", "--set", "classes=10,20").stdout)
    assert [(d["settings"]["alpha"], d["settings"]["classes"]) for d in data] == [
        (1.0, 10), (1.0, 20), (0.5, 10), (0.5, 20)]
    assert data[2]["totals"]["params"] < data[0]["totals"]["params"]


def test_set_unknown_parameter(runner, specs):
    result = invoke(runner, "stats", specs["net"], "--set", "alpah=0.5", code=1)
    assert "net.arch:8:1: error: architecture `net` has no parameter `alpah`" in result.stderr
    assert "did you mean `alpha`?" in result.stderr
    result = invoke(runner, "check", specs["net"], "--set", "alpah=0.5", code=1)
    assert "no parameter `alpah`" in result.stderr


def test_set_malformed(runner, specs):
    result = invoke(runner, "check", specs["net"], "--set", "alpha", code=1)
    assert "--set expects NAME=VALUE" in result.stderr


def test_parse_value_and_sets():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5
    assert parse_value("TRUE") is True and parse_value("false") is False
    assert parse_value("bn") == "bn"
    assert parse_sets(["a=1,2", "b=x"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert parse_sets(None) == [{}]


# ---------------------------------------------------------------- format, ops

def test_format_output_reparses(runner, specs):
    out = invoke(runner, "format", specs["net"]).stdout
    assert out.startswith("# canonical form of `net`")
    assert load(out).graph.signature() == load(NET).graph.signature()


def test_format_several_archs_and_set(runner, specs):
    out = invoke(runner, "format", specs["small"]).stdout
    again = load_all(out)
    assert [a.name for a in again] == ["small", "small2"]
    assert again[0].graph.signature() == load(SMALL, arch="small").graph.signature()
    out = invoke(runner, "format", specs["net"], "--set", "alpha=0.5").stdout
    assert load(out).graph.signature() == load(NET, alpha=0.5).graph.signature()


@pytest.mark.parametrize("spec", ZOO, ids=[p.name for p in ZOO])
def test_format_zoo_reparses(runner, spec):
    if not load_spec(spec).own:
        pytest.skip(f"{spec.name} defines blocks only")
    out = invoke(runner, "format", spec).stdout
    originals = load_all(spec)
    assert [a.graph.signature() for a in load_all(out)] == \
        [a.graph.signature() for a in originals]


def test_format_errors(runner, specs):
    result = invoke(runner, "format", specs["broken"], code=1)
    assert result.stdout == "" and ":3:1: error:" in result.stderr


def test_ops_lists_the_ops(runner):
    out = invoke(runner, "ops").stdout
    assert "archdsl ops" in out
    lines = out.splitlines()
    conv = next(line for line in lines if line.startswith("│ conv "))
    assert "convK-N/S" in conv
    for name in ("dwconv", "fc", "maxpool", "adaptive_avgpool", "bn", "relu", "dropout"):
        assert any(line.startswith(f"│ {name} ") for line in lines), name
    assert not any(line.startswith("│ input ") or line.startswith("│ add ") for line in lines)
    # docs are text, not rich markup: hardtanh's "[min_val, max_val]" is printed
    assert "clipped to [min_val, max_val]" in next(x for x in lines if x.startswith("│ hardtanh"))


def test_no_arguments_shows_help(runner):
    result = runner.invoke(app, [])
    assert "check" in result.output and "stats" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("spec", ["lenet5.arch", "googlenet.arch", "vit.arch"])
def test_stats_json_is_the_dict_form(spec):
    from archdsl.writers import to_json
    archs = load_all(SPECS_DIR / spec)
    for depth in (None, 1):
        text = to_json([a.stats() for a in archs], depth)
        data = json.loads(text)
        want = [a.stats().to_dict(depth) for a in archs]
        assert (data if len(archs) > 1 else [data]) == want

"""A user-defined op's rules are the plugin's Python code, run on whatever attributes a spec
gives them (issue #13 on archdsl.plugins): what they raise or return wrongly is an error of the
spec, located where the op is used, never a traceback or an "internal error"; a plugin that
fails or exits while it loads is an error naming it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import archdsl
from archdsl import AttrSpec, OpDef, register_op, unregister_op
from archdsl.cli import app
from archdsl.errors import ArchError, ArchErrors


def _shape(attrs, ins):
    k = attrs["k"]
    if k == 1:
        raise ZeroDivisionError("boom")
    if k == 2:
        return ("x", 1, 1)
    if k == 3:
        return None
    return ins[0]


def _biases(attrs, ins, out):
    return {4: -5, 5: "many", 6: True}.get(attrs["k"], 0) if attrs["k"] != 7 else 1 / 0


@pytest.fixture
def shaky():
    register_op(OpDef("shaky", "act", "a user op with broken rules",
                      attrs={"k": AttrSpec("int", 0, 0)}, positional=("k",), shape=_shape,
                      biases=_biases))
    yield
    unregister_op("shaky")


@pytest.mark.parametrize("k, said", [
    (1, "shape rule failed: ZeroDivisionError: boom"), (2, "shape rule failed: TypeError"),
    (3, "shape rule failed: TypeError")])
def test_a_failing_shape_rule_is_a_located_error(shaky, k, said):
    with pytest.raises(ArchErrors) as info:
        archdsl.load(f"arch a\ninput 3x8x8\nshaky({k})\n")
    err = info.value.errors[0]
    assert said in err.message and "`shaky`" in err.message
    assert err.span is not None and err.span.line == 3


@pytest.mark.parametrize("k, said", [
    (4, "returned -5, not a count"), (5, "TypeError"), (6, "returned True, not a count"),
    (7, "ZeroDivisionError")])
def test_a_failing_count_is_an_error_not_a_traceback(shaky, k, said):
    with pytest.raises(ArchError) as info:
        archdsl.load(f"arch a\ninput 3x8x8\nshaky({k})\n").stats()
    assert said in info.value.message and "biases" in info.value.message
    r = CliRunner().invoke(app, ["stats", "-"], input=f"arch a\ninput 3x8x8\nshaky({k})\n")
    assert r.exit_code == 1 and "internal error" not in r.output, r.output


def test_counts_that_work_still_count(shaky):
    stats = archdsl.load("arch a\ninput 3x8x8\nshaky(0)\n").stats()
    assert stats.totals["params"] == 0


@pytest.mark.parametrize("body, said", [
    ("import sys\nsys.exit(5)\n", "SystemExit: 5"),
    ("raise ValueError('bad plugin')\n", "ValueError: bad plugin")])
def test_a_plugin_that_fails_or_exits_while_loading(tmp_path, body, said):
    plugin = tmp_path / "plug.py"
    plugin.write_text(body)
    spec = tmp_path / "a.arch"
    spec.write_text("arch a\ninput 3x8x8\nrelu\n")
    r = CliRunner().invoke(app, ["--plugin", str(plugin), "check", str(spec)])
    assert r.exit_code == 1 and said in r.output and "Traceback" not in r.output, r.output


def test_an_ops_description_reaches_the_terminal_as_plain_text():
    register_op(OpDef("marked", "act", "[link=https://evil.example]click[/link] [/x] \x1b[31m"))
    try:
        r = CliRunner().invoke(app, ["ops"], env={"COLUMNS": "400"})
    finally:
        unregister_op("marked")
    assert r.exit_code == 0, r.output
    assert "[link=https://evil.example]click[/link] [/x]" in r.output
    assert "\x1b" not in r.output

"""Errors that do not cascade, and say where they are (issue #14, items 2-4): a misspelt layer
leaves an unknown shape behind it, not a wrong one; a clash is reported once; a bad --set
value is one error; a bracket left open is named; errors inside blocks name the call."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from archdsl.api import load
from archdsl.cli import app
from archdsl.errors import ArchErrors

H = "arch net\ninput 3x32x32\n"


def rendered(source: str, **kw) -> tuple[list, str]:
    with pytest.raises(ArchErrors) as info:
        load(source, **kw)
    return info.value.errors, info.value.render()


@pytest.mark.parametrize("typo, message", [
    ("cnv3-32", "unknown op or block `cnv3`"),
    ("conv3-32 strde=2", "`conv` has no attribute `strde`"),
    ("conv3-32 act=reluu", "`act=reluu` is not one of"),
    ("conv3-{widht}", "unknown name `widht`"),
    ("dwconv3-32 x{2.5}", "a repeat count must be an integer"),
])
def test_a_typo_leaves_an_unknown_shape_not_a_wrong_one(typo, message):
    # the layer that changes 3 channels into 32 fails; what follows it would see 3 channels
    # and report "cannot add 32×32×32 and 3×32×32" — it must not
    text = H + f"{typo}\nresidual {{ conv3-32; conv3-32 }}\nadd {{ conv3-32 | conv1-32 }}\nFC-10\n"
    errors, text = rendered(text)
    assert len(errors) == 1, text
    assert message in errors[0].message
    assert "cannot add" not in text


def test_errors_after_the_unknown_shape_that_do_not_need_it_are_still_reported():
    errors, _ = rendered(H + "cnv3-32\nconv3-{nope}\nrelu x{-1}\n")
    assert [e.span.line for e in errors] == [3, 4, 5]


def test_a_shape_error_in_a_branch_does_not_cascade():
    errors, text = rendered(H + "concat { conv3-8 | conv3-8/2 }\nconv3-16\nresidual { conv3-16 }\n")
    assert len(errors) == 1 and "cannot concatenate" in text


def test_a_clashing_name_is_reported_once():
    errors, text = rendered(H + "c: conv3-32 norm=bn act=relu\nc: conv3-32 norm=bn act=relu\n")
    assert [e.message for e in errors] == ["name `c` is used twice"]
    assert "c_bn" not in text and "c_relu" not in text
    assert (errors[0].span.line, errors[0].span.col) == (4, 1)


def test_a_bad_set_value_is_one_error():
    spec = H.replace("arch net", "arch net(w = 16, act = relu)") + \
        "conv3-{w}\nconv3-{2 * w}\nconv3-{w} act={act}\nFC-{w}\n"
    errors, text = rendered(spec, w="abc")
    assert len(errors) == 1, text
    assert errors[0].span is None  # the mistake is on the command line, not in the file
    assert text.startswith("error: `w` takes a number (its default is 16), got abc")
    assert "hint: e.g. --set w=16" in text and "note: `w` is a parameter of `net`" in text
    errors, _ = rendered(spec, act=3)  # a word parameter takes anything; its use decides
    assert "`act=3` is not one of" in errors[0].message


def test_a_bad_set_value_from_the_command_line(tmp_path):
    spec = tmp_path / "w.arch"
    spec.write_text(H.replace("arch net", "arch net(w = 16)") + "conv3-{w}\n" * 9)
    result = CliRunner().invoke(app, ["check", str(spec), "--set", "w=abc"])
    assert result.exit_code == 1
    assert result.stderr.count("error:") == 1 and result.stderr.rstrip().endswith("1 error")


# ---------------------------------------------------------------- brackets

def test_an_unclosed_brace_is_named():
    text = ("block b(c) {\n"
            "  residual { conv3-{c}; conv3-{c}\n"  # the `{` of residual is never closed
            "  relu\n"
            "}\n"
            "block b2(c) {\n"
            "  conv3-{c}\n"
            "}\n" + H + "b(32)\n")
    errors, out = rendered(text)
    assert len(errors) == 1
    err = errors[0]
    assert err.message == "this `{` is never closed" and (err.span.line, err.span.col) == (2, 12)
    assert "  residual { conv3-{c}; conv3-{c}\n               ^\n" in out
    assert "note: the parser stopped here: unexpected `b2`" in out
    assert "hint: add the `}` that ends it" in out


def test_an_unclosed_brace_at_the_end_of_the_file():
    errors, out = rendered(H + "residual { conv3-3; conv3-3\nrelu\n")
    assert [(e.message, e.span.line, e.span.col) for e in errors] == [
        ("this `{` is never closed", 3, 10)]
    assert "expected `(`" not in out  # no list of every token that could follow


def test_an_unclosed_parenthesis_and_an_earlier_error():
    errors, _ = rendered(H + "conv3-64 )\nFC-{10\n")
    assert [e.span.line for e in errors] == [3, 4]
    assert errors[1].message == "this `{` is never closed"


def test_brackets_in_comments_and_strings_do_not_count():
    from archdsl.brackets import unclosed
    assert unclosed('conv3-64  # a { in a comment\nx = "{"\n') == []
    assert unclosed("a {\n  b {\n  c\n}\n")[0][:2] == (2, 5)


# ---------------------------------------------------------------- inside blocks

BLOCK = """block b(c) {
  conv3-{c}
  add { conv3-{c} | conv3-16 }
}
""" + H + "b(16)\nsecond: b(32)\nb(16)\n"


def test_an_error_inside_a_block_names_the_call():
    errors, out = rendered(BLOCK)
    assert len(errors) == 1
    assert errors[0].message == "cannot add 32×32×32 and 16×32×32"
    assert "note: in this call to `b` (`second`)\n    second: b(32)\n" in out
    assert "shortcut" not in out  # `add` has none; only `residual` does
    assert "hint: make every branch end with the same shape" in out


def test_nested_calls_are_listed_innermost_first():
    text = ("block inner(c) { conv3-{c} strde=2 }\nblock outer(c) { inner(c) }\n" + H
            + "stage: outer(8)\n")
    errors, out = rendered(text)
    notes = [n for n, _ in errors[0].notes]
    assert notes == ["in this call to `inner` (`stage.0`)", "in this call to `outer` (`stage`)"]


def test_argument_count_is_said():
    errors, out = rendered("block b(c) { conv3-{c} }\n" + H + "b(16, 3, 4)\n")
    assert errors[0].message == "`b` takes 1 argument, got 3"
    errors, _ = rendered(H + "dropout(0.1, 0.2)\n")
    assert errors[0].message == "`dropout` takes 1 positional argument, got 2"


def test_residual_shape_error_suggests_a_shortcut():
    errors, out = rendered(H + "residual { conv3-8 }\n")
    assert "shortcut { conv1-N/S }" in errors[0].hint


def test_unknown_arch_suggests_one(tmp_path):
    spec = tmp_path / "s.arch"
    spec.write_text("arch small\ninput 3x8x8\nconv3-4\narch small2 = small\n")
    result = CliRunner().invoke(app, ["stats", str(spec), "--arch", "smal"])
    assert result.exit_code == 1
    assert "no spec defines an architecture `smal`" in result.stderr
    assert "did you mean `small`" in result.stderr


# ---------------------------------------------------------------- warnings

def test_a_depthwise_channel_multiplier_is_a_warning_not_a_surprise():
    arch = load("block b(c) { dwconv3-{2 * c} }\n" + H.replace("3x32x32", "32x8x8")
                + "dwconv3-64\nb(64)\nb(64)\nconv3-64 groups=32\ndwconv3\n")
    assert arch.graph.output_shape == (64, 8, 8)  # valid: it builds
    (first, second) = arch.warnings
    assert first.message == ("a depthwise conv on 32 channels with 64 outputs makes 2 per "
                             "input channel (a channel multiplier)")
    assert first.hint == "drop -64 to keep 32 channels, or say it plainly: conv3-64 groups=32"
    assert first.span.line == 4 and second.span.line == 1
    assert second.notes[0][0] == "in this call to `b` (`1`)"


def test_the_cli_prints_warnings_on_stderr(tmp_path):
    spec = tmp_path / "w.arch"
    spec.write_text("arch w\ninput 32x8x8\ndwconv3-64\n")
    result = CliRunner().invoke(app, ["check", str(spec)])
    assert result.exit_code == 0 and result.stdout.startswith("ok: 1 architecture")
    assert "w.arch:3:1: warning: a depthwise conv on 32 channels" in result.stderr
    assert "error" not in result.stderr

"""User errors: one test per kind, with its class, exact location and message, plus
collection of several errors in one run and compiler-style rendering."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from archdsl.api import elaborate, load, load_all, load_spec
from archdsl.errors import (
    ArchErrors,
    ArchSyntaxError,
    IncludeError,
    NameError_,
    ShapeError,
    UsageError,
    ValueError_,
)

H = "arch a\ninput 3x8x8\n"  # layers start on line 3


def errors_of(source, **kw) -> list:
    with pytest.raises(ArchErrors) as info:
        load(source, **kw)
    errs = info.value.errors
    assert errs, "ArchErrors without errors"
    info.value.render()  # rendering never fails
    return errs


def only_error(source, **kw):
    errs = errors_of(source, **kw)
    assert len(errs) == 1, [e.render() for e in errs]
    return errs[0]


def where(err) -> tuple[int, int]:
    assert err.span is not None, f"error without a location: {err.render()}"
    return err.span.line, err.span.col


# ---------------------------------------------------------------- syntax

def test_syntax_unexpected_token():
    err = only_error(H + "conv3-64 )\n")
    assert isinstance(err, ArchSyntaxError)
    assert where(err) == (3, 10) and err.span.end_col == 11
    assert err.message == "unexpected `)`"
    assert "end of line" in err.hint and err.hint.startswith("expected")


def test_syntax_unexpected_character():
    err = only_error(H + "conv3-64 $\n")
    assert isinstance(err, ArchSyntaxError)
    assert where(err) == (3, 10)
    assert err.message == "unexpected character `$`"


def test_syntax_unexpected_end_of_file():
    err = only_error(H + "conv3-64 act=")
    assert isinstance(err, ArchSyntaxError)
    assert where(err) == (3, 14)  # just past the last character
    assert err.message == "unexpected end of file"


def test_syntax_unclosed_brace_names_the_brace():
    err = only_error(H + "add { conv3-4\n")
    assert isinstance(err, ArchSyntaxError)
    assert err.message == "this `{` is never closed"
    assert where(err) == (3, 5)
    assert "`}`" in err.hint
    assert err.notes[0][0] == "the parser stopped here: unexpected end of file"


def test_syntax_error_on_a_later_line_of_a_block():
    err = only_error("block b {\n  conv3-4\n  conv3-4 = 2\n}\n" + H)
    assert isinstance(err, ArchSyntaxError)
    assert where(err) == (3, 11) and err.message == "unexpected `=`"


def test_several_syntax_errors_in_one_file():
    errs = errors_of(H + "conv3-4 )\nrelu\nconv3-4 $\nFC-10 ]\n")
    assert [(type(e), where(e), e.message) for e in errs] == [
        (ArchSyntaxError, (3, 9), "unexpected `)`"),
        (ArchSyntaxError, (5, 9), "unexpected character `$`"),
        (ArchSyntaxError, (6, 7), "unexpected `]`")]


def test_a_syntax_error_ending_a_list_over_several_lines_is_one_error():
    # the error's line closes a list opened two lines up: the whole statement is set aside
    # (blanking its last line alone left the `[` open and every later line an error)
    errs = errors_of("arch a(v = 0)\nlet rows = [[1, 2],\n  [3, 4],\n  [5, 6]][v].y\n"
                     "let n = 3\ninput 3x8x8\nfeatures: (\n  conv3-{n} ]\n  relu\n)\n"
                     "let m = [1,\n  2 +* 3]\nFC-10\n")
    assert [(where(e), e.message) for e in errs] == [
        ((4, 13), "unexpected character `.`"), ((8, 13), "unexpected `]`"),
        ((12, 6), "unexpected `*`")]


def test_a_statement_cut_by_a_line_break_is_one_error():
    # the indented line under it is its rest, not a statement of its own
    errs = errors_of(H + "let x = 1 +\n    2\nconv3-4 )\n")
    assert [(where(e), e.message) for e in errs] == [
        ((3, 12), "unexpected end of line"), ((5, 9), "unexpected `)`")]
    assert "end the line with `\\`" in errs[0].hint


def test_statement_before_arch():
    err = only_error("conv3-4\n" + H)
    assert isinstance(err, ArchSyntaxError)
    assert where(err) == (1, 1)
    assert err.message == "statement outside an architecture"
    assert "arch NAME" in err.hint


# ---------------------------------------------------------------- names

def test_unknown_op_with_did_you_mean():
    err = only_error(H + "cnv3-64\n")
    assert isinstance(err, NameError_)
    assert where(err) == (3, 1) and err.span.end_col == 5  # the name only
    assert err.message == "unknown op or block `cnv3`"
    assert "did you mean `conv3`" in err.hint


def test_unknown_op_suggests_blocks():
    err = only_error("block bottleneck(c) { conv1-{c} }\n" + H + "bottlenek(4)\n")
    assert isinstance(err, NameError_) and where(err) == (4, 1)
    assert "`bottleneck`" in err.hint


def test_unknown_attribute():
    err = only_error(H + "conv3-64 strde=2\n")
    assert isinstance(err, NameError_)
    assert where(err) == (3, 10)
    assert err.message == "`conv` has no attribute `strde`"
    assert err.hint == "did you mean `stride`?"


def test_unknown_attribute_in_defaults():
    err = only_error(H + "defaults nrm=bn\nconv3-4\n")
    assert isinstance(err, NameError_) and where(err) == (3, 10)
    assert "`nrm`" in err.message and "`norm`" in err.hint


def test_unknown_block_parameter():
    err = only_error("block b(c) { conv3-{c} }\n" + H + "b(d=3)\n")
    assert isinstance(err, NameError_)
    assert where(err) == (4, 3)
    assert err.message == "block `b` has no parameter `d`"
    assert "c" in err.hint


def test_unknown_variable():
    err = only_error("arch a(width=2)\ninput 3x8x8\nconv3-{widht}\n")
    assert isinstance(err, NameError_)
    assert where(err) == (3, 8)
    assert err.message == "unknown name `widht`"
    assert "`width`" in err.hint


def test_unknown_function():
    err = only_error(H + "conv3-{flor(2.5)}\n")
    assert isinstance(err, NameError_) and where(err) == (3, 8)
    assert "unknown function `flor`" in err.message and "`floor`" in err.hint


def test_duplicate_name():
    err = only_error(H + "c: conv3-4\nc: conv3-4\n")
    assert isinstance(err, NameError_)
    assert where(err) == (4, 1)
    assert err.message == "name `c` is used twice"
    ((note, span),) = err.notes
    assert note == "first used here" and (span.line, span.col) == (3, 1)


def test_duplicate_block():
    err = only_error("block b { relu }\nblock b { tanh }\n" + H + "b\n")
    assert isinstance(err, NameError_)
    assert where(err) == (2, 1)
    assert err.message == "block `b` is defined twice"
    assert [(n, s.line) for n, s in err.notes] == [("first defined here", 1)]


def test_duplicate_architecture():
    err = only_error(H + "relu\n" + H + "tanh\n")
    assert isinstance(err, NameError_) and where(err) == (4, 1)
    assert err.message == "architecture `a` is defined twice"


def test_unknown_architecture_in_derived_arch():
    err = only_error("arch b = zz(k=1)\n")
    assert isinstance(err, NameError_) and where(err) == (1, 1)
    assert err.message == "unknown architecture `zz`"


# ---------------------------------------------------------------- shapes

def test_shape_mismatch_at_add_names_both_shapes_and_the_producers():
    err = only_error(H + "residual { conv3-8 }\n")
    assert isinstance(err, ShapeError)
    assert where(err) == (3, 1)
    assert "8×8×8" in err.message and "3×8×8" in err.message
    assert err.message == "cannot add 8×8×8 and 3×8×8"
    assert "shortcut" in err.hint
    (conv_note, conv_span), (input_note, input_span) = err.notes
    assert "conv" in conv_note and "8×8×8" in conv_note
    assert (conv_span.line, conv_span.col) == (3, 12)
    assert "input" in input_note and "3×8×8" in input_note
    assert (input_span.line, input_span.col) == (2, 1)


def test_shape_mismatch_at_add_names_labelled_producer():
    err = only_error(H + "add { | wide: conv3-16 }\n")
    assert isinstance(err, ShapeError) and where(err) == (3, 1)
    assert err.message == "cannot add 3×8×8 and 16×8×8"
    assert any("`wide`" in n and "16×8×8" in n for n, _ in err.notes)


def test_concat_spatial_mismatch():
    err = only_error(H + "concat { conv3-8/2 | conv3-8 }\n")
    assert isinstance(err, ShapeError)
    assert where(err) == (3, 1)
    assert "cannot concatenate 8×4×4 and 8×8×8" in err.message
    assert [(s.line, s.col) for _, s in err.notes] == [(3, 10), (3, 22)]


def test_spatial_size_shrinking_below_one():
    err = only_error(H + "conv3-4 pad=valid\nmaxpool x4\n")
    assert isinstance(err, ShapeError)
    assert where(err) == (4, 1)
    assert err.message.startswith("spatial size shrinks below 1")
    assert "on a 1×1 input gives 0×0" in err.message


def test_conv_on_a_flattened_tensor():
    err = only_error(H + "FC-10\nconv3-4\n")
    assert isinstance(err, ShapeError)
    assert where(err) == (4, 1)
    assert err.message == "conv needs a C×H×W input, got 10"
    assert "flattened" in err.hint
    ((note, span),) = err.notes
    assert "fc" in note and span.line == 3


def test_groups_must_divide_channels():
    err = only_error(H + "conv3-6 groups=4\n")
    assert isinstance(err, ShapeError)
    assert where(err) == (3, 1)
    assert "groups=4" in err.message and "(3)" in err.message and "(6)" in err.message


def test_mul_broadcast_mismatch():
    err = only_error(H + "mul { | conv1-4 }\n")
    assert isinstance(err, ShapeError) and where(err) == (3, 1)
    assert "cannot multiply" in err.message


# ---------------------------------------------------------------- values

def test_non_integer_channels():
    err = only_error(H + "conv3-{64*0.3}\n")
    assert isinstance(err, ValueError_)
    assert where(err) == (3, 8)
    assert "must be an integer" in err.message and "19.2" in err.message
    assert "make_divisible" in err.hint


def test_negative_repeat_count():
    err = only_error(H + "conv3-4 x{-1}\n")
    assert isinstance(err, ValueError_)
    assert where(err) == (3, 11)
    assert err.message == "a repeat count must be at least 0, got -1"


def test_zero_channels():
    err = only_error(H + "conv3-0\n")
    assert isinstance(err, ValueError_) and where(err) == (3, 7)
    assert "at least 1" in err.message


def test_division_by_zero():
    err = only_error(H + "conv3-{4 / 0}\n")
    assert isinstance(err, ValueError_) and where(err) == (3, 8)
    assert err.message == "division by zero"


def test_index_out_of_range():
    err = only_error(H + "conv3-{[1, 2][5]}\n")
    assert isinstance(err, ValueError_) and where(err) == (3, 8)
    assert "out of range" in err.message


def test_bad_attach_value():
    err = only_error(H + "conv3-4 act=relux\n")
    assert isinstance(err, ValueError_) and where(err) == (3, 9)
    assert "`act=relux`" in err.message and "`relu`" in err.hint


def test_op_without_kernel_or_channels():
    err = only_error(H + "conv3\n")
    assert isinstance(err, ValueError_) and where(err) == (3, 1)
    assert "needs a -N count" in err.message


def test_missing_input_line():
    err = only_error("arch a\nconv3-4\n")
    assert isinstance(err, ValueError_)
    assert where(err) == (1, 1)
    assert err.message == "architecture `a` has no `input` line"
    assert "input 3x224x224" in err.hint


def test_input_after_layers():
    err = only_error("arch a\nconv3-4\ninput 3x8x8\n")
    assert isinstance(err, ValueError_) and where(err) == (3, 1)
    assert "before the first layer" in err.message


def test_arch_parameter_without_value():
    err = only_error("arch a(k)\ninput 3x8x8\nconv1-{k}\n")
    assert isinstance(err, ValueError_) and where(err) == (1, 1)
    assert err.message == "`a` needs a value for `k`"


def test_recursion_in_a_block_is_an_error_not_recursionerror():
    err = only_error("block a { conv1-4; a }\n" + H + "a\n")
    assert isinstance(err, ValueError_)
    assert where(err) == (1, 20)
    assert err.message == "block `a` calls itself (a → a)"


def test_mutual_recursion_between_blocks():
    err = only_error("block a { b }\nblock b { relu; a }\n" + H + "a\n")
    assert isinstance(err, ValueError_)
    assert where(err) == (2, 17)
    assert "calls itself" in err.message


def _load_in_subprocess(text: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """Load a spec in a child process, so that a hang fails the test instead of the run."""
    code = textwrap.dedent(f"""
        from archdsl.api import load
        from archdsl.errors import ArchErrors
        try:
            load({text!r})
        except ArchErrors as exc:
            print(exc.render())
            raise SystemExit(3)
    """)
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading this spec did not finish in {timeout}s:\n{text}")


def test_block_calling_itself_twice_fails_fast():
    # each level calls `a` twice: 2**64 calls unless the depth error stops elaboration
    res = _load_in_subprocess("block a { a; a }\n" + H + "a\n")
    assert res.returncode == 3, res.stderr
    assert "calls itself (a → a)" in res.stdout and "Traceback" not in res.stderr


def test_unknown_set_parameter():
    err = only_error("arch a(width=2)\ninput 3x8x8\nconv3-{width}\n", widht=3)
    assert isinstance(err, UsageError)
    assert where(err) == (1, 1)
    assert err.message == "architecture `a` has no parameter `widht`"
    assert err.hint == "did you mean `width`?"


def test_unknown_arch_name():
    with pytest.raises(ArchErrors) as info:
        load(H + "relu\n", arch="b")
    (err,) = info.value.errors
    assert isinstance(err, UsageError) and "no architecture `b`" in err.message


def test_include_not_found(tmp_path):
    spec = tmp_path / "m.arch"
    spec.write_text(H + 'include "nope.arch"\n')
    err = only_error(spec)
    assert isinstance(err, IncludeError)
    assert where(err) == (3, 1)
    assert err.message.startswith('cannot include "nope.arch"')


def test_spec_file_not_found(tmp_path):
    err = only_error(tmp_path / "missing.arch")
    assert isinstance(err, IncludeError) and err.span is None
    assert "cannot read" in err.message


def test_errors_in_an_included_file_name_that_file(tmp_path):
    (tmp_path / "lib.arch").write_text("block b {\n  relu )\n}\n")
    spec = tmp_path / "m.arch"
    spec.write_text('include "lib.arch"\n' + H + "b\n")
    err = only_error(spec)
    assert isinstance(err, ArchSyntaxError)
    assert err.span.file.endswith("lib.arch") and where(err) == (2, 8)


# ---------------------------------------------------------------- several errors, rendering

def test_several_independent_errors_are_all_reported():
    # a layer that fails leaves an unknown shape: nothing after it is shape-checked (a
    # misspelt layer would make every later shape look wrong), but everything else is
    text = H + ("residual { conv3-16 }\n"  # 3: add mismatch
                "cnv3-4\n"             # 4: unknown op
                "conv3-4 strde=1\n"    # 5: unknown attribute
                "conv3-{w}\n"          # 6: unknown variable
                "conv3-8\n"            # 7: fine
                "residual { conv3-16 }\n"  # 8: not checked: its input's shape is unknown
                "FC-10\n"
                "c: relu\nc: relu\n")  # 11: duplicate name
    errs = errors_of(text)
    assert [(type(e), where(e)) for e in errs] == [
        (ShapeError, (3, 1)), (NameError_, (4, 1)), (NameError_, (5, 9)),
        (NameError_, (6, 8)), (NameError_, (11, 1))]


def test_errors_in_a_repeated_block_are_reported_once():
    errs = errors_of("block b { cnv3-4 }\n" + H + "b x3\n")
    assert len(errs) == 1 and where(errs[0]) == (1, 11)


def test_several_file_level_errors_are_all_reported():
    text = ("block b { relu }\nblock b { relu }\n" + H + "relu\n" + H + "tanh\n")
    errs = errors_of(text, arch="a")
    assert sorted((e.message, e.span.line) for e in errs) == [
        ("architecture `a` is defined twice", 6), ("block `b` is defined twice", 2)]


def test_rendering_is_compiler_style():
    with pytest.raises(ArchErrors) as info:
        load(H + "cnv3-64 x2\n")
    text = str(info.value)
    lines = text.splitlines()
    assert lines[0] == "<string>:3:1: error: unknown op or block `cnv3`"
    assert lines[1] == "    cnv3-64 x2"
    assert lines[2] == "    ^^^^"
    assert lines[3].startswith("hint: did you mean `conv3`")
    assert str(info.value.errors[0]) == text


def test_rendering_includes_notes_with_their_lines():
    with pytest.raises(ArchErrors) as info:
        load(H + "residual { conv3-8 }\n")
    text = info.value.render()
    assert text.startswith("<string>:3:1: error: cannot add 8×8×8 and 3×8×8\n"
                           "    residual { conv3-8 }\n    ^^^^^^^^^^^^^^^^^^^^")
    assert "<string>:3:12: note: this conv (`0`) makes 8×8×8\n    residual { conv3-8 }\n" \
           "               ^^^^^^^" in text
    assert "<string>:2:1: note: the input makes 3×8×8" in text


def test_rendering_names_the_file_and_caret_column(tmp_path):
    spec = tmp_path / "x.arch"
    spec.write_text(H + "conv3-64 strde=2\n")
    with pytest.raises(ArchErrors) as info:
        load(spec)
    text = str(info.value)
    first = text.splitlines()[0]
    assert first.endswith("x.arch:3:10: error: `conv` has no attribute `strde`")
    assert text.splitlines()[2] == "    " + " " * 9 + "^" * len("strde=2")


def test_several_errors_render_separated():
    with pytest.raises(ArchErrors) as info:
        load(H + "cnv3-4\nconv3-{w}\n")
    blocks = str(info.value).split("\n\n")
    assert len(blocks) == 2
    assert blocks[0].startswith("<string>:3:1: error:")
    assert blocks[1].startswith("<string>:4:8: error: unknown name `w`")


def test_load_all_and_elaborate_raise_the_same_errors():
    program = load_spec(H + "cnv3-4\n")
    with pytest.raises(ArchErrors) as a:
        elaborate(program, "a")
    with pytest.raises(ArchErrors) as b:
        load_all(H + "cnv3-4\n")
    assert a.value.render() == b.value.render()

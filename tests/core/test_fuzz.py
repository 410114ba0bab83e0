"""Fuzzing: mutated specs (zoo and inline) either load, or fail with located ArchErrors.

No other exception may escape `load_spec` + `elaborate` + `analyse`; every error has a span
(line ≥ 1, col ≥ 1) except file-level UsageError/IncludeError, and renders. A spec that does
load gives a valid graph that the formatter round-trips. The same holds through the CLI.
Crashes the fuzzer found are kept below as explicit regression tests.
"""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from archdsl.analysis import analyse
from archdsl.api import elaborate, load, load_spec
from archdsl.cli import app
from archdsl.errors import ArchError, ArchErrors, ErrorLimit, IncludeError, NameError_, UsageError
from archdsl.formatter import format_graph
from archdsl.ir import validate

SPECS_DIR = Path(__file__).parents[2] / "specs"
# where the elaborator reads the node budget
LAYERS = importlib.import_module("archdsl.elaborate.layers")

INLINE = {
    "inline_resnetish.arch": """# a small residual network
block basic(c, stride=1) {
  residual {
    conv1: conv3-{c}/{stride} norm=bn act=relu
    conv2: conv3-{c} norm=bn
  } shortcut(downsample) { conv1-{c}/{stride} norm=bn }
  relu: relu
}
arch net(width=1.0, layers=[1, 2])
input 3x32x32
defaults norm=bn act=relu
let c = make_divisible(16 * width)
conv1: conv3-{c}
layer1: basic(c) x{layers[0]}
layer2: basic(c * 2, stride=2) x{layers[1]}
gap; dropout(0.2)
fc: FC-10 act=none
arch net_half = net(width=0.5)
""",
    "inline_inception.arch": """block inc(a, b, c) {
  concat { conv1-{a} | conv1-{b}; conv3-{b} | maxpool3/1 pad=same; conv1-{c} | }
}
arch tiny(r=28)
input 3x{r}x{r}
conv7-16/2 act=relu; maxpool3/2 ceil=true; LRN
i3: inc(8, 12, 4) x2
se: gate { gap; conv1-4 act=relu; conv1-{16 + 24 * 2 + 3} act=sigmoid }
dense { dwconv3; conv1-8 act=relu6 }
mul { | conv1-{75} act=sigmoid }
adaptive_avgpool(2); FC-100 act=tanh; soft-max
""",
    "inline_plain.arch": """arch p; input 1x16x16; conv5-6 pad=valid act=tanh; avgpool2/2
C3: conv5-16 pad=valid groups=2 bias=false; maxpool; FC-{120 if true else 1}; FC-10
""",
}


def _sources() -> list[tuple[str, str]]:
    out = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(SPECS_DIR.glob("*.arch"))]
    return out + sorted(INLINE.items())


SOURCES = _sources()
MUTANT = "_mutant.arch"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of the zoo (so that includes resolve) where mutants are written; a lower node
    cap keeps examples with huge repeat counts fast (the cap's error path is tested too)."""
    root = tmp_path_factory.mktemp("fuzz")
    for p in SPECS_DIR.glob("*.arch"):
        shutil.copy(p, root / p.name)
    for name, text in INLINE.items():
        (root / name).write_text(text, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LAYERS, "MAX_NODES", 20_000)
        yield root


# ---------------------------------------------------------------- mutations

CHARS = list("{}()[]|;:=-+*/%x×,.\"'#\\$@!?<>\t ") + ["\n", "\r\n", "0", "9", "a", "_"]
TOKEN = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[A-Za-z_]\w*|\*\*|//|==|[^\s\w]|\n")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
WORDS = ["arch", "block", "input", "defaults", "let", "include", "residual", "shortcut",
         "concat", "add", "mul", "gate", "dense", "if", "else", "not", "and", "or", "x", "x2",
         "x{", "×3", "{", "}", "(", ")", "[", "]", "|", ";", ":", "=", "-", "/", ",", "**",
         '"', "#", "\n", "none", "true", "false", "norm=bn", "act=relu", "pad=valid",
         "groups=3", "bias=auto", "conv3-8", "maxpool", "FC-10", "soft-max", "gap", "relu",
         "dwconv3/2", "adaptive_avgpool(2)", "dropout(0.5)", 'include "lenet5.arch"',
         'include "../x.arch"', "basic(4)", "inc(1, 2, 3)", "layer1:", "0:", "input 3x8x8"]
NUMBERS = ["0", "1", "2", "3", "7", "64", "1000000", "4294967296", "10000000000000000000000",
           "1e309", "0.5", "-1", "{-1}", "{0.3}", "{1/0}"]


@st.composite
def char_mutation(draw, text: str) -> str:
    kind = draw(st.sampled_from(["insert", "delete", "replace"]))
    i = draw(st.integers(0, max(0, len(text) - 1)))
    if kind == "delete":
        return text[:i] + text[i + 1:]
    ch = draw(st.sampled_from(CHARS))
    return text[:i] + ch + text[i + (kind == "replace"):]


@st.composite
def token_mutation(draw, text: str) -> str:
    toks = [m.span() for m in TOKEN.finditer(text)]
    kind = draw(st.sampled_from(["delete", "duplicate", "number", "number", "insert", "swap"]))
    if kind == "number":
        nums = [m.span() for m in NUMBER.finditer(text)]
        if nums:
            s, e = draw(st.sampled_from(nums))
            return text[:s] + draw(st.sampled_from(NUMBERS)) + text[e:]
    if not toks:
        return text + draw(st.sampled_from(WORDS))
    s, e = draw(st.sampled_from(toks))
    if kind == "delete":
        return text[:s] + text[e:]
    if kind == "duplicate":
        return text[:e] + " " + text[s:e] + text[e:]
    if kind == "swap":
        s2, e2 = draw(st.sampled_from(toks))
        if (s2, e2) < (s, e):
            (s, e), (s2, e2) = (s2, e2), (s, e)
        if e <= s2:
            return text[:s] + text[s2:e2] + text[e:s2] + text[s:e] + text[e2:]
        return text
    sep = draw(st.sampled_from([" ", "", "\n"]))
    return text[:s] + sep + draw(st.sampled_from(WORDS)) + sep + text[s:]


@st.composite
def mutant(draw, mutation) -> tuple[str, str]:
    name, text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 3))):
        text = draw(mutation(text))
    # adaptive pooling to a huge size is a known slow path with its own test
    # (tests/core/test_ops_counts.py::test_adaptive_pooling_with_a_huge_output_size_is_fast)
    assume(not re.search(r"adaptive_avgpool\(\s*\d{6,}", text))
    return name, text


# ---------------------------------------------------------------- the property

def check_errors(exc: ArchErrors) -> None:
    assert exc.errors, "ArchErrors with no errors"
    for err in exc.errors:
        assert isinstance(err, ArchError), type(err)
        if err.span is None:
            assert isinstance(err, (UsageError, IncludeError, ErrorLimit)), (
                f"{type(err).__name__} without a location: {err.render()}")
        else:
            assert err.span.line >= 1 and err.span.col >= 1, err.span
            assert err.span.end_line >= err.span.line
            lines = err.span.text.splitlines()
            assert err.span.line <= max(1, len(lines)), (err.span, len(lines))
            assert err.render().startswith(f"{err.span.file}:{err.span.line}:{err.span.col}: ")
        for _, note_span in err.notes:
            assert note_span is None or (note_span.line >= 1 and note_span.col >= 1)
    text = exc.render()
    assert isinstance(text, str) and text


def load_and_measure(path: Path | str) -> None:
    """load_spec + elaborate + analyse (of a file, or of spec text); successful graphs
    validate and round-trip."""
    try:
        program = load_spec(path)
    except ArchErrors as exc:
        check_errors(exc)
        return
    for name in program.own:
        try:
            graph = elaborate(program, name)
        except ArchErrors as exc:
            check_errors(exc)
            continue
        validate(graph)
        analyse(graph)
        if len(graph.g) <= 300:
            again = load(format_graph(graph)).graph
            assert again.signature() == graph.signature()


FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])


@FUZZ
@given(case=mutant(char_mutation))
def test_character_mutations(workdir, case):
    _, text = case
    path = workdir / MUTANT
    path.write_text(text, encoding="utf-8")
    load_and_measure(path)


@FUZZ
@given(case=mutant(token_mutation))
def test_token_mutations(workdir, case):
    _, text = case
    path = workdir / MUTANT
    path.write_text(text, encoding="utf-8")
    load_and_measure(path)


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=mutant(token_mutation))
def test_cli_check_on_mutants(workdir, case):
    _, text = case
    path = workdir / MUTANT
    path.write_text(text, encoding="utf-8")
    result = CliRunner(env={"COLUMNS": None, "FORCE_COLOR": None, "NO_COLOR": "1"}).invoke(
        app, ["check", str(path)])
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if result.exit_code == 1:
        assert "error" in result.stderr
    else:
        assert result.stdout.startswith("ok: ")


def test_unmutated_sources_load(workdir):
    for name, _ in SOURCES:
        load_and_measure(workdir / name)


# ---------------------------------------------------------------- regressions found by fuzzing

def test_regression_derived_arch_with_positional_argument():
    # found from resnet34.arch with `resnet(depth=34)` mutated to `resnet(depth34)`:
    # AttributeError: 'NoneType' object has no attribute 'lower' (did_you_mean(None, ...))
    text = "arch a(k=1)\ninput 3x8x8\nconv1-{k}\narch b = a(2)\n"
    program = load_spec(text)
    with pytest.raises(ArchErrors) as info:
        elaborate(program, "b")
    check_errors(info.value)
    assert any("named" in e.message for e in info.value.errors)


def test_regression_derived_arch_positional_name_argument():
    text = "arch a(depth=18)\ninput 3x8x8\nconv1-4\narch b = a(depth34)\n"
    with pytest.raises(ArchErrors) as info:
        load(text, arch="b")
    check_errors(info.value)


def test_regression_duplicate_name_of_attached_activation_has_a_span():
    # found from alexnet.arch with a label changed to `conv3:` while a later `conv3:` layer
    # with act=relu also makes `relu3`: the second error had span=None
    text = "arch a\ninput 3x8x8\nconv3: conv3-4 act=relu\nconv3: conv3-4 act=relu\n"
    with pytest.raises(ArchErrors) as info:
        load(text)
    check_errors(info.value)
    # reported once, for the name written; `relu3` follows from it (issue #14)
    assert [e.message for e in info.value.errors] == ["name `conv3` is used twice"]
    assert all(isinstance(e, NameError_) for e in info.value.errors)


def test_regression_duplicate_name_of_attached_norm_has_a_span():
    text = "arch a\ninput 3x8x8\nstem_bn: relu\nstem: conv3-4 norm=bn\n"
    with pytest.raises(ArchErrors) as info:
        load(text)
    check_errors(info.value)
    (err,) = info.value.errors
    assert err.message == "name `stem_bn` is used twice" and err.span.line == 4

"""Grammar-aware fuzzing: hypothesis writes specs from the language's own constructs (blocks,
parameters, repetition, joins, residuals, gates, expressions) with hostile values in every slot
(huge, zero, negative, fractional and non-finite numbers, deep nesting, long chains, markup and
control characters in strings), and the constructs added since: kernels and strides per axis
(`conv1x7`, `k=1x7`, `pad=0,3`), channel routing (`split`, `chunk`, `slice`,
`channel_shuffle`), comprehensions and the functions of expressions, dashed and quoted labels,
attributes of an attached norm or activation.

Every spec must load, or fail with located ArchErrors, within a time bound and without any other
exception; what loads must analyse, format and round-trip, and its tables and canonical form
must reach the terminal as plain text. Mutations of the zoo are test_fuzz.py's; the command line
on a corpus of hostile files is tests/cli/test_hostile_corpus.py.
"""

from __future__ import annotations

import importlib
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import load_and_measure
from typer.testing import CliRunner

from archdsl.cli import app

LAYERS = importlib.import_module("archdsl.elaborate.layers")  # reads MAX_NODES
STATEMENTS = importlib.import_module("archdsl.elaborate.elaborator")  # MAX_STEPS
EXPR = importlib.import_module("archdsl.expr")
SECONDS = 10  # per spec, with the budgets made small below

# ---------------------------------------------------------------- the vocabulary

# Two vocabularies: a benign one (values a spec would hold, so that specs get past the parser
# into elaboration, analysis and the formatter) and a hostile one (huge, zero and non-finite
# numbers, long operator chains, unknown names and functions, markup and control characters).
# A spec is written from one of them, hostile one time in three.
BENIGN = {
    "ints": st.sampled_from([1, 2, 3, 4, 7, 8, 16, 64]).map(str),
    "floats": st.sampled_from(["0.5", "1.0", "0.25", ".5", "2.5K"]),
    "strings": st.sampled_from(['"bn"', '"none"', '"relu"']),
    "binops": st.sampled_from(["+", "+", "*", "*", "//", "-", "%"]),
    "funcs": st.sampled_from(["int", "round", "abs", "make_divisible", "log2", "sqrt"]),
    "chain": st.integers(2, 6),
    "ops": st.sampled_from(["conv", "dwconv", "maxpool", "avgpool", "FC", "relu", "relu6",
                            "gelu", "sigmoid", "bn", "LRN", "dropout", "gap", "softmax",
                            "soft-max", "identity", "hardswish", "silu", "leakyrelu",
                            "chunk(2, 1)", "slice(0, 2)", "channel_shuffle(2)", "linear"]),
    "kernels": st.sampled_from([1, 3, 3, 5, "1x3", "3x1", "1x7"]),
    "attrs": st.sampled_from(["act", "norm", "pad", "bias", "k", "stride", "eps"]),
    "attr_values": st.sampled_from(["relu", "bn", "none", "same", "true", "1", "auto", "1x3",
                                    "2x1", "0,1", "0.001", "leakyrelu"]),
    "labels": st.sampled_from(["a: ", "b: ", "layer1: ", "block1-0: ", "b{i}-{i + 1}: ",
                               '"stem conv": ', "Mixed_6b: "]),
}
HOSTILE = {
    "ints": st.sampled_from([0, 1, 3, 2**31, 2**40, 2**63, 2**64, 10**30]).map(str),
    "floats": st.sampled_from(["1e-9", "1e308", "1e999", "0.5", "3M"]),
    "strings": st.sampled_from(['"[link=https://e.example]x[/link]"', '"[/x]"', '"a|b"',
                                '"\x1b[31m"', '""', '"bn"']),
    "binops": st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "==", "<", "and", "or"]),
    "funcs": st.sampled_from(["int", "round", "ceil", "floor", "min", "max", "abs", "sqrt",
                              "make_divisible", "len", "error", "nosuch", "log", "exp", "sum",
                              "range", "enumerate", "zip", "float"]),
    "chain": st.one_of(st.integers(2, 6), st.integers(2, 6), st.integers(2, 6),
                       st.integers(150, 250)),
    "ops": st.sampled_from(["conv", "dwconv", "maxpool", "FC", "relu", "bn", "flatten",
                            "layernorm", "adaptive_avgpool", "gap", "nope", "chunk(0, 3)",
                            "slice(5, 1)", "channel_shuffle(7)", "slice(-1, 99999999999)",
                            "leakyrelu"]),
    "kernels": st.sampled_from([0, 1, 3, 99, "0x3", "1x99999999999", "1x2x3", "3x0"]),
    "attrs": st.sampled_from(["act", "norm", "pad", "groups", "bias", "p", "ceil", "zz", "k",
                              "stride", "dilation", "eps", "negative_slope", "kh"]),
    "attr_values": st.sampled_from(["relu", "bn", "none", "same", "valid", "true", "-1",
                                    "1x2x3", "-1,3", "0x0", "[1, 2, 3]", "auto", "1e999"]),
    "labels": st.sampled_from(["a: ", "block1-0: ", '"a.b": ', '"\x1b]8;;x\x07": ',
                               '"[/x]": ', "a--b: ", "-a: ", "b{i}-{-1}: ", "x{1e999}: ",
                               '"": ', "b{[1, 2]}: "]),
}
NAMES = ("c", "k", "s", "i", "width", "depth", "classes")


def _expr(v: dict) -> st.SearchStrategy[str]:
    if v is BENIGN:  # integers and names, combined as a spec's width and depth rules are
        leaf = st.one_of(v["ints"], v["ints"], st.sampled_from(NAMES))
        return st.recursive(leaf, lambda e: st.one_of(
            st.tuples(e, v["binops"], e).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(v["funcs"], e).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(e, e, e).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
            _comprehension(e),
        ), max_leaves=4)
    leaf = st.one_of(v["ints"], v["ints"], v["floats"], st.sampled_from(NAMES), v["strings"])
    return st.recursive(leaf, lambda e: st.one_of(
        st.tuples(e, v["binops"], e).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(v["funcs"], st.lists(e, min_size=1, max_size=2))
          .map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.lists(e, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.tuples(e, e, e).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        e.map(lambda x: f"-{x}"),
        st.tuples(v["chain"], st.sampled_from(["+", "*"]))  # a chain: a deep syntax tree
          .map(lambda t: t[1].join(["1"] * t[0])),
        _comprehension(e),
        st.tuples(e, e).map(  # nested: up to a list of lists, each at the list limit
            lambda t: f"len([[y for y in range({t[0]})] for x in range({t[1]})])"),
    ), max_leaves=5)


def _comprehension(e: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A comprehension reduced to a number (what a channel count or repeat can use)."""
    forms = [
        "sum([x * {0} for x in range({1})])",
        "len([a for a, b in zip(range({0}), range({1})) if a < b + 1])",
        "max([w for k, w in enumerate([{0}, {1}]) if k == 0 or w != 1])",
        "[2 * w for w in [{0}, {1}] if w > 0][0]",
    ]
    return st.tuples(st.sampled_from(forms), e, e).map(lambda t: t[0].format(t[1], t[2]))


def _layer(v: dict, expr: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    value = st.one_of(v["ints"], expr.map(lambda e: "{" + e + "}"))

    @st.composite
    def layer(draw) -> str:
        op = draw(v["ops"])
        if op in ("conv", "dwconv", "maxpool", "avgpool") and draw(st.booleans()):
            op += str(draw(v["kernels"]))
        text = op
        if draw(st.booleans()):
            text += "-" + draw(st.one_of(st.sampled_from(["4", "8", "{c}", "{2 * c}"]), value))
        if draw(st.booleans()):
            text += "/" + draw(st.one_of(st.sampled_from(["1", "2", "{s}"]), value))
        for key in draw(st.lists(v["attrs"], max_size=2, unique=True)):
            text += f" {key}=" + draw(st.one_of(v["attr_values"], value))
        return text
    return layer()


def _body(v: dict, layer, expr, inner) -> st.SearchStrategy[str]:
    """Statements whose items may nest `inner` bodies (groups, joins, residuals, gates)."""
    items = [layer, layer, layer, st.just("b0"), st.just("b1(4)")]
    if inner is not None:
        items += [
            inner.map(lambda b: f"({b})"),
            st.tuples(st.sampled_from(["split", "split(2, 2)", "split(1, 3)"]),
                      st.lists(st.one_of(st.just(""), inner), min_size=2, max_size=3))
              .map(lambda t: f"{t[0]} {{ {' | '.join(t[1])} }}"),
            st.tuples(st.sampled_from(["concat", "add", "mul"]),
                      st.lists(inner, min_size=2, max_size=3))
              .map(lambda t: f"{t[0]} {{ {' | '.join(t[1])} }}"),
            inner.map(lambda b: f"residual {{ {b} }} shortcut {{ conv1-4 }}"),
            inner.map(lambda b: f"gate {{ {b} }}"),
            inner.map(lambda b: f"dense {{ {b} }}"),
        ]
    repeat = st.one_of(st.just(""), st.just(""), st.sampled_from([" x2", " x3", " x{k}"]),
                       v["ints"].map(lambda n: f" x{n}"))
    statement = st.one_of(
        st.tuples(st.one_of(st.just(""), v["labels"]), st.one_of(*items), repeat)
          .map("".join),
        st.tuples(st.sampled_from(NAMES), expr).map(lambda t: f"let {t[0]} = {t[1]}"),
        st.just("defaults act=relu norm=bn"),
    )
    return st.lists(statement, min_size=1, max_size=3).map("; ".join)


def _vocabulary(v: dict) -> dict:
    """Strategies made once: hypothesis draws from the same objects for every example."""
    expr = _expr(v)
    layer = _layer(v, expr)
    body = _body(v, layer, expr, _body(v, layer, expr, _body(v, layer, expr, None)))
    value = st.one_of(v["ints"], expr.map(lambda e: "{" + e + "}"))
    return {"expr": expr, "body": body, "value": value}


WORDS = [_vocabulary(BENIGN), _vocabulary(BENIGN), _vocabulary(HOSTILE)]


@st.composite
def spec(draw) -> str:
    w = draw(st.sampled_from(WORDS))
    # every name an expression may use is a parameter (expressions come in through `let`)
    params = ", ".join(f"{n} = {draw(st.sampled_from(['1', '2', '4']))}" for n in NAMES)
    dims = draw(st.one_of(st.sampled_from(["3x32x32", "1x28x28", "3x16x16", "8"]),
                          st.lists(w["value"], min_size=1, max_size=3).map("x".join)))
    lines = [f"block b0 {{ {draw(w['body'])} }}", f"block b1(c, s = 1) {{ {draw(w['body'])} }}",
             f"arch net({params})", f"input {dims}"]
    lines += [draw(w["body"]) for _ in range(draw(st.integers(1, 2)))]
    if draw(st.booleans()):
        lines.append(f"assert {draw(w['expr'])}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the property

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


@pytest.fixture(autouse=True)
def small_budgets(monkeypatch):
    """The same code paths as the real budgets (tests/core/test_limits.py and the corpus
    check those), an order of magnitude sooner: a hundred specs in seconds."""
    monkeypatch.setattr(LAYERS, "MAX_NODES", 5_000)
    monkeypatch.setattr(STATEMENTS, "MAX_STEPS", 50_000)
    monkeypatch.setattr(EXPR, "MAX_STEPS", 50_000)


@FUZZ
@given(text=spec())
def test_generated_specs_load_or_fail_with_located_errors(text):
    started = time.perf_counter()
    load_and_measure(text)  # a path or spec text
    assert time.perf_counter() - started < SECONDS


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=spec(), command=st.sampled_from([["check"], ["stats", "--per-layer"],
                                             ["stats", "-f", "markdown"], ["format"],
                                             ["diff", "--set-b", "k=2"]]))
def test_generated_specs_through_the_command_line(tmp_path_factory, text, command):
    path = tmp_path_factory.mktemp("gen") / "gen.arch"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, [command[0], str(path), *command[1:]],
                                env={"COLUMNS": "200"})
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert "\x1b" not in result.output

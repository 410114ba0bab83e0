"""archdsl's budgets (archdsl/limits.py, docs/limits.md): each one, when exceeded, is a located
error naming the limit, reached quickly and in little memory (issue #13)."""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

import pytest

import archdsl
from archdsl import limits
from archdsl.errors import ArchErrors, ErrorSink, Span

LAYERS = importlib.import_module("archdsl.elaborate.layers")  # reads MAX_NODES
# reads MAX_STEPS and MAX_NESTING
STATEMENTS = importlib.import_module("archdsl.elaborate.elaborator")
HEAD = "arch a\ninput 3x8x8\n"


def errors_of(source, **params) -> list:
    with pytest.raises(ArchErrors) as info:
        archdsl.load(source, **params)
    return info.value.errors


def only(source, **params):
    errs = errors_of(source, **params)
    assert len(errs) == 1, [e.render() for e in errs]
    return errs[0]


def names_limit(err, what: str) -> None:
    assert err.hint and "limit" in err.hint and what in err.hint and "limits.md" in err.hint, \
        err.render()


@pytest.fixture
def fast(monkeypatch):
    """Small budgets: the same code paths, in milliseconds."""
    monkeypatch.setattr(importlib.import_module("archdsl.expr"), "MAX_STEPS", 20_000)
    monkeypatch.setattr(STATEMENTS, "MAX_STEPS", 20_000)
    monkeypatch.setattr(LAYERS, "MAX_NODES", 2_000)


# ---------------------------------------------------------------- elaboration work

def test_a_repeat_count_above_the_work_budget_is_refused_at_once():
    t = time.perf_counter()
    err = only(HEAD + "((relu x0) x1999999) x1999999\n")
    assert time.perf_counter() - t < 2
    assert (err.span.line, err.span.col) == (3, 23)  # the outer count, met first
    names_limit(err, "elaboration steps")


@pytest.mark.parametrize("body", [
    "((relu x0) x999) x999",            # no node at all: repetitions still count
    "((relu x1000) x1000) x1000",       # nodes: the node cap or the steps, whichever first
    "(let m = 1) x100000",
])
def test_repetition_is_budgeted(fast, body):
    t = time.perf_counter()
    err = only(HEAD + body + "\n")
    assert time.perf_counter() - t < 5
    assert err.span is not None and err.span.line == 3
    assert "steps" in err.message or "nodes" in err.message


def test_blocks_called_twice_forty_deep(fast):
    """2**40 calls: rejected within the budget, not after minutes and gigabytes."""
    blocks = [f"block b{i} {{ b{i + 1}; b{i + 1} }}" for i in range(40)] + ["block b40 { relu }"]
    t = time.perf_counter()
    err = only("\n".join(blocks) + "\n" + HEAD + "b0\n")
    assert time.perf_counter() - t < 5
    assert err.span is not None


def test_the_node_cap_notes_the_repetition(monkeypatch):
    monkeypatch.setattr(LAYERS, "MAX_NODES", 50)
    err = only(HEAD + "(conv3-4; relu) x100\n")
    assert "more than 50 nodes" in err.message
    assert [(n.line, n.col) for _, n in err.notes] == [(3, 18)]
    names_limit(err, "nodes")


def test_nesting_of_blocks_and_groups(monkeypatch):
    monkeypatch.setattr(STATEMENTS, "MAX_NESTING", 8)
    blocks = [f"block b{i} {{ (b{i + 1}) }}" for i in range(6)] + ["block b6 { relu }"]
    err = only("\n".join(blocks) + "\n" + HEAD + "b0\n")
    assert "nest more than 8" in err.message and err.span is not None
    names_limit(err, "nesting")


# ---------------------------------------------------------------- syntax and expressions

@pytest.mark.parametrize("expr, what", [
    ("{(((9**64)**64)**64)**64}", "integers"),
    ("{2**63 * 2**10}", "integers"),
    ("{int(1e300)}", "integers"),
    ("{-(2**64)}", "integers"),
    ("{" + "9" * 4301 + "}", "digits"),
    ("{" + "1+" * 479 + "1}", "nesting"),
])
def test_expressions_are_bounded(expr, what):
    t = time.perf_counter()
    err = only(HEAD + f"FC-{expr}\n")
    assert time.perf_counter() - t < 2
    assert err.span is not None and err.span.line == 3
    names_limit(err, what)
    assert len(err.render()) < 2000  # no 4,301-digit number in the message


def test_nesting_depth_161():
    err = only(HEAD + "(" * 161 + "relu" + ")" * 161 + "\n")
    assert err.span.line == 3
    names_limit(err, "nesting")


def test_just_below_the_syntax_depth_every_pass_works():
    """What passes the depth check must not hit Python's recursion limit anywhere later."""
    arch = archdsl.load(HEAD + "FC-{" + "1+" * 180 + "1}\n" + "(" * 60 + "relu" + ")" * 60)
    assert arch.graph.output_shape == (181,)
    arch.stats()
    assert "relu" in arch.format()


def test_a_long_value_is_cut_in_messages():
    long_list = "[" + ", ".join(["1"] * 5000) + "]"
    err = only(HEAD + f"let L = {long_list}\nconv3-{{L}}\n")
    assert len(err.message) < 200 and "…" in err.message


@pytest.mark.parametrize("size, what", [("3x{2**40}x8", "dimension"),
                                        ("3x{2**20}x{2**20}", "elements")])
def test_tensor_size_limits(size, what):
    err = only(f"arch a\ninput {size}\nrelu\n")
    assert err.span.line == 2
    names_limit(err, what)


def test_a_huge_layer_is_refused_where_it_is():
    err = only(HEAD + "conv3-8\nFC-{2**35}\n")
    assert err.span.line == 4
    names_limit(err, "dimension")


# ---------------------------------------------------------------- errors

def test_errors_are_capped():
    text = HEAD + "cnv3-8\n" * 500
    errs = errors_of(text)
    assert len(errs) == limits.MAX_ERRORS + 1
    assert "stopped after 50 errors" in errs[-1].message
    names_limit(errs[-1], "errors")


def test_many_lines_with_an_error_each_finish_fast():
    """Elaboration stops at the error limit; what is left is the parser's (linear) time:
    `archdsl check` on 100,000 such lines took 24 s and 290 MB, on 20,000 lines 7 s, on a
    2-core machine under a load of 12 (before: no output after 5 minutes)."""
    t = time.perf_counter()
    errs = errors_of(HEAD + "cnv3\n" * 20_000)
    rendered = [e.render() for e in errs]
    assert len(rendered) == limits.MAX_ERRORS + 1
    assert time.perf_counter() - t < 30


def test_the_sink_and_source_lines_are_linear():
    """Dedup and source-line lookup were quadratic: 100k errors took more than 5 minutes."""
    n = 50_000
    text = "x\n" * n
    sink = ErrorSink(limit=n)
    t = time.perf_counter()
    for i in range(1, n + 1):
        sink.add(archdsl.ArchError("e", Span("f", i, 1, i, 2, text)))
    lines = [e.span.source_line() for e in sink.errors]
    assert len(lines) == n and time.perf_counter() - t < 20


# ---------------------------------------------------------------- files

@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_is_not_a_spec(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    (err,) = errors_of(device)
    assert "device" in err.message


def test_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "pipe.arch"
    os.mkfifo(fifo)
    (tmp_path / "main.arch").write_text('include "pipe.arch"\n' + HEAD + "relu\n")
    t = time.perf_counter()
    for source in (fifo, tmp_path / "main.arch"):
        (err,) = errors_of(source)
        assert "FIFO" in err.message
    assert time.perf_counter() - t < 2


def test_a_folder_is_not_a_spec(tmp_path):
    (err,) = errors_of(tmp_path)
    assert "folder" in err.message


def test_file_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.import_module("archdsl.program"), "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.arch"
    big.write_text(HEAD + "relu\n" * 500)
    (err,) = errors_of(big)
    names_limit(err, "size of a spec file")
    (tmp_path / "main.arch").write_text('include "big.arch"\n')
    (err,) = errors_of(tmp_path / "main.arch")
    assert (err.span.line, err.span.col) == (1, 1)
    names_limit(err, "size of a spec file")


@pytest.mark.parametrize("path", ["a\\x00b.arch", "\\x1b[31m.arch"])
def test_control_characters_in_include_paths(tmp_path, path):
    spec = tmp_path / "main.arch"
    spec.write_bytes(b'include "' + path.encode().decode("unicode_escape").encode() + b'"\n'
                     + HEAD.encode() + b"relu\n")
    (err,) = errors_of(spec)
    assert err.span.line == 1 and "control characters" in err.message
    assert "\x1b" not in err.render() and "\x00" not in err.render()


# ---------------------------------------------------------------- values from outside a spec

def test_numpy_scalars_are_numbers():
    np = pytest.importorskip("numpy")
    arch = archdsl.load("specs/mobilenet_v1.arch", alpha=np.float32(0.5),
                        resolution=np.int64(160))
    assert arch.settings["resolution"] == 160 and type(arch.settings["resolution"]) is int
    assert arch.graph.input_shape == (3, 160, 160)


@pytest.mark.parametrize("value, message", [
    (float("nan"), "finite"), (float("inf"), "finite"), (2**70, "bits"),
    ("x\ny", "control character"), ('a"b', "quote"), (object(), "must be a number"),
])
def test_bad_values_from_outside(value, message):
    (err,) = errors_of("specs/mobilenet_v1.arch", alpha=value)
    assert message in err.message and "alpha" in err.message


# ---------------------------------------------------------------- the documentation

def test_docs_limits_states_the_budgets_as_they_are():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "limits.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in doc.splitlines() if line.startswith("| ") and line.count("|") >= 4}
    assert rows["spec file size"] == f"{limits.MAX_FILE_BYTES >> 20} MiB"
    assert rows["spec with includes"] == \
        f"{limits.MAX_TOTAL_BYTES >> 20} MiB, {limits.MAX_FILES} files"
    assert rows["syntax depth"] == str(limits.MAX_SYNTAX_DEPTH)
    assert rows["number literal"] == f"{limits.MAX_LITERAL_DIGITS} digits"
    assert rows["expression integers"] == f"{limits.MAX_INT_BITS} bits"
    assert rows["nesting"] == str(limits.MAX_NESTING)
    assert rows["block calls"] == f"{limits.MAX_BLOCK_DEPTH} deep"
    assert rows["nodes"] == f"{limits.MAX_NODES:,}"
    assert rows["build cache"] == f"{limits.MAX_BUILD_CACHE_BYTES >> 30} GiB"
    assert rows["elaboration steps"] == f"{limits.MAX_STEPS:,}"
    assert rows["tensor dimension"] == "2³¹ − 1" and limits.MAX_DIM == 2**31 - 1
    assert rows["tensor size"] == "2⁴⁰ elements" and limits.MAX_ELEMENTS == 2**40
    assert rows["settings"] == f"{limits.MAX_SETTINGS:,}"
    assert rows["errors"] == str(limits.MAX_ERRORS)
    assert rows["table rows"] == f"{limits.MAX_TABLE_ROWS:,}"
    assert rows["shape on a command line"] == f"{limits.MAX_INPUT_RANK} dimensions"
    assert rows["training image side"] == str(limits.MAX_SCALE)
    assert rows["training epochs"] == f"{limits.MAX_EPOCHS:,}"
    assert rows["loader workers"] == str(limits.MAX_WORKERS)
    assert rows["torch threads"] == f"{limits.MAX_THREADS:,}"
    assert rows["image cache"] == "1 TiB" and limits.MAX_CACHE_MIB == 1 << 20
    syntax = importlib.import_module("archdsl.parser").MAX_SYNTAX_ERRORS
    assert rows["syntax errors"] == \
        f"{syntax}, within {limits.MAX_SYNTAX_REPARSE_BYTES >> 20} MiB re-parsed"


# ---------------------------------------------------------------- output of large networks

def test_rich_tables_are_capped_and_text_formats_are_not():
    from rich.console import Console

    from archdsl import report, writers
    stats = archdsl.load(HEAD + "relu; sigmoid\n" * 700).stats()  # 1,400 layers
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(report.layer_table(stats))
    shown = console.export_text()
    assert "… and 400 more layers, not shown (all of them: --format csv, markdown or json)" \
        in " ".join(shown.split())
    assert len(writers.to_csv([stats], per_layer=True).splitlines()) == 1 + 1400


def test_matching_long_repetitive_sequences_is_not_quadratic():
    from archdsl.sequences import matching_pairs, merge_order
    a = ["relu", "sigmoid"] * 12_000 + ["end"]
    b = ["sigmoid", "relu"] * 12_000 + ["end"]
    t = time.perf_counter()
    pairs = matching_pairs(a, b)
    merged = merge_order([f"s{i}" for i in range(30_000)], [f"s{i}" for i in range(1, 30_001)])
    assert time.perf_counter() - t < 5  # difflib: minutes
    assert pairs == [(len(a) - 1, len(b) - 1)]  # the one key unique on both sides
    assert merged == [f"s{i}" for i in range(30_001)]

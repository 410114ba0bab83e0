"""Security regressions (issue #13) that need no backend: the parser's tables ship with the
package (nothing is unpickled from the temporary folder), output paths that are links,
devices or inputs are refused, and spec text never reaches the terminal as markup or control
codes."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archdsl import grammar_tables
from archdsl.cli import app

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner()


def _python(code: str, tmp: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


# ---------------------------------------------------------------- the parser's tables

def test_the_shipped_tables_match_the_grammar():
    assert grammar_tables.read() is not None, (
        "archdsl/grammar_tables.json was not made from the current grammar.lark (or by this "
        "Lark): run `python -m archdsl.grammar_tables` and commit the file")


def test_the_shipped_tables_parse_as_the_grammar_does():
    shipped, built = grammar_tables.load(), grammar_tables.build()
    for spec in sorted((ROOT / "specs").glob("*.arch")):
        text = spec.read_text(encoding="utf-8")
        assert shipped.parse(text) == built.parse(text), spec.name


class _Plant:
    """Unpickling this touches the file `marker`: what an attacker's cache file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_lark_cache_is_never_read(tmp_path):
    """Lark's cache=True unpickles $TMPDIR/.lark_cache_<user>_<sha>_<py>.tmp, a name anyone can
    predict and plant. Plant one (at the name Lark itself writes), check that it would run
    code, and that archdsl never reads it."""
    make = ("import sys; from lark import Lark; from archdsl.grammar_tables import GRAMMAR\n"
            "Lark(GRAMMAR.read_text(encoding='utf-8'), parser='lalr', propagate_positions=True,"
            " maybe_placeholders=True, cache=True)")
    assert _python(make, tmp_path).returncode == 0
    (cache,) = tmp_path.glob(".lark_cache*")
    marker = tmp_path / "pwned"
    planted = cache.read_bytes().split(b"\n", 1)[0] + b"\n" + pickle.dumps(_Plant(marker))
    cache.write_bytes(planted)
    assert _python(make, tmp_path).returncode == 0 and marker.exists()  # the plant works
    marker.unlink()
    cache.write_bytes(planted)  # Lark wrote a good cache over it
    spec = tmp_path / "net.arch"
    spec.write_text("arch net\ninput 3x8x8\nconv3-4; gap; FC-2\n")
    result = _python("from archdsl.cli import main; main()", tmp_path, "check", str(spec))
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([cache.name, "net.arch"])


# ---------------------------------------------------------------- what reaches the terminal

MARKUP = ('arch m(s = "[link=https://evil.example]click[/link]", t = "[/x]", u = "a|b :smile:")\n'
          "input 3x8x8\nconv3-4; gap; FC-2\n")
# tables show the parameters given (not the defaults): give the same strings on the command line
GIVEN = ["--set", "s=[link=https://evil.example]click[/link]", "--set", "t=[/x]",
         "--set", "u=a|b :smile:"]


@pytest.fixture
def markup_spec(tmp_path):
    spec = tmp_path / "m.arch"
    spec.write_text(MARKUP)
    return spec


@pytest.mark.parametrize("args", [[], ["--per-layer"], ["-f", "markdown"], ["-f", "csv"]])
def test_strings_in_specs_are_not_markup(markup_spec, args):
    result = RUNNER.invoke(app, ["stats", str(markup_spec), *args, *GIVEN],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output  # no OSC-8 hyperlink, no style
    if args == ["--per-layer"]:
        assert "[link=https://evil.example]click[/link]" in result.output
    elif args == ["-f", "markdown"]:
        assert 'u="a\\|b :smile:"' in result.output  # an escaped pipe: the row keeps its cells
    else:
        assert "[/x]" in result.output and ":smile:" in result.output


def test_diff_and_table_are_not_markup(markup_spec, tmp_path):
    other = tmp_path / "n.arch"
    other.write_text(MARKUP.replace("arch m(", "arch n(").replace("FC-2", "FC-3"))
    for args in (["diff", str(markup_spec), str(other)], ["table", str(markup_spec), *GIVEN]):
        result = RUNNER.invoke(app, args, env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output


@pytest.mark.parametrize("value", ["x\narch evil\ninput 1x1x1", 'x"', "a\x1b[2Jb"])
def test_set_cannot_forge_spec_text(markup_spec, value):
    result = RUNNER.invoke(app, ["format", str(markup_spec), "--set", f"s={value}"])
    assert result.exit_code == 1
    assert "cannot hold a quote or a control character" in result.output
    assert "arch evil" not in result.output.replace("\\n", "\n").split("error")[0]
    assert "\x1b" not in result.output


def test_control_characters_in_spec_text(tmp_path):
    spec = tmp_path / "c.arch"
    for text, message in (
            (b'arch c(s = "a\x1b]8;;x\x07b")  # \x1b[31m red\r\ninput 3x8x8\ncnv3\n',
             "a string cannot hold control characters"),
            (b'arch c  # \x1b[2J\x00\ninput 3x8x8\ncnv3\x00\n', "unexpected character `\u2400`"),
            (b'arch c\ninput 3x8x8\ncnv3  # \x1b[2J\x00\n', "cnv3  # \u241b[2J\u2400")):
        spec.write_bytes(text)
        result = RUNNER.invoke(app, ["check", str(spec)])
        assert result.exit_code == 1 and message in result.output
        assert not set(result.output) & {"\x1b", "\x00", "\x07", "\r"}


def test_an_error_message_from_a_spec_is_not_markup(tmp_path):
    spec = tmp_path / "e.arch"
    spec.write_text('arch e\ninput 3x8x8\nFC-{error("[bold red]boom[/] [/x]")}\n')
    result = RUNNER.invoke(app, ["check", str(spec)])
    assert result.exit_code == 1 and "[bold red]boom[/] [/x]" in result.output


# ---------------------------------------------------------------- output paths (archdsl.atomic)

NET = "arch net\ninput 3x8x8\nconv3-4; gap; FC-2\n"


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "net.arch"
    path.write_text(NET)
    return path


def test_graph_never_writes_onto_its_input_a_link_or_a_device(spec, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "link.dot").symlink_to(victim)
    (tmp_path / "lib.arch").write_text("block b { relu }\n")
    spec.write_text('include "lib.arch"\n' + NET)
    cases = [(spec, "is one of this command's inputs"),
             (tmp_path / "lib.arch", "is one of this command's inputs"),
             (tmp_path / "link.dot", "is a symbolic link"),
             ("/dev/null", "not a regular file"),
             (tmp_path, "is a folder"),
             (spec / "x.dot", "is a file, not a folder")]
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    for target, message in cases:
        result = RUNNER.invoke(app, ["graph", str(spec), "-o", f"{target}"])
        assert result.exit_code == 1 and message in result.output, (target, result.output)
        assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    result = RUNNER.invoke(app, ["graph", str(spec), "-o", str(tmp_path / "out" / "g.dot")])
    assert result.exit_code == 0 and (tmp_path / "out" / "g.dot").read_text().startswith("digraph")


def test_a_pair_of_outputs_is_replaced_together(tmp_path, monkeypatch):
    from archdsl import atomic
    a, b = tmp_path / "x.so", tmp_path / "x.so.json"
    a.write_text("old a")
    b.write_text("old b")
    real = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", second_fails)
    with pytest.raises(OSError, match="No space"):
        with atomic.atomic_paths([a, b]) as (ta, tb):
            ta.write_text("new a")
            tb.write_text("new b")
    monkeypatch.setattr(atomic.os, "replace", real)
    assert (a.read_text(), b.read_text()) == ("old a", "old b")  # the first one undone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.so", "x.so.json"]


def test_an_interrupted_write_leaves_nothing(tmp_path):
    from archdsl.atomic import atomic_path
    target = tmp_path / "out.svg"
    target.write_text("good")
    for exc in (KeyboardInterrupt(), SystemExit(143), RuntimeError("boom")):
        with pytest.raises(type(exc)):
            with atomic_path(target) as tmp:
                tmp.write_text("half")
                raise exc
    assert target.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["out.svg"]


def test_sigterm_unwinds_through_the_atomic_writer(spec, tmp_path):
    """main() turns SIGTERM into SystemExit: temporary files are removed on the way out."""
    code = ("import os, signal, sys\n"
            "from archdsl import drawing\n"
            "real = drawing.atomic_path\n"
            "import contextlib\n"
            "@contextlib.contextmanager\n"
            "def slow(path, inputs=()):\n"
            "    with real(path, inputs) as tmp:\n"
            "        tmp.write_text('half')\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        yield tmp\n"
            "drawing.atomic_path = slow\n"
            "from archdsl.cli import main\n"
            "main()\n")
    result = _python(code, tmp_path, "graph", str(spec), "-o", str(tmp_path / "g.dot"))
    assert result.returncode == 143 and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.arch"]

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

from archdsl import grammar_tables

ROOT = Path(__file__).resolve().parents[2]


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

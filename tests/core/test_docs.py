"""The docs tell the truth about the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_zoo_table_is_generated_from_the_specs():
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "zoo_table.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert command in readme


def test_language_reference_lists_every_activation_spelling():
    from archdsl.ops import attachable, spellings
    text = (ROOT / "docs" / "language.md").read_text()
    row = next(line for line in text.splitlines() if "| activations |" in line)
    assert row.split("`")[1].split() == spellings(attachable("act"))


def test_attribute_errors_list_every_activation_spelling():
    import pytest

    from archdsl.api import load
    from archdsl.errors import ArchErrors
    from archdsl.ops import attachable, spellings
    with pytest.raises(ArchErrors) as info:
        load("arch a\ninput 3x8x8\nconv3-4 act=sliu\n")
    listed = info.value.errors[0].message.split("one of: ")[1].split(", ")
    assert listed == ["none"] + [w for w in spellings(attachable("act")) if w.isidentifier()]
    assert "silu" in listed and "`silu`" in info.value.errors[0].hint


def _section(path: str, title: str) -> str:
    text = (ROOT / path).read_text()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_gate_examples_mean_the_same_under_the_usual_defaults():
    # language.md's squeeze-and-excitation (gate/mul) and DenseNet (dense) examples, copied
    # into a network with `defaults norm=bn act=relu`, must not gain a norm or an activation
    from archdsl.api import load
    block = _section("docs/language.md", "Branches and joins").split("```")[1]
    lines = [ln for ln in block.splitlines() if ln.startswith(("gate", "mul", "dense"))]
    assert len(lines) == 3
    for line in lines:
        code = line.split("#")[0].strip()
        ops = [[n.op for n in load(f"arch t\ninput 64x8x8\n{d}{code}\n").graph.nodes]
               for d in ("", "defaults norm=bn act=relu\n")]
        assert ops[0] == ops[1], line
        assert "sigmoid" in ops[0] or "concat" in ops[0]


def test_every_expression_function_is_documented():
    from archdsl.expr import FUNCTIONS
    section = _section("docs/language.md", "Expressions")
    assert [f for f in FUNCTIONS if f"`{f}`" not in section and f"`{f}(" not in section] == []


def test_json_schema_names_the_ops_that_make_no_units():
    from archdsl.ops import OPS
    row = next(ln for ln in (ROOT / "docs" / "json-schema.md").read_text().splitlines()
               if ln.startswith("| `layers[].units`"))
    listed = {w for w in row.split("`")[1::2] if w in OPS}
    assert listed == {n for n, op in OPS.items() if not op.makes_units and op.name != "input"}


def test_readme_fast_tier_is_the_slow_marker_that_pyproject_registers():
    readme = (ROOT / "README.md").read_text()
    assert 'python -m pytest -q -p no:cacheprovider -m "not slow"' in readme
    assert '"slow: ' in (ROOT / "pyproject.toml").read_text()
    import importlib.util
    spec = importlib.util.spec_from_file_location("suite_conftest", ROOT / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    for entry in conftest.SLOW:  # no stale entries: each names a file, and a test in it
        path, _, test = entry.partition("::")
        assert (ROOT / path).exists(), entry
        assert not test or f"def {test}(" in (ROOT / path).read_text(), entry


def test_language_reference_shows_every_op():
    import re

    from archdsl.ops import OPS
    section = _section("docs/language.md", "Layers")
    written = [w.lower() for code in re.findall(r"`([^`]*)`", section)
               for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", code)]
    missing = [n for n, op in OPS.items() if op.in_syntax
               and not any(w == n or (w.startswith(n) and w[len(n):].isdigit()) for w in written)]
    assert missing == []

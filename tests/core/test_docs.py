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
    from archdsl.ops import ACTIVATIONS, spellings
    text = (ROOT / "docs" / "language.md").read_text()
    row = next(line for line in text.splitlines() if "| activations |" in line)
    assert row.split("`")[1].split() == spellings(ACTIVATIONS)


def test_attribute_errors_list_every_activation_spelling():
    import pytest

    from archdsl.api import load
    from archdsl.errors import ArchErrors
    from archdsl.ops import ACTIVATIONS, spellings
    with pytest.raises(ArchErrors) as info:
        load("arch a\ninput 3x8x8\nconv3-4 act=sliu\n")
    listed = info.value.errors[0].message.split("one of: ")[1].split(", ")
    assert listed == ["none"] + [w for w in spellings(ACTIVATIONS) if w.isidentifier()]
    assert "silu" in listed and info.value.errors[0].hint == "did you mean `silu`?"

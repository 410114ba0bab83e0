"""CLI conventions (issue #14, item 7): --version, shell completion, readable metavars, one
install hint, a diff legend that tells its sides apart."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from archdsl.cli import _App, app

SPECS = Path(__file__).parents[2] / "specs"
COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]
runner = CliRunner(env={"COLUMNS": "100", "NO_COLOR": "1"})


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"archdsl {version('archdsl')}\n"


def test_shell_completion_is_offered():
    out = runner.invoke(app, ["--help"]).stdout
    assert "--install-completion" in out and "--show-completion" in out
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="archdsl")
    assert script.exit_code == 0 and "_ARCHDSL_COMPLETE=complete_bash" in script.stdout, (
        script.output)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_python_types(command):
    out = runner.invoke(app, [command, "--help"]).stdout
    # choices read fine (<macs|flops>); Python types do not (<list[Path]>, <str>, <path>)
    assert not [m for m in re.findall(r"<[^>]*>", out) if "|" not in m], out


def test_a_new_command_gets_metavars_without_saying_so():
    # a command added later (by @app.command, as any) shows names, not Python types
    new = _App(rich_markup_mode=None)  # as archdsl.cli.app

    @new.command()
    def train(spec: Path, epochs: Annotated[int, typer.Option(min=1)] = 3,
              out: Annotated[Path | None, typer.Option()] = None,
              fast: Annotated[bool, typer.Option("--fast")] = False) -> None:
        """Train."""

    @new.command()
    def other() -> None:
        """A second command, so that `train` is a subcommand."""

    out = CliRunner(env={"COLUMNS": "100"}).invoke(new, ["train", "--help"]).stdout
    assert "--epochs EPOCHS" in out and "--out OUT" in out and "SPEC" in out
    assert not [m for m in re.findall(r"<[^>]*>", out) if "|" not in m], out


def test_help_does_not_offer_sweeps_where_one_architecture_is_built():
    for command in ("graph", "export", "compile", "diff"):
        out = " ".join(runner.invoke(app, [command, "--help"]).stdout.split())
        assert "one row per value" not in out and "NAME=v1,v2" not in out, command
    stats = " ".join(runner.invoke(app, ["stats", "--help"]).stdout.split())
    assert "NAME=v1,v2,... gives one row per value" in stats


def test_the_install_hint_is_given_once():
    code = ("import sys; sys.modules['tvm'] = None; sys.modules['tvm_ffi'] = None\n"
            "from archdsl.cli import main\n"
            f"sys.argv = ['archdsl', 'compile', {str(SPECS / 'lenet5.arch')!r}, '-o', 'x.so']\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("pip install") == 1, result.stderr
    assert result.stderr.startswith("error: the TVM backend needs Apache TVM")  # said first
    assert "Traceback" not in result.stderr


SMALL = "arch small(w = 8)\ninput 3x16x16\nconv3-{w}\ngap\nFC-10\n"


@pytest.mark.parametrize("args, legend", [
    (["small.arch", "--set-b", "w=16"], "A = small (w=8), B = small (w=16)"),
    (["small.arch", "--set-b", "w=8"], "A = small, B = small (w=8)"),  # the same network
    (["old/small.arch", "small.arch"], "A = small (old/small.arch), B = small (small.arch)"),
])
def test_the_diff_legend_tells_the_sides_apart(tmp_path, monkeypatch, args, legend):
    monkeypatch.chdir(tmp_path)
    Path("old").mkdir()
    Path("small.arch").write_text(SMALL)
    Path("old/small.arch").write_text(SMALL.replace("gap", "conv3-{w}\ngap"))
    result = runner.invoke(app, ["diff", *args])
    assert result.exit_code == 0, result.output
    assert legend in " ".join(result.stdout.split())

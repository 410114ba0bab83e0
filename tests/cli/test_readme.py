"""The README's commands and examples, checked (issue #14): every `archdsl` command it shows
parses; the ones that need no backend run, at 80 columns, and their tables fit; the error it
shows is the error archdsl prints; the Python example runs and its commented values hold."""

from __future__ import annotations

import glob
import re
import shlex
import shutil
from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.main import get_command
from typer.testing import CliRunner

from archdsl.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CORE = {"check", "stats", "format", "table", "diff", "graph", "ops"}  # need no backend


def code_block(after: str, lang: str = "") -> str:
    return README.split(after, 1)[1].split(f"```{lang}\n", 1)[1].split("```", 1)[0]


def readme_commands() -> list[list[str]]:
    """Every `archdsl ...` command line in the README (comments stripped), shell-split, from
    its command on (global options such as `--plugin FILE` before it are checked apart)."""
    lines = [ln.split("#")[0] for ln in README.splitlines()]
    found = [m for ln in lines for m in re.findall(r"(?:^|&& )(archdsl [^&]*?)\s*$", ln)]
    commands = []
    for c in found:
        args = shlex.split(c)[1:]
        while args and args[0].startswith("--"):  # a global option and its value
            get_command(app).make_context("archdsl", args[:2] + ["ops"])
            args = args[2:]
        commands.append(args)
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_the_main_job_and_every_command():
    assert ["stats", "specs/vgg.arch"] in COMMANDS
    shown = {c[0] for c in COMMANDS}
    assert {cmd.name or cmd.callback.__name__.rstrip("_") for cmd in app.registered_commands} \
        <= shown


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_readme_command_parses(args):
    group = get_command(app)
    command = group.commands[args[0]]
    command.make_context(args[0], [a for a in args[1:]])  # raises on a bad option or value


# --latency compiles with TVM (tests/backends/test_tvm_latency.py runs it)
RUN = [c for c in COMMANDS if c[0] in CORE and "--latency" not in c]


@pytest.mark.parametrize("args", RUN, ids=[" ".join(c) for c in RUN])
def test_readme_core_commands_run_at_80_columns(args, tmp_path, monkeypatch):
    if args[0] == "graph" and shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    expanded = [p for a in args for p in (sorted(glob.glob(a)) if "*" in a else [a])]
    result = CliRunner(env={"COLUMNS": "80", "NO_COLOR": "1"}).invoke(app, expanded)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    if args[0] in ("stats", "table", "diff") and "--format" not in args and "-f" not in args:
        assert max(cell_len(ln) for ln in result.stdout.splitlines()) <= 80, result.stdout


def test_the_readme_error_is_what_archdsl_prints(tmp_path, monkeypatch):
    shown = code_block("Errors look like a compiler's")
    first = shown.splitlines()[0]
    path, line = first.split(":")[0], int(first.split(":")[1])
    monkeypatch.chdir(tmp_path)
    Path(path).parent.mkdir(parents=True)
    source = ["arch bad", "input 3x32x32", "defaults act=relu", "cnv3-64 x2", "maxpool"]
    assert source[line - 1] == shown.splitlines()[1].strip()
    Path(path).write_text("\n".join(source) + "\n")
    result = CliRunner(env={"NO_COLOR": "1"}).invoke(app, ["check", path])
    assert result.exit_code == 1
    assert result.stderr.startswith(shown)


def test_the_readme_python_example_runs():
    torch = pytest.importorskip("torch")
    code = code_block("## Using it", "python")
    import archdsl
    pretrained = archdsl.load(ROOT / "specs" / "resnet.arch", arch="resnet18").to_torch()
    namespace = {"pretrained_state_dict": pretrained.state_dict()}
    checked = 0
    for line in code.splitlines():
        stmt, _, comment = line.partition("#")
        stmt, comment = stmt.strip(), comment.strip()
        if not stmt:
            continue
        stmt = stmt.replace('"specs/', f'"{ROOT}/specs/')
        if re.fullmatch(r"[\d_]+", comment):  # `expression  # value`: the value must hold
            assert eval(stmt, namespace) == int(comment), line
            checked += 1
        else:
            exec(stmt, namespace)
    assert checked >= 1
    model = namespace["model"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)

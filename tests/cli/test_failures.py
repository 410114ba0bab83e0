"""Every command's failure paths (issue #13): a missing or broken spec, a bad option, Ctrl-C, a
full disk, even a bug - each ends with a message and exit status 1 (2 for a command line click
rejects, 130 for Ctrl-C, 70 for a bug), never a traceback, and an artifact written before is
left exactly as it was."""

from __future__ import annotations

import errno
import importlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archdsl import atomic

CLI = importlib.import_module("archdsl.cli")
SHELL = importlib.import_module("archdsl.cli_shell")  # where every command loads its specs
GOOD = "arch net\ninput 3x8x8\nc1: conv3-4 act=relu\ngap\nfc: FC-3\n"
BROKEN = "arch net\ninput 3x8x8\nc1: conv3-4 act=relu )\n"


def _commands(tmp: Path) -> dict[str, list[str]]:
    spec = str(tmp / "net.arch")
    return {
        "check": ["check", spec],
        "stats": ["stats", spec, "--per-layer"],
        "format": ["format", spec],
        "table": ["table", spec],
        "diff": ["diff", spec, spec],
        "graph": ["graph", spec, "-o", str(tmp / "out.dot")],
        "export": ["export", spec, "-f", "torchscript", "-o", str(tmp / "out.pt")],
        "compile": ["compile", spec, "-o", str(tmp / "out.so")],
    }


NEEDS = {"export": "torch", "compile": "tvm"}
ARTIFACTS = {"graph": ["out.dot"], "export": ["out.pt"], "compile": ["out.so", "out.so.json"]}


@pytest.fixture(params=list(_commands(Path("."))))
def command(request, tmp_path):
    name = request.param
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    (tmp_path / "net.arch").write_text(GOOD)
    for artifact in ARTIFACTS.get(name, []):  # a good old artifact
        (tmp_path / artifact).write_text(f"old {artifact}")
    return name, _commands(tmp_path)[name], tmp_path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def invoke(args: list[str]):
    return CliRunner().invoke(CLI.app, args, env={"COLUMNS": "120"})


def _ends_cleanly(result, status: int, message: str, folder: Path, before: dict) -> None:
    assert result.exit_code == status, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert _files(folder) == before  # nothing written, nothing half-written, nothing replaced


def test_a_broken_spec(command):
    name, args, tmp = command
    (tmp / "net.arch").write_text(BROKEN)
    before = _files(tmp)
    _ends_cleanly(invoke(args), 1, "net.arch:3:22: error: unexpected `)`", tmp, before)


def test_a_missing_spec(command):
    name, args, tmp = command
    (tmp / "net.arch").unlink()
    before = _files(tmp)
    _ends_cleanly(invoke(args), 1, "No such file", tmp, before)


def test_an_unknown_architecture_and_a_bad_setting(command):
    name, args, tmp = command
    before = _files(tmp)
    arch, set_ = ("--arch-b", "--set-b") if name == "diff" else ("--arch", "--set")
    _ends_cleanly(invoke([*args, arch, "nosuch"]), 1, "nosuch", tmp, before)
    _ends_cleanly(invoke([*args, set_, "x"]), 1, "--set expects NAME=VALUE", tmp, before)
    _ends_cleanly(invoke([*args, set_, "nosuch=1"]), 1, "has no parameter `nosuch`", tmp,
                  before)


def test_an_unknown_option_is_a_usage_error(command):
    name, args, tmp = command
    before = _files(tmp)
    _ends_cleanly(invoke([*args, "--no-such-option"]), 2, "No such option", tmp, before)


@pytest.mark.parametrize("exc, status, message", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (OSError(errno.ENOSPC, "No space left on device"), 1, "No space left on device"),
    (MemoryError(), 1, "out of memory"),
    (RuntimeError("a bug"), 70, "internal error: RuntimeError: a bug"),
])
def test_interrupted_out_of_space_out_of_memory_or_a_bug(command, monkeypatch, exc, status,
                                                         message):
    name, args, tmp = command

    def fail(*a, **k):
        raise exc

    monkeypatch.setattr(SHELL, "_load", fail)
    before = _files(tmp)
    _ends_cleanly(invoke(args), status, message, tmp, before)


def test_a_write_that_fails_keeps_the_old_artifact(command, monkeypatch):
    name, args, tmp = command
    if name not in ARTIFACTS:
        pytest.skip(f"{name} writes no file")

    def full(tmps, paths):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_replace_all", full)
    before = _files(tmp)
    _ends_cleanly(invoke(args), 1, "No space left on device", tmp, before)


def test_ops_takes_no_arguments():
    result = invoke(["ops", "extra"])
    assert result.exit_code == 2 and "Traceback" not in result.output

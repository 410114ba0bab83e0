"""The failure paths of the commands that run PyTorch — `train`, `eval`, `import` — as
tests/cli/test_failures.py tests the others (issue #13): a broken or missing spec, Ctrl-C, a
full disk, running out of memory, even a bug, each end with a message and exit status 1 (130
for Ctrl-C, 70 for a bug), never a traceback, and what was written before is left exactly as
it was."""

from __future__ import annotations

import errno
import importlib
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("torchvision")

from archdsl import atomic  # noqa: E402

CLI = importlib.import_module("archdsl.cli")
SHELL = importlib.import_module("archdsl.cli_shell")
SPEC = "arch net(classes = 10)\ninput 1x8x8\nc1: conv3-4 act=relu\ngap\nfc: FC-{classes}\n"
BROKEN = "arch net(classes = 10)\ninput 1x8x8\nc1: conv3-4 act=relu )\n"
MODULE = ("from torch import nn\n"
          "def build():\n"
          "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
          "                         nn.Flatten(), nn.Linear(4, 2))\n")


def _commands(tmp: Path) -> dict[str, list[str]]:
    spec = str(tmp / "net.arch")
    return {
        "train": ["train", spec, "--data", "digits", "--out", str(tmp / "run"), "--plot",
                  "none", "--epochs", "1", "--max-steps", "1", "--workers", "0",
                  "--threads", "1"],
        "eval": ["eval", spec, "--weights", str(tmp / "w.safetensors"), "--data", "digits",
                 "--confusion", str(tmp / "conf.png")],
        "import": ["import", "failmod_nets:build", "--input", "3x8x8", "-o",
                   str(tmp / "imported.arch")],
    }


# what each writes, with an old version of it in place
OLD = {"train": "run/labels.txt", "eval": "conf.png", "import": "imported.arch"}


@pytest.fixture(params=list(OLD))
def command(request, tmp_path, monkeypatch):
    name = request.param
    (tmp_path / "net.arch").write_text(SPEC)
    if name == "eval":
        from safetensors.torch import save_file

        import archdsl
        model = archdsl.load(SPEC).to_torch(logits=True)
        save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    if name == "import":
        (tmp_path / "failmod_nets.py").write_text(MODULE)
        monkeypatch.chdir(tmp_path)
        monkeypatch.delitem(sys.modules, "failmod_nets", raising=False)
    old = tmp_path / OLD[name]
    old.parent.mkdir(exist_ok=True)
    old.write_text(f"old {old.name}")
    return name, _commands(tmp_path)[name], tmp_path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def _ends_cleanly(args, status: int, message: str, folder: Path) -> None:
    before = _files(folder)
    result = CliRunner().invoke(CLI.app, args, env={"COLUMNS": "120"})
    assert result.exit_code == status, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert _files(folder) == before  # nothing written, nothing half-written, nothing replaced


def test_a_broken_or_missing_spec(command):
    name, args, tmp = command
    if name == "import":
        (tmp / "failmod_nets.py").write_text("def build(:\n")
        _ends_cleanly(args, 1, "SyntaxError", tmp)
        return
    (tmp / "net.arch").write_text(BROKEN)
    _ends_cleanly(args, 1, "net.arch:3:22: error: unexpected `)`", tmp)
    (tmp / "net.arch").unlink()
    _ends_cleanly(args, 1, "No such file", tmp)


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

    if name == "import":
        from archdsl.backends import load_backend
        monkeypatch.setattr(load_backend("pytorch.importer"), "import_source", fail)
    else:
        monkeypatch.setattr(SHELL, "_load", fail)
    _ends_cleanly(args, status, message, tmp)


def test_a_write_that_fails_keeps_the_old_artifact(command, monkeypatch):
    name, args, tmp = command

    def full(tmps, paths):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_replace_all", full)
    _ends_cleanly(args, 1, "No space left on device", tmp)

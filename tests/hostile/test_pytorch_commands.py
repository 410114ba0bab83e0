"""Hostile input to the commands that run PyTorch (issue #13, extended to what came after it):
`import`, `train`, `eval` and `run --labels`. Each case runs in a child process with limits
on its memory, CPU and wall time (driver.py) and must end with an error that says what is
wrong (exit 1), never a traceback, having executed nothing it was not asked to and written
over nothing.

The cases run in two batches, each a driver process that imports PyTorch once and forks a
child per case: the importer's batch never imports torchvision before a case does (a
`torchvision.py` planted in the folder the command runs in must not be what it finds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "hostile" / "driver.py"
TORCH_MEMORY = 16 << 30  # address space per case: torch's libraries map several GiB
SPEC = "arch k(s = x, classes = 10)\ninput 1x8x8\nconv3-4; relu; gap; FC-{classes}\n"
PLANTED = ("import pathlib\npathlib.Path('PLANTED_RAN').write_text('x')\n"
           "raise SystemExit(3)\n")


def _run(cases: list[dict], cwd: Path, preload: str) -> dict[str, dict]:
    for case in cases:
        case["memory"] = TORCH_MEMORY
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb",
           "ARCHDSL_DRIVER_PRELOAD": preload}
    done = subprocess.run([sys.executable, str(DRIVER)], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=600, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["id"]: r for r in json.loads(done.stdout)}


def _check(cases: list[dict], results: dict[str, dict]) -> None:
    failures = []
    for case in cases:
        r = results[case["id"]]
        out = r["stdout"] + r["stderr"]
        want = case.get("status", 1)
        problems = [f"status {r['status']}, expected {want}"] if r["status"] != want else []
        if "Traceback" in out or "internal error" in out or "frame #" in out:
            problems.append("a traceback")
        if case.get("expect", "") not in (out if want == 0 else r["stderr"]):
            problems.append(f"no {case['expect']!r} in the output")
        if case.get("absent") and case["absent"] in out:
            problems.append(f"{case['absent']!r} in the output")
        if "\x1b" in out:
            problems.append("an escape sequence on the terminal")
        if r["seconds"] > 60:
            problems.append(f"took {r['seconds']} s")
        if problems:
            failures.append(f"{case['id']}: {'; '.join(problems)}\n{out[-1500:]}")
    assert not failures, "\n\n".join(failures)


def test_import(tmp_path):
    (tmp_path / "torchvision.py").write_text(PLANTED)
    (tmp_path / "badmod.py").write_text("raise ValueError('broken at import')\n")
    (tmp_path / "goodmod.py").write_text(
        "from torch import nn\n"
        "def build(width=4):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2))\n")
    (tmp_path / "keep.arch").write_text(SPEC)
    (tmp_path / "link.arch").symlink_to("keep.arch")
    cases = [
        # torchvision: and timm: name a library's model: the folder is not searched for it
        {"id": "planted torchvision.py", "args": ["import", "torchvision:no_such_model"],
         "expect": "torchvision has no model"},
        # package.module:callable is the user's code, from the folder, by explicit request
        {"id": "user code", "args": ["import", "goodmod:build", "--input", "3x8x8",
                                     "--args", "width=6", "-o", "good.arch"],
         "expect": "wrote good.arch", "status": 0},
        {"id": "-o onto the module", "args": ["import", "goodmod:build", "--input", "3x8x8",
                                              "-o", "goodmod.py"], "expect": "inputs"},
        {"id": "user code that fails", "args": ["import", "badmod:build", "--input", "3x8x8"],
         "expect": "importing `badmod` failed: ValueError: broken at import"},
        {"id": "no module name", "args": ["import", ":build", "--input", "3x8x8"],
         "expect": "failed"},
        {"id": "huge --input", "args": ["import", "goodmod:build", "--input",
                                        "3x99999999999x9"], "expect": "limit on one dimension"},
        {"id": "deep --input", "args": ["import", "goodmod:build", "--input", "x".join(
            ["1"] * 50)], "expect": "expects a shape"},
        {"id": "--input of 5000 digits", "args": ["import", "goodmod:build", "--input",
                                                  "9" * 5000], "expect": "expects a shape"},
        {"id": "-o onto a link", "args": ["import", "goodmod:build", "--input", "3x8x8",
                                          "-o", "link.arch"], "expect": "symbolic link"},
        {"id": "-o under a file", "args": ["import", "goodmod:build", "--input", "3x8x8",
                                           "-o", "keep.arch/x.arch"], "expect": "not a folder"},
        # a segmentation model's backbone weights are not downloaded (nor unpickled)
        {"id": "no backbone weights", "args": ["import", "torchvision:lraspp_mobilenet_v3_large",
                                               "--input", "3x32x32"],
         "expect": "archdsl has no op", "absent": "Download"},
        {"id": "--args overflowing C++", "args": ["import", "goodmod:build", "--input",
                                                  "3x8x8", "--args", "width=" + "9" * 30],
         "expect": "failed"},
    ]
    results = _run(cases, tmp_path, "pytorch.importer")
    _check(cases, results)
    assert not (tmp_path / "PLANTED_RAN").exists(), "the planted torchvision.py ran"
    assert (tmp_path / "keep.arch").read_text() == SPEC
    assert "arch build" in (tmp_path / "good.arch").read_text()
    assert (tmp_path / "goodmod.py").read_text().startswith("from torch import nn")


def _png(path: Path) -> None:
    from PIL import Image
    Image.new("L", (8, 8), 128).save(path)


def test_train_eval_and_run(tmp_path):
    (tmp_path / "k.arch").write_text(SPEC)
    os.link(tmp_path / "k.arch", tmp_path / "k.png")  # the spec under a picture's name
    run = tmp_path / "run"
    run.mkdir()
    os.link(tmp_path / "k.arch", run / "best.safetensors")  # ... and a weights file's
    os.mkfifo(tmp_path / "fifo.txt")
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(4):  # class a's images are FIFOs: reading one would wait forever
            _png(data / cls / f"{i}.png") if cls == "b" else os.mkfifo(data / cls / f"{i}.png")
    named = tmp_path / "named"  # class names are folder names, from whoever made the data
    for cls in ("[bold]x", "e\x1b[31mred", "[link=https://e.example]y"):
        (named / cls).mkdir(parents=True)
        for i in range(4):
            _png(named / cls / f"{i}.png")
    (tmp_path / "k3.arch").write_text(SPEC.replace("classes = 10", "classes = 3"))
    train = ["train", "k.arch", "--data", "digits", "--out", "fresh", "--plot", "none"]
    cases = [
        {"id": "train onto its spec", "args": ["train", "k.arch", "--data", "digits",
                                               "--out", "run"], "expect": "inputs"},
        {"id": "train into a file", "args": ["train", "k.arch", "--data", "digits",
                                             "--out", "k.arch"], "expect": "not a folder"},
        {"id": "a FIFO among the images", "args": ["train", "k.arch", "--data", "data",
                                                   "--out", "fifo-run", "--plot", "none",
                                                   "--batch-size", "2", "--workers", "0"],
         "expect": "FIFO"},
        {"id": "eval picture onto its spec", "args": [
            "eval", "k.arch", "--weights", "w.safetensors", "--data", "digits",
            "--confusion", "k.png"], "expect": "inputs"},
        {"id": "eval picture not a picture", "args": [
            "eval", "k.arch", "--weights", "w.safetensors", "--data", "digits",
            "--confusion", "run/w.safetensors"], "expect": "a picture is written as"},
        {"id": "train on hostile class names", "args": [
            "train", "k3.arch", "--data", "named", "--out", "named-run", "--plot", "none",
            "--epochs", "1", "--batch-size", "2", "--workers", "0", "--val-fraction", "0.5"],
         "status": 0, "expect": ""},
        {"id": "eval hostile class names", "args": [
            "eval", "k3.arch", "--weights", "named-run/best.safetensors", "--data", "named",
            "--confusion", "none"], "status": 0, "expect": "[bold]x"},
        {"id": "run --labels FIFO", "args": ["run", "none.so", "--labels", "fifo.txt"],
         "expect": "FIFO"},
        {"id": "run --labels /dev/zero", "args": ["run", "none.so", "--labels", "/dev/zero"],
         "expect": "device"},
    ] + [
        {"id": f"train {' '.join(extra)}", "args": train + extra, "expect": expect}
        for extra, expect in [
            (["--lr", "inf"], "finite"), (["--lighting", "nan"], "finite"),
            (["--scale", "1e9"], "at most 8"), (["--test-scale", "1e300"], "at most 8"),
            (["--epochs", "999999999999"], "at most"),
            (["--workers", "100000"], "--workers must be"),
            (["--workers", "-1"], "--workers must be"),
            (["--threads", "100000"], "--threads must be"),
            (["--max-steps", "-5"], "--max-steps"), (["--checkpoint-every", "-1"], "every"),
            (["--cache", "--cache-limit", "99999999999"], "--cache-limit"),
            (["--nproc", "100000"], "cores"),
            (["--batch-size", "1000000000"], "needs at least"),
        ]
    ]
    results = _run(cases, tmp_path, "pytorch.train")
    _check(cases, results)
    assert (tmp_path / "k.arch").read_text() == SPEC
    assert not (tmp_path / "fresh").exists()  # every bad setting is refused before the run


def test_labels_are_read_as_text_not_terminal_codes(tmp_path):
    from archdsl.cli_train import read_labels
    path = tmp_path / "labels.txt"
    path.write_bytes(b"cat\x1b]8;;https://evil\x07x\ndog\x00\n")
    names = read_labels(path)
    assert len(names) == 2
    assert not any(c in "".join(names) for c in "\x1b\x07\x00")


def test_the_python_api_checks_its_outputs_too(tmp_path):
    pytest.importorskip("torchvision")
    from archdsl.backends.pytorch import setup, train
    from archdsl.backends.pytorch.evaluate import EvalConfig, run_eval
    from archdsl.errors import ArchError
    assert {train.CHECKPOINT, train.BEST, train.LABELS} <= set(setup.RUN_FILES)
    spec = tmp_path / "k.arch"
    spec.write_text(SPEC)
    (tmp_path / "run").mkdir()
    os.link(spec, tmp_path / "run" / "metrics.json")
    config = train.TrainConfig(spec=str(spec), data="digits", out=tmp_path / "run", plot="")
    with pytest.raises(ArchError, match="inputs"):
        train.train(config)
    os.link(spec, tmp_path / "k.svg")
    with pytest.raises(ArchError, match="inputs"):
        run_eval(EvalConfig(spec=str(spec), weights=tmp_path / "w.safetensors", data="digits",
                            confusion=tmp_path / "k.svg"))
    assert spec.read_text() == SPEC


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    """A run of one step (its folder is copied by each test that tampers with it)."""
    pytest.importorskip("torchvision")
    from archdsl.backends.pytorch import train
    from archdsl.backends.pytorch.recipe import recipe
    tmp = tmp_path_factory.mktemp("one-step")
    spec = tmp / "k.arch"
    spec.write_text(SPEC)
    config = train.TrainConfig(spec=str(spec), data="digits", out=tmp / "run", plot="",
                               recipe=recipe("alexnet", epochs=1, batch_size=64), max_steps=1,
                               workers=0, threads=1)
    train.train(config)
    return config


@pytest.mark.parametrize("tamper", [
    lambda m: m["scheduler"].update(optimizer=1),      # would replace the scheduler's optimizer
    lambda m: m["scheduler"].update(best="worst"),
    lambda m: m.update(scheduler=[1, 2]),
    lambda m: m["optimizer"]["param_groups"][0].update(lr="fast"),
    lambda m: m["optimizer"].update(param_groups=[]),
])
def test_a_tampered_checkpoint_is_refused_on_resume(one_step_run, tmp_path, tamper):
    """A run's folder may come from elsewhere: its checkpoint's JSON may only hold the
    fields the run's own optimizer and scheduler have, each of the kind they have."""
    import dataclasses
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    from archdsl.backends.pytorch import train
    from archdsl.errors import ArchError
    out = tmp_path / "run"
    shutil.copytree(one_step_run.out, out)
    path = out / train.CHECKPOINT
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["archdsl"])
    tamper(meta)
    save_file(tensors, str(path), metadata={**header, "archdsl": json.dumps(meta)})
    with pytest.raises(ArchError, match="does not fit this run"):
        train.train(dataclasses.replace(one_step_run, out=out, resume=True, max_steps=2))


def test_a_batch_too_large_for_the_gpu_is_refused_before_it_is_made(monkeypatch):
    """On a GPU the bound is its free memory (torch.cuda.mem_get_info), not the machine's."""
    import types

    import torch

    import archdsl
    from archdsl.backends.pytorch import setup
    from archdsl.backends.pytorch.recipe import recipe
    from archdsl.errors import ArchErrors
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 30, 2 << 30))
    arch = archdsl.load(SPEC)
    env = types.SimpleNamespace(device=torch.device("cuda", 0), world=1)
    setup._check_fits(arch, recipe("alexnet", batch_size=64), env)  # a few MiB: fits
    with pytest.raises(ArchErrors, match="cuda:0 has 1.0 GiB available"):
        setup._check_fits(arch, recipe("alexnet", batch_size=10**8), env)

"""`archdsl train` and `archdsl eval` on a tiny network and the digits: the run's files,
exact resumption, DDP against one process, and bad input that writes no checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("sklearn")
pytest.importorskip("safetensors")

from typer.testing import CliRunner  # noqa: E402

from archdsl.backends.pytorch import checkpoint as ckpt  # noqa: E402
from archdsl.backends.pytorch.distributed import StopFlag  # noqa: E402
from archdsl.backends.pytorch.recipe import recipe  # noqa: E402
from archdsl.backends.pytorch.train import TrainConfig, train  # noqa: E402
from archdsl.cli import app  # noqa: E402
from archdsl.errors import ArchError, ArchErrors  # noqa: E402

TINY = """arch tiny(classes = 10)
input 1x8x8
conv3-6 act=relu
maxpool
FC-{classes} act=none
"""
runner = CliRunner()


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.arch"
    path.write_text(TINY)
    return path


def config(spec, out, **kw) -> TrainConfig:
    r = recipe("alexnet", epochs=kw.pop("epochs", 2), batch_size=kw.pop("batch", 64),
               lr=kw.pop("lr", 0.05))
    # one torch thread whatever the workers: more threads sum in another order (1e-8 apart)
    return TrainConfig(spec=str(spec), data="digits", recipe=r, out=out, plot="",
                       workers=kw.pop("workers", 0), threads=1, **kw)


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    kind, _, tensors = ckpt.read(path)
    return ckpt.model_state(kind, tensors)


def same(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0)
                                        for k in a)


def test_a_run_writes_weights_checkpoint_metrics_and_labels(spec, tmp_path):
    events = []
    result = train(config(spec, tmp_path / "run", epochs=2),
                   lambda kind, info: events.append(kind))
    out = tmp_path / "run"
    assert result.stopped == "done" and result.epochs == 2 and result.best_top1 > 0.5
    assert {"start", "step", "epoch", "checkpoint"} <= set(events)
    kind, meta, tensors = ckpt.read(out / "best.safetensors")
    assert kind == ckpt.WEIGHTS and set(tensors) == {"0.weight", "0.bias", "3.weight",
                                                       "3.bias"}
    assert meta["classes"] == [str(i) for i in range(10)] and meta["arch"] == "tiny"
    assert len(meta["graph_sha256"]) == 64 and len(meta["stats"]["mean"]) == 1
    rows = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and 0 < rows[-1]["val_top5"] <= 1
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step,lr,")
    assert (out / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    assert not list(out.glob(".*part*"))  # no temporary files left


def test_resume_from_a_mid_epoch_checkpoint_ends_with_the_same_weights(spec, tmp_path):
    whole = train(config(spec, tmp_path / "a", epochs=2))
    # stop mid-epoch 1 (25 steps an epoch), continue, stop mid-epoch 2, continue
    first = train(config(spec, tmp_path / "b", epochs=2, max_steps=10))
    assert first.stopped == "max-steps" and first.steps == 10
    meta = ckpt.read_meta(tmp_path / "b" / "checkpoint.safetensors")[1]
    assert (meta["epoch"], meta["in_epoch"]) == (0, 10)
    assert train(config(spec, tmp_path / "b", epochs=2, max_steps=30, resume=True)).steps == 30
    last = train(config(spec, tmp_path / "b", epochs=2, resume=True))
    assert last.steps == whole.steps == 50
    a = model_weights(tmp_path / "a" / "checkpoint.safetensors")
    b = model_weights(tmp_path / "b" / "checkpoint.safetensors")
    assert same(a, b)
    assert (json.loads((tmp_path / "a" / "metrics.json").read_text())
            == json.loads((tmp_path / "b" / "metrics.json").read_text())
            or _same_but_timing(tmp_path))


def _same_but_timing(tmp_path) -> bool:
    rows = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab"]
    drop = ("images_per_s", "seconds", "elapsed")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows[0]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows[1]]


def test_an_interrupted_run_checkpoints_and_resumes_exactly(spec, tmp_path):
    dropout = TINY.replace("maxpool\n", "maxpool\ndropout(0.5)\n")  # uses the generator
    spec.write_text(dropout)
    whole = train(config(spec, tmp_path / "a", epochs=1, workers=1))
    stop = StopFlag()

    def ctrl_c_at_step_7(kind, info):
        if kind == "step" and info["step"] == 7:
            stop.set()
    cut = train(config(spec, tmp_path / "b", epochs=1, workers=1), ctrl_c_at_step_7, stop)
    assert cut.stopped == "interrupted" and cut.steps == 7
    train(config(spec, tmp_path / "b", epochs=1, resume=True))  # 0 workers: all the same
    assert same(model_weights(tmp_path / "a" / "checkpoint.safetensors"),
                model_weights(tmp_path / "b" / "checkpoint.safetensors"))
    assert whole.steps == 25


def test_resume_refuses_other_settings_and_a_fresh_run_keeps_an_old_one(spec, tmp_path):
    train(config(spec, tmp_path / "r", epochs=1, max_steps=2))
    before = (tmp_path / "r" / "checkpoint.safetensors").read_bytes()
    with pytest.raises(ArchError, match="already holds a run"):
        train(config(spec, tmp_path / "r", epochs=1))
    with pytest.raises(ArchError, match="lr: 0.05 in the checkpoint, 0.1 now"):
        train(config(spec, tmp_path / "r", epochs=1, lr=0.1, resume=True))
    assert (tmp_path / "r" / "checkpoint.safetensors").read_bytes() == before
    with pytest.raises(ArchError, match="--resume: there is no"):
        train(config(spec, tmp_path / "none", resume=True))


def test_a_spec_without_classes_is_a_located_error(tmp_path):
    path = tmp_path / "fixed.arch"
    path.write_text("arch fixed\ninput 1x8x8\nconv3-4\nFC-7\n")
    with pytest.raises(ArchErrors) as info:
        train(config(path, tmp_path / "run"))
    text = info.value.render()
    assert "fixed.arch:1:1" in text and "no `classes` parameter" in text
    assert "the data has 10 classes" in text and "arch fixed(classes = 10)" in text
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
    # without `classes`, an output that already has one score per class is fine
    path.write_text("arch fixed\ninput 1x8x8\nconv3-4\nFC-10\n")
    assert train(config(path, tmp_path / "ok", epochs=1, max_steps=1)).steps == 1


def test_a_corrupt_image_stops_the_run_without_a_checkpoint_or_is_skipped(spec, tmp_path):
    from test_train_transforms import make_folder
    root = make_folder(tmp_path / "d", classes=[str(i) for i in range(10)], per=4)
    (root / "3" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    base = dict(batch=8, epochs=1, val_fraction=0.25)
    cfg = config(spec, tmp_path / "run", **base)
    cfg.data = str(root)
    with pytest.raises(ArchError, match=r"cannot read image .*bad\.png"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
    assert not list((tmp_path / "run").glob(".*part*"))
    cfg.bad_images = "skip"
    seen = []
    result = train(cfg, lambda kind, info: seen.append(info) if kind == "bad_image" else None)
    assert result.stopped == "done" and [Path(i["path"]).name for i in seen] == ["bad.png"]


def test_a_failed_checkpoint_write_leaves_the_good_one(spec, tmp_path, monkeypatch):
    train(config(spec, tmp_path / "r", epochs=1, max_steps=3))
    path = tmp_path / "r" / "checkpoint.safetensors"
    good = path.read_bytes()

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")
    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        train(config(spec, tmp_path / "r", epochs=1, max_steps=5, resume=True))
    assert path.read_bytes() == good and not list(path.parent.glob(".*part*"))


def test_ddp_on_two_gloo_processes_matches_one_process(spec, tmp_path):
    """The same global batch (32) on 1 process and on 2 (16 each): the same weights."""
    train(config(spec, tmp_path / "one", batch=32, max_steps=6))
    proc = subprocess.run(
        [sys.executable, "-m", "archdsl", "train", str(spec), "-o", str(tmp_path / "two"),
         "--nproc", "2", "--data", "digits", "--batch-size", "32", "--max-steps", "6",
         "--plot", "none", "--lr", "0.05", "--workers", "0", "--threads", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 processes on cpu" in proc.stdout and proc.stdout.count("training tiny") == 1
    one = ckpt.read(tmp_path / "one" / "checkpoint.safetensors")
    two = ckpt.read(tmp_path / "two" / "checkpoint.safetensors")
    assert one[1]["world"] == 1 and two[1]["world"] == 2 and two[1]["step"] == 6
    assert "rng.cpu.1" in two[2]  # both processes' generators are kept
    assert same(ckpt.model_state(*one[::2]), ckpt.model_state(*two[::2]), atol=1e-6)
    momentum = [k for k in one[2] if k.startswith("optimizer.")]
    assert momentum and all(torch.allclose(one[2][k], two[2][k], atol=1e-6) for k in momentum)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_user_error_in_a_distributed_run_is_told_by_the_first_process(
        spec, tmp_path, monkeypatch, capsys, rank):
    from archdsl.cli_train import _worker
    monkeypatch.setenv("RANK", rank)
    cfg = config(spec, tmp_path / "run")
    cfg.data = str(tmp_path / "missing")
    with pytest.raises(SystemExit) as info:
        _worker(cfg)
    assert info.value.code == 1
    told = capsys.readouterr().err
    assert ("error: no such folder" in told) == (rank == "0") and "Traceback" not in told


def test_cli_train_then_eval(spec, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(spec), "--data", "digits", "-o", str(out),
                                 "--epochs", "1", "--batch-size", "64", "--lr", "0.05",
                                 "--plot", "svg", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "recipe alexnet: 1 epochs of 25 steps" in result.output
    assert "no horizontal flips" in result.output and "best validation top-1" in result.output
    assert (out / "curves.svg").read_text().startswith("<?xml")
    picture = tmp_path / "confusion.png"
    result = runner.invoke(app, ["eval", str(spec), "--weights", str(out / "best.safetensors"),
                                 "--data", "digits", "--confusion", str(picture)])
    assert result.exit_code == 0, result.output
    assert "the 10% held out for validation (seed 0)" in result.output
    assert "per-class accuracy" in result.output and picture.stat().st_size > 1000
    result = runner.invoke(app, ["eval", str(spec), "--weights", str(out / "best.safetensors"),
                                 "--data", "digits", "--ten-crop", "--format", "json",
                                 "--confusion", "none"])
    report = json.loads(result.output)
    assert report["images"] == 179 and report["views"] == "ten-crop" and 0 < report["top1"] <= 1
    assert sum(map(sum, report["confusion"])) == 179


def test_eval_refuses_weights_that_do_not_fit(spec, tmp_path):
    train(config(spec, tmp_path / "run", epochs=1, max_steps=1))
    other = tmp_path / "other.arch"
    other.write_text(TINY.replace("conv3-6", "conv3-5"))
    result = runner.invoke(app, ["eval", str(other), "--weights",
                                 str(tmp_path / "run" / "checkpoint.safetensors"),
                                 "--data", "digits", "--confusion", "none"])
    assert result.exit_code == 1
    assert "do not fit" in result.output and "0.weight: [5, 1, 3, 3] vs [6, 1, 3, 3]" in \
        result.output
    assert "Traceback" not in result.output


def test_run_prints_class_names_from_a_labels_file(spec, tmp_path):
    pytest.importorskip("tvm")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"digit {i}\n" for i in range(10)))
    lib = tmp_path / "tiny.so"
    assert runner.invoke(app, ["compile", str(spec), "-o", str(lib)]).exit_code == 0
    result = runner.invoke(app, ["run", str(lib), "--labels", str(labels), "--top", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.count("digit ") == 3
    labels.write_text("a\nb\n")
    result = runner.invoke(app, ["run", str(lib), "--labels", str(labels)])
    assert result.exit_code == 1 and "names 2 classes; the library gives 10" in result.output


def test_modern_recipe_interrupted_resumes_exactly_with_adamw_and_cosine(spec, tmp_path):
    def cfg(out, **kw):
        c = config(spec, out, epochs=2, **kw)
        c.recipe = recipe("modern", epochs=2, batch_size=64, warmup_epochs=1)
        return c
    whole = train(cfg(tmp_path / "a"))
    first = train(cfg(tmp_path / "b", max_steps=35))
    assert first.steps == 35
    kind, meta, tensors = ckpt.read(tmp_path / "b" / "checkpoint.safetensors")
    assert any(k.endswith(".exp_avg_sq") for k in tensors)  # AdamW's state is kept
    assert meta["scheduler"]["last_epoch"] == 35  # the cosine schedule steps per batch
    train(cfg(tmp_path / "b", resume=True))
    rows = json.loads((tmp_path / "a" / "metrics.json").read_text())
    # the rate at each epoch's end: warmed up after one epoch, annealed to 0 after two
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 0.0])
    assert whole.stopped == "done" and _same_but_timing(tmp_path)
    assert same(model_weights(tmp_path / "a" / "checkpoint.safetensors"),
                model_weights(tmp_path / "b" / "checkpoint.safetensors"))


def test_plateaus_divide_the_rate_and_end_the_run(spec, tmp_path):
    # a learning rate too small to change anything: the error stalls from the first epoch
    c = config(spec, tmp_path / "run", epochs=9, lr=1e-6)
    c.recipe = c.recipe.replace(patience=0, lr_drops=1)
    drops = []
    result = train(c, lambda kind, info: drops.append(info["lr"]) if kind == "lr" else None)
    assert result.stopped == "plateau" and result.epochs == 3
    assert drops == pytest.approx([1e-7, 1e-8])


def test_cache_dropout_and_amp_settings(spec, tmp_path):
    from test_train_transforms import make_folder
    root = make_folder(tmp_path / "d", classes=[str(i) for i in range(10)], per=3)
    spec.write_text(TINY.replace("maxpool\n", "maxpool\ndropout(0.5)\n"))
    runs = {}
    for cache in (False, True):
        c = config(spec, tmp_path / f"run{cache}", batch=8, epochs=1, val_fraction=0.34,
                   cache=cache)
        c.data, c.recipe = str(root), c.recipe.replace(dropout=0.25)
        runs[cache] = train(c)
    from archdsl.backends.pytorch.distributed import Env
    from archdsl.backends.pytorch.setup import prepare
    c.out = tmp_path / "prepared"
    run = prepare(c, Env(0, 1, 0, torch.device("cpu")), None)
    assert [m.p for m in run.model.modules() if isinstance(m, torch.nn.Dropout)] == [0.25]
    assert same(model_weights(tmp_path / "runFalse" / "checkpoint.safetensors"),
                model_weights(tmp_path / "runTrue" / "checkpoint.safetensors"))
    c.cache_limit_mb, c.out = 0, tmp_path / "tiny-cache"
    with pytest.raises(ArchError, match="--cache-limit"):
        train(c)
    c.amp, c.out = "fp16", tmp_path / "fp16"
    with pytest.raises(ArchErrors, match="fp16 needs a GPU"):
        train(c)
    c.amp, c.cache, c.out = "bf16", False, tmp_path / "bf16"
    assert train(c).stopped == "done"  # bfloat16 autocast runs on CPUs too


def test_broken_checkpoints_are_clear_errors(spec, tmp_path):
    from safetensors.torch import save_file
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArchError, match="cannot read .*checkpoint.safetensors"):
        train(config(spec, out, resume=True))
    save_file({"x": torch.zeros(1)}, str(out / "checkpoint.safetensors"),
              metadata={"format": "archdsl-checkpoint", "archdsl": "{oops"})
    with pytest.raises(ArchError, match="not valid JSON"):
        train(config(spec, out, resume=True))
    save_file({"x": torch.zeros(1)}, str(out / "checkpoint.safetensors"))
    with pytest.raises(ArchError, match="not a training checkpoint"):
        train(config(spec, out, resume=True))


def test_an_input_that_is_not_an_image_is_a_located_error(tmp_path):
    path = tmp_path / "vector.arch"
    path.write_text("arch vector(classes = 10)\ninput 64\nFC-{classes}\n")
    with pytest.raises(ArchErrors, match=r"takes \[64\]; training and evaluation give it "
                                         r"images"):
        train(config(path, tmp_path / "run"))


def test_an_unwritable_run_folder_is_an_error_not_a_traceback(spec, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = runner.invoke(app, ["train", str(spec), "--data", "digits", "-o",
                                 str(tmp_path / "file" / "run"), "--max-steps", "1"])
    assert result.exit_code == 1 and "cannot write" in result.output
    assert "Traceback" not in result.output


def test_cli_dense_evaluation(spec, tmp_path):
    train(config(spec, tmp_path / "run", epochs=1, max_steps=3))
    weights = str(tmp_path / "run" / "checkpoint.safetensors")
    result = runner.invoke(app, ["eval", str(spec), "--weights", weights, "--data", "digits",
                                 "--dense", "--confusion", "none"])
    assert result.exit_code == 0, result.output
    assert "dense: the whole image and its mirror" in result.output
    assert "half the views are mirror images" in result.output
    result = runner.invoke(app, ["eval", str(spec), "--weights", weights, "--data", "digits",
                                 "--dense", "--ten-crop"])
    assert result.exit_code == 1 and "choose one" in result.output


def test_a_checkpoint_with_tampered_metadata_is_a_clear_error(spec, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file
    train(config(spec, tmp_path / "run", epochs=1, max_steps=2))
    path = tmp_path / "run" / "checkpoint.safetensors"
    with safe_open(str(path), framework="pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    for key, value in (("sums", None), ("optimizer", {"param_groups": []})):
        meta = json.loads(header["archdsl"])
        meta[key] = value
        save_file(tensors, str(path), metadata={**header, "archdsl": json.dumps(meta)})
        with pytest.raises(ArchError, match="incomplete|does not fit this run"):
            train(config(spec, tmp_path / "run", epochs=1, resume=True))

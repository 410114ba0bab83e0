"""`archdsl stats` with training facts: --training, --batch, --freeze, --train-last,
--by-kind; the table, JSON and CSV (no torch: the counts come from archdsl/ops/'s declarations;
tests/backends/test_training_memory.py checks them against PyTorch)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

import archdsl
from archdsl.cli import app
from archdsl.training import costs, trainable_names

SPECS = Path(__file__).parents[2] / "specs"


def run(*args: str) -> str:
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    return r.stdout


def test_training_columns_and_their_definitions():
    out = run("stats", str(SPECS / "resnet18.arch"), "--training")
    for header in ("Trainable", "Train MACs", "Kept MB", "Adam MB"):
        assert header in out
    assert "Kept = activations kept for backward" in out and "3 × forward" in out
    assert "5,324,206,080" in out  # forward + backward: 3 × 1,814,073,344 less the images'


def test_batch_scales_the_per_batch_columns_only():
    one = json.loads(run("stats", str(SPECS / "resnet18.arch"), "--training", "-f", "json"))
    many = json.loads(run("stats", str(SPECS / "resnet18.arch"), "--batch", "32", "-f", "json"))
    a, b = one["training"], many["training"]
    assert b["batch"] == 32 and b["kept_bytes_per_image"] == a["kept_bytes_per_image"]
    per_batch = a["kept_bytes"] - a["kept_bytes_per_image"]  # batch norm's batch statistics
    assert b["kept_bytes"] == 32 * a["kept_bytes_per_image"] + per_batch
    weights = b["adam_bytes"] - b["kept_bytes"]
    assert weights == a["adam_bytes"] - a["kept_bytes"] == 4 * 4 * 11_689_512  # p, g, m, v


def test_freeze_keeps_the_head_trainable_and_almost_nothing_for_backward():
    data = json.loads(run("stats", str(SPECS / "resnet18.arch"), "--freeze", "-f", "json"))
    t = data["training"]
    assert t["trainable"] == 513_000 and t["trainable"] + t["frozen"] == 11_689_512
    assert t["kept_bytes_per_image"] == 512 * 4  # the pooled features the FC reads
    assert t["train_macs"] == 1_814_073_344 + 512_000  # forward, and the FC's weight gradient
    fc = next(x for x in data["layers"] if x["name"] == "fc")
    assert fc["trainable"] == 513_000 and fc["kept_bytes"] == 2048
    last = json.loads(run("stats", str(SPECS / "resnet18.arch"), "--freeze", "--train-last",
                          "1", "-f", "json"))["training"]
    assert last["trainable"] == 513_000 + 8_393_728  # and layer4


def test_per_layer_and_rolled_up_rows_add_up():
    arch = archdsl.load(SPECS / "resnet50.arch")
    t = costs(arch.graph, 4, trainable_names(arch.graph, last_stages=2))
    for depth in ([], ["--depth", "1"]):
        rows = list(csv.DictReader(io.StringIO(run(
            "stats", str(SPECS / "resnet50.arch"), "--freeze", "--train-last", "2",
            "--per-layer", *depth, "-f", "csv"))))
        assert sum(int(r["kept_bytes_per_image"]) for r in rows) == t.kept
        assert sum(int(r["train_macs"]) for r in rows) == t.train_macs
        assert sum(int(r["trainable"]) for r in rows) == t.trainable


def test_by_kind_splits_the_totals():
    data = json.loads(run("stats", str(SPECS / "vit.arch"), "--arch", "vit_b_16", "--by-kind",
                          "-f", "json"))
    kinds = data["kinds"]
    assert {"attention", "linear", "conv", "norm"} <= set(kinds)
    totals = archdsl.load(SPECS / "vit.arch", arch="vit_b_16").stats().totals
    assert sum(k["params"] for k in kinds.values()) == totals["params"]
    assert sum(k["macs"] for k in kinds.values()) == totals["macs"]
    table = run("stats", str(SPECS / "vit.arch"), "--arch", "vit_b_16", "--by-kind")
    assert "attention" in table and "total" in table

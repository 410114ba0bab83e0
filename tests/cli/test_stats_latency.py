"""`archdsl stats --latency`: what the core decides before any backend is loaded (which
columns, which tables, TVM missing). tests/backends/test_tvm_latency.py measures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from archdsl.analysis import analyse
from archdsl.api import load
from archdsl.cli import app
from archdsl.columns import COLUMNS
from archdsl.latency import Latency, definition
from archdsl.report import cell, comparison_table

ROOT = Path(__file__).parents[2]
LENET = str(ROOT / "specs" / "lenet5.arch")


def fails(*args: str) -> str:
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    return r.stderr


def test_the_column_needs_a_measurement_and_a_comparison_table():
    assert "latency_ms column is measured: it needs --latency TARGET" in \
        fails("stats", LENET, "--columns", "params,latency_ms")
    for table in ("--per-layer", "--by-kind"):
        assert "--latency measures whole networks" in \
            fails("stats", LENET, "--latency", "llvm", table)
    # --wide shows every counted column; latency is measured, only with --latency
    out = CliRunner().invoke(app, ["stats", LENET, "--wide"], env={"COLUMNS": "250"}).stdout
    assert "Latency" not in out and "latency_ms" not in out and "more columns" not in out
    out = CliRunner().invoke(app, ["stats", LENET], env={"COLUMNS": "250"}).stdout
    assert "more columns: units" in out and "latency_ms" not in out


def test_a_measured_latency_is_a_column_with_its_definition():
    s = analyse(load(LENET).graph)
    s.extra["latency"] = Latency(0.0412, 0.04, runs=4855, min_runs=20, warmup=3,
                                 target="llvm -mcpu=znver3", threads=2)
    table = comparison_table([s], [COLUMNS["params"], COLUMNS["latency_ms"]])
    assert table.headers == ["Params", "Latency ms"] and table.values == [[61706, 0.0412]]
    assert cell(COLUMNS["latency_ms"], 12.345) == "12.35"
    assert cell(COLUMNS["latency_ms"], 0.0412) == "0.0412"
    assert cell(COLUMNS["latency_ms"], None) == "—"  # a point that failed
    assert definition([s]) == ("Latency ms: median of at least 20 timed runs (of a fast "
                               "network, as many as fill 0.2 s) after 3 warm-up runs, batch 1, "
                               "float32, random weights, compiled with TVM (archdsl's default "
                               "schedules) for llvm -mcpu=znver3, 2 threads")


def test_without_tvm_the_message_names_the_extra():
    code = ("import sys\nsys.modules['tvm'] = None\n"
            f"sys.argv = ['archdsl', 'stats', r'{LENET}', '--latency', 'llvm']\n"
            "from archdsl.cli import main\nmain()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 1, r.stderr
    assert "pip install 'archdsl[tvm]'" in r.stdout + r.stderr
    assert "Traceback" not in r.stderr

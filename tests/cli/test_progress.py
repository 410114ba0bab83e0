"""Long steps print plain progress lines when stderr is not a terminal (CI logs, pipes):
issue #14, item 6."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

from archdsl import progress


@dataclass
class Event:  # the fields of backends.tvm.tune.TuneEvent that a display reads
    kind: str
    database: Path = Path("/db")
    tasks: int = 19
    tasks_to_tune: int = 19
    tasks_done: int = 0
    trials: int = 0
    trials_total: int = 0
    best_ms: float | None = None
    message: str = ""
    kernels: tuple = field(default=())


def test_plain_lines_for_a_silent_step(monkeypatch):
    monkeypatch.setattr(progress, "EVERY", 0.1)
    out = io.StringIO()
    with progress.PlainDisplay("compiling net for cuda with TVM", out) as shown:
        time.sleep(0.45)  # a long compile says nothing by itself
        shown.stage("writing the library")
    lines = out.getvalue().splitlines()
    assert lines[0] == "compiling net for cuda with TVM..."
    still = [ln for ln in lines if "still running" in ln]
    assert len(still) >= 2 and still[0].startswith("compiling net for cuda with TVM (still")
    assert lines[-1].startswith("compiling net for cuda with TVM: writing the library (")


def test_plain_lines_while_tuning(monkeypatch):
    monkeypatch.setattr(progress, "EVERY", 3600.0)  # only what the events say
    out = io.StringIO()
    with progress.PlainDisplay("compiling net", out) as shown:
        shown(Event("start", trials_total=64))
        for t in range(1, 65):
            shown(Event("trials", trials=t, trials_total=64, tasks_done=t // 8,
                        best_ms=30.0 - t / 10))
        shown(Event("note", message="the GPU cannot be measured here"))
        shown(Event("applied"))
    text = out.getvalue()
    assert "tuning 19 of 19 kernels (64 trials); log in /db/logs/tuning.log" in text
    assert "compiling net: tuning, 64/64 trials, kernels 8/19, est. 23.60 ms" in text
    assert "note: the GPU cannot be measured here" in text
    assert text.count("trials, kernels") == 1  # not one line per batch of trials
    assert text.rstrip().splitlines()[-1].startswith("compiling net: building (")
    assert shown.event.kind == "applied"


def test_a_pipe_gets_the_plain_display(monkeypatch):
    monkeypatch.setattr(progress, "_dup_stderr", lambda: io.StringIO())
    assert isinstance(progress.display("x"), progress.PlainDisplay)

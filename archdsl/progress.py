"""What a long step (a TVM compile, tuning, an ONNX export) shows while it runs, on stderr.

In a terminal: a live line (spinner, bar, elapsed time) that disappears when the step ends.
Anywhere else — a CI log, a pipe, a file — a live line shows nothing at all, and a 90-second
CUDA compile looked hung; there the step prints plain lines instead: one when it starts,
one per stage, and every `EVERY` seconds one saying it is still at it.

A display is a context manager; it receives tuning's `TuneEvent`s as a callable (the
`progress` callback of `Architecture.compile`) and keeps the last in `event`; `stage(what)`
names the step it is in now, and `step(done, total, what)` counts the steps of a sweep (the
points of `stats --latency`) with a bar.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

EVERY = 15.0  # seconds between "still working" lines when stderr is not a terminal


def display(title: str) -> RichDisplay | PlainDisplay:
    """The display for stderr as it is now: live in a terminal, plain lines elsewhere."""
    # TVM's C++ code writes to fd 2, which tuning sends to its log: show this on a copy
    stream = _dup_stderr()
    own = stream is not sys.stderr
    if stream.isatty():
        return RichDisplay(title, stream, own)
    return PlainDisplay(title, stream, own)


def _console(stream: TextIO):
    """The rich console both displays write through (no markup from the text they show)."""
    from rich.console import Console
    return Console(file=stream, highlight=False, soft_wrap=True, emoji=False)


class _Display:
    def __init__(self, title: str, stream: TextIO, own: bool = False) -> None:
        self.title, self.stream, self.own = title, stream, own  # own: close it at the end
        self.event: Any = None

    def __enter__(self):
        self.started = time.monotonic()
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        if self.own:
            self.stream.close()

    def __call__(self, event: Any) -> None:
        self.event = event
        if event.kind == "note":
            self.note(event.message)
        elif event.kind == "start" and event.trials_total:
            self.note(f"tuning {event.tasks_to_tune} of {event.tasks} kernels "
                      f"({event.trials_total} trials); log in "
                      f"{event.database / 'logs' / 'tuning.log'}", plain=True)
            self.tuning(event)
        elif event.kind == "trials":
            self.tuning(event)
        elif event.kind == "compare":
            self.stage(event.message)
        elif event.kind == "applied":
            self.stage("building")

    @staticmethod
    def trials_text(event: Any) -> str:
        best = f", est. {event.best_ms:.2f} ms" if event.best_ms else ""
        return (f"{event.trials}/{event.trials_total} trials, kernels "
                f"{event.tasks_done}/{event.tasks_to_tune}{best}")

    def open(self) -> None: ...
    def close(self) -> None: ...
    def note(self, text: str, plain: bool = False) -> None: ...
    def tuning(self, event: Any) -> None: ...
    def stage(self, what: str) -> None: ...
    def step(self, done: int, total: int, what: str) -> None: ...


class RichDisplay(_Display):
    """A spinner while compiling; while tuning, a bar of trials done of planned, kernels
    done, the estimated network time and the elapsed time (rich, transient)."""

    def open(self) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                  BarColumn(), TextColumn("{task.fields[info]}"),
                                  TimeElapsedColumn(), console=_console(self.stream),
                                  transient=True)
        self._main = self._progress.add_task(self.title, total=None, info="")
        self._tuning: Any = None
        self._progress.start()

    def close(self) -> None:
        self._progress.stop()

    def note(self, text: str, plain: bool = False) -> None:
        self._progress.console.print(text if plain else f"note: {text}", markup=False,
                                     style=None if plain else "yellow")

    def tuning(self, event: Any) -> None:
        if self._tuning is None:
            self._tuning = self._progress.add_task("tuning", total=event.trials_total,
                                                   info="")
        self._progress.update(self._tuning, completed=event.trials,
                              info=self.trials_text(event))

    def stage(self, what: str) -> None:
        if self._tuning is not None:
            self._progress.remove_task(self._tuning)
            self._tuning = None
        self._progress.update(self._main, description=f"{self.title}: {what}")

    def step(self, done: int, total: int, what: str) -> None:
        """Step `done` of `total` (points of a sweep, say): the bar fills as they end."""
        self._progress.update(self._main, total=total, completed=done, info=f"{done}/{total}",
                              description=f"{self.title}: {what}")


class PlainDisplay(_Display):
    """Plain lines: the start, each stage, tuning's progress, and every `EVERY` seconds
    what it is doing and for how long."""

    def open(self) -> None:
        self._what, self._last = "", 0.0
        self._console = _console(self.stream)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._line(f"{self.title}...")
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def close(self) -> None:
        self._stop.set()
        self._ticker.join()

    def _tick(self) -> None:
        while not self._stop.wait(EVERY / 4):
            if time.monotonic() - self._last >= EVERY:
                self._line(f"{self.title}{': ' + self._what if self._what else ''} "
                           f"(still running, {time.monotonic() - self.started:.0f} s)")

    def _line(self, text: str) -> None:
        with self._lock:
            self._last = time.monotonic()
            self._console.print(text, markup=False)
            self.stream.flush()

    def note(self, text: str, plain: bool = False) -> None:
        self._line(text if plain else f"note: {text}")

    def tuning(self, event: Any) -> None:
        self._what = "tuning, " + self.trials_text(event)
        done = event.trials and event.trials >= event.trials_total
        if done or time.monotonic() - self._last >= EVERY:
            self._line(f"{self.title}: {self._what} "
                       f"({time.monotonic() - self.started:.0f} s)")

    def stage(self, what: str) -> None:
        self._what = what
        self._line(f"{self.title}: {what} ({time.monotonic() - self.started:.0f} s)")

    def step(self, done: int, total: int, what: str) -> None:
        self.stage(f"[{min(done + 1, total)}/{total}] {what}")


def _dup_stderr() -> TextIO:
    """A stream on a copy of fd 2 (sys.stderr itself where it has no file descriptor)."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w")
    except (AttributeError, OSError, ValueError):
        return sys.stderr

"""What `archdsl train` and `archdsl eval` show: a live progress bar with images/s and the
time left on a terminal (plain lines every `interval` seconds when stdout is a file or a
pipe), a line per epoch, and the results. Gets the trainer's events; imports no torch."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import printable


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


class TrainDisplay:
    """A callable for the trainer's events (kind, info); a context manager around the run."""

    def __init__(self, quiet: bool = False, console: Console | None = None,
                 interval: float = 30.0) -> None:
        self.quiet = quiet
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.live = self.console.is_terminal and not quiet
        self.interval = interval
        self.progress = None
        self.task = None
        self.info: dict[str, Any] = {}
        self.recent: deque[tuple[float, int]] = deque(maxlen=50)
        self.last_line = 0.0

    def __enter__(self) -> TrainDisplay:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                     console=self.console, transient=True)
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def print(self, text: str, style: str | None = None) -> None:
        if not self.quiet:
            # paths and class names come from the data set: never terminal codes
            self.console.print(printable(text), markup=False, style=style, highlight=False)

    def __call__(self, kind: str, info: dict) -> None:
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None and not self.quiet:
            handler(info)

    def _on_start(self, info: dict) -> None:
        self.info = dict(info, t0=time.perf_counter(), step0=info["step"])
        self.last_line = time.perf_counter()
        procs = f"{info['world']} processes" if info["world"] > 1 else "1 process"
        self.print(f"training {info['arch']} ({info['params']:,} params) on "
                   f"{info['train']:,} images, validating on {info['val']:,}, "
                   f"{info['classes']} classes")
        self.print(f"recipe {info['recipe']}: {info['epochs']} epochs of "
                   f"{info['steps_per_epoch']} steps, batch {info['batch']}; {procs} on "
                   f"{info['device']}, {info['workers']} loader workers and {info['threads']} "
                   "threads each")
        for note in info["notes"]:
            self.print(f"note: {note}", "yellow")
        self._new_task(info["epoch"], info["in_epoch"])

    def _new_task(self, epoch: int, done: int = 0) -> None:
        if self.progress is None or epoch >= self.info["epochs"]:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.info['epochs']}",
                                           total=self.info["steps_per_epoch"], completed=done,
                                           info="")

    def _on_resumed(self, info: dict) -> None:
        self.print(f"resumed from {info['path']} at epoch {info['epoch'] + 1}, "
                   f"step {info['step']}")

    def _rate(self) -> float:
        if len(self.recent) < 2:
            return 0.0
        (t0, _), (t1, _) = self.recent[0], self.recent[-1]
        return sum(n for _, n in list(self.recent)[1:]) / max(t1 - t0, 1e-9)

    def _eta(self, step: int) -> float:
        i = self.info
        done = step - i["step0"]
        total = i["epochs"] * i["steps_per_epoch"]
        return (time.perf_counter() - i["t0"]) / max(done, 1) * (total - step)

    def _on_step(self, info: dict) -> None:
        now = time.perf_counter()
        self.recent.append((now, info["images"]))
        text = (f"loss {info['loss']:.4f} · {self._rate():,.0f} img/s · "
                f"ETA {_clock(self._eta(info['step']))}")
        if self.progress is not None:
            self.progress.update(self.task, completed=info["in_epoch"], info=text)
        elif now - self.last_line >= self.interval:
            self.last_line = now
            self.print(f"epoch {info['epoch'] + 1}/{self.info['epochs']} · step "
                       f"{info['in_epoch']}/{self.info['steps_per_epoch']} · {text}")

    def _on_epoch(self, r: dict) -> None:
        width = len(str(r["epochs"]))
        self.print(f"epoch {r['epoch']:>{width}}/{r['epochs']}  loss {r['train_loss']:.4f} "
                   f"top-1 {_pct(r['train_top1'])} | val loss {r['val_loss']:.4f} top-1 "
                   f"{_pct(r['val_top1'])} top-5 {_pct(r['val_top5'])} | lr {r['lr']:.3g} | "
                   f"{r['images_per_s']:,.0f} img/s, {r['seconds']:.1f} s")
        self.last_line = time.perf_counter()
        self._new_task(r["epoch"])

    def _on_validating(self, info: dict) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=f"epoch {info['epoch'] + 1}/"
                                 f"{self.info['epochs']}: validating on {info['images']:,}")

    def _on_lr(self, info: dict) -> None:
        self.print(f"learning rate ÷10 → {info['lr']:.3g} (validation error stalled; "
                   f"division {info['drops']})")

    def _on_bad_image(self, info: dict) -> None:
        self.print(f"warning: skipped {info['path']}: {info['reason']}", "yellow")

    def _on_note(self, info: dict) -> None:
        self.print(f"note: {info['message']}", "yellow")

    def summary(self, result) -> None:
        why = {"done": f"done: {result.epochs} epochs",
               "plateau": "done: the validation error stalled after the last learning-rate "
                          f"division (epoch {result.epochs})",
               "max-steps": f"stopped after {result.steps} steps (--max-steps)",
               "interrupted": f"interrupted at step {result.steps}: run the same command with "
                              "--resume to go on"}[result.stopped]
        self.print(why, "bold" if result.stopped != "interrupted" else "yellow")
        if result.best_epoch:
            self.print(f"best validation top-1 {_pct(result.best_top1)} at epoch "
                       f"{result.best_epoch}; {result.steps} steps in {_clock(result.seconds)}")
        names = [p.name for p in result.files if p.exists()]
        self.print(f"wrote {result.out}/: {', '.join(names)}")


def print_eval(report, fmt: str = "table", console: Console | None = None) -> None:
    """An evaluation's numbers: a summary, per-class accuracy (the 15 worst classes when there
    are more than 30), notes; or all of it as JSON."""
    console = console or Console(highlight=False, soft_wrap=True)
    s = report.scores
    per_class = [{"class": c, "images": n, "top1": acc, "confused_with": _confused(s, k, report)}
                 for k, (c, (n, acc)) in enumerate(zip(report.classes, s.per_class(),
                                                       strict=True))]
    if fmt == "json":
        out = {"arch": report.arch, "weights": str(report.weights), "data": report.data,
               "images": s.n, "top1": s.top1_accuracy, "top5": s.top5_accuracy,
               "loss": s.mean_loss, "views": report.views, "skipped": s.bad,
               "per_class": per_class, "confusion": s.confusion.tolist(),
               "picture": str(report.picture) if report.picture else None}
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return
    views = {"centre": "centre crop", "ten-crop": "ten crops averaged",
             "dense": "dense: the whole image and its mirror"}[report.views]
    console.print(printable(f"{report.arch} with {report.weights} on {report.data} ({views})"),
                  markup=False)
    console.print(f"top-1 {_pct(s.top1_accuracy)}  top-5 {_pct(s.top5_accuracy)}  "
                  f"(error {_pct(1 - s.top1_accuracy)} / {_pct(1 - s.top5_accuracy)}), "
                  f"loss {s.mean_loss:.4f}, {s.n:,} images", markup=False)
    rows = per_class
    title = "per-class accuracy"
    if len(rows) > 30:
        rows = sorted((r for r in rows if r["images"]), key=lambda r: r["top1"])[:15]
        title = f"the 15 least accurate of {len(per_class)} classes"
    table = Table(title=title, title_justify="left")
    for col, justify in (("class", "left"), ("images", "right"), ("top-1", "right"),
                         ("most often taken for", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        cells = (r["class"], str(r["images"]), "—" if r["top1"] is None else _pct(r["top1"]),
                 r["confused_with"] or "")  # class names are folder names: plain text
        table.add_row(*(Text(printable(c)) for c in cells))
    console.print(table)
    for note in report.notes:
        console.print(printable(f"note: {note}"), markup=False, style="yellow")
    if report.picture:
        console.print(printable(f"wrote {report.picture}"), markup=False)


def _confused(scores, k: int, report) -> str | None:
    """The class that images of class k are most often predicted as (when any are wrong)."""
    row = scores.confusion[k].clone()
    row[k] = 0
    if int(row.sum()) == 0:
        return None
    j = int(row.argmax())
    return f"{report.classes[j]} ({int(row[j])})"

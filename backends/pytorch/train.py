"""Training a spec's network on an image-classification data set with a recipe
(`recipe.py`): SGD or AdamW, the learning rate divided on plateaus or annealed, top-1/top-5 on
a held-out split every epoch, checkpoints that continue exactly, one process or many (DDP).

Exact continuation rests on three things: each sample's augmentation is seeded by (seed,
epoch, index) (`transforms.seeded`), so it does not depend on workers, processes or where a
run restarted; the sampler's order is DistributedSampler's (seed + epoch); and the checkpoint
holds the model, the optimizer, the scheduler, the loss scaler, every process's generator
states, the epoch, the step within it and the epoch's running sums.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import distributed
from .checkpoint import CheckpointError, restore, save_checkpoint, save_weights
from .data import BadImageError, SeededSampler
from .evaluate import Scores, evaluate
from .logs import plot_curves, write_metrics
from .recipe import Recipe
from .setup import prepare

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"
LABELS = "labels.txt"


@dataclass
class TrainConfig:
    """Everything a run is made from; the fields up to `recipe` must match on --resume."""

    spec: str
    arch: str | None = None
    settings: dict = field(default_factory=dict)
    data: str = "digits"
    recipe: Recipe = field(default_factory=Recipe)
    seed: int = 0
    val_fraction: float = 0.1
    out: Path = Path("runs")
    resume: bool = False
    workers: int | None = None  # None: see setup.share_cores
    cache: bool = False
    cache_limit_mb: int = 4096
    bad_images: str = "fail"  # or "skip"
    amp: str | None = None  # bf16 or fp16
    device: str = "auto"
    max_steps: int | None = None
    checkpoint_every: int = 0  # steps; 0: at the end of each epoch only
    flip: bool | None = None  # None: the recipe's, unless mirrored images change class
    plot: str = "png"  # png, svg, pdf or "" for none
    threads: int | None = None


@dataclass
class TrainResult:
    out: Path
    epochs: int
    steps: int
    best_top1: float
    best_epoch: int
    last: dict | None  # the last epoch's metrics row
    seconds: float
    stopped: str  # "done", "plateau", "max-steps" or "interrupted"
    files: list[Path]


Events = Callable[[str, dict], None]


def train(config: TrainConfig, events: Events | None = None,
          stop: distributed.StopFlag | None = None) -> TrainResult:
    env = distributed.setup(config.device)
    try:
        with stop or distributed.StopFlag() as flag:
            return _Trainer(config, env, events or (lambda kind, info: None), flag).fit()
    finally:
        distributed.teardown()


class _Trainer:
    def __init__(self, config: TrainConfig, env: distributed.Env, events: Events,
                 stop: distributed.StopFlag) -> None:
        self.start = time.perf_counter()
        self.config, self.env, self.events, self.stop = config, env, events, stop
        self.reported: set[str] = set()
        self.run = prepare(config, env, self._bad)
        self.recipe = self.run.recipe
        self.model = self.run.model
        self.net = self.model if env.world == 1 else torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        self.optimizer, self.scheduler, self.scaler = self._optimizer()
        self.epoch, self.step, self.in_epoch = 0, 0, 0
        self.sums = {"loss": 0.0, "correct": 0, "n": 0, "seconds": 0.0}
        self.history: list[dict] = []
        self.best = {"top1": -1.0, "loss": float("inf"), "epoch": 0}
        self.drops = 0
        self.elapsed = 0.0  # seconds spent before this process started (a resumed run)
        if config.resume:
            self._restore()

    # --- setup -----------------------------------------------------------------------------

    def _optimizer(self):
        r, params = self.recipe, self.model.parameters()
        if r.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov,
                                  weight_decay=r.weight_decay)
        if r.schedule == "cosine":
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(r, self.run.steps_per_epoch))
        else:  # divide when the validation error (top-1) stops improving
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=r.lr_factor, patience=r.patience,
                threshold=r.plateau_threshold, threshold_mode="abs")
        scaler = torch.amp.GradScaler("cuda") if self.config.amp == "fp16" else None
        return opt, sched, scaler

    def _restore(self) -> None:
        path = self.config.out / CHECKPOINT
        meta, rng = restore(path, self.model, self.optimizer, self.scheduler, self.scaler)
        try:
            self.epoch, self.step, self.in_epoch = (int(meta["epoch"]), int(meta["step"]),
                                                    int(meta["in_epoch"]))
            self.sums = {k: meta["sums"][k] for k in self.sums}
            self.history, self.drops = list(meta["history"]), int(meta["drops"])
            self.best = {**self.best, **meta["best"]}
            self.elapsed = float(meta.get("elapsed", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: its metadata is incomplete ({type(exc).__name__}: "
                                  f"{exc})", None) from None
        if not distributed.set_rng_states(self.env, rng):
            torch.manual_seed(self.config.seed + 7919 * self.env.rank)
        self.events("resumed", {"epoch": self.epoch, "step": self.step, "path": path})

    def _autocast(self):
        amp = self.config.amp
        if not amp:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(self.env.device.type, dtype=dtype)

    # --- the loop ---------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.elapsed + time.perf_counter() - self.start

    def fit(self) -> TrainResult:
        start = time.perf_counter()
        self.events("start", self._start_info())
        stopped = "done"
        while self.epoch < self.recipe.epochs:
            stopped = self._epoch()
            if stopped != "done":
                break
            stopped = self._end_epoch()
            if stopped != "done":
                break
        files = self._finish(stopped)
        return TrainResult(self.config.out, self.epoch, self.step, self.best["top1"],
                           self.best["epoch"], self.history[-1] if self.history else None,
                           time.perf_counter() - start, stopped, files)

    def _start_info(self) -> dict:
        run = self.run
        return {"arch": run.arch.name, "params": sum(p.numel() for p in self.model.parameters()),
                "train": len(run.train), "val": len(run.val), "classes": len(run.classes),
                "epochs": self.recipe.epochs, "steps_per_epoch": run.steps_per_epoch,
                "batch": self.recipe.batch_size, "world": self.env.world,
                "device": str(self.env.device), "recipe": self.recipe.name,
                "workers": run.workers, "threads": torch.get_num_threads(),
                "notes": run.notes, "epoch": self.epoch, "step": self.step,
                "in_epoch": self.in_epoch}

    def _epoch(self) -> str:
        sampler: SeededSampler = self.run.train_loader.sampler
        sampler.set_epoch(self.epoch)
        sampler.skip = self.in_epoch * self.run.rank_batch
        self.net.train()
        tick = time.perf_counter()
        for x, y, bad in self._batches(self.run.train_loader):
            self._report_bad(bad)
            loss, correct, n = self._train_step(x, y)
            self.step += 1
            self.in_epoch += 1
            self.sums["loss"] += loss * n
            self.sums["correct"] += correct
            self.sums["n"] += n
            now = time.perf_counter()
            self.sums["seconds"] += now - tick
            tick = now
            self.events("step", {"epoch": self.epoch, "in_epoch": self.in_epoch,
                                 "step": self.step, "loss": loss, "images": n * self.env.world,
                                 "lr": self.optimizer.param_groups[0]["lr"]})
            why = self._should_stop()
            if why:
                return why
            if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                self._checkpoint()
        # a Ctrl-C that stopped the loader's workers (they get it too) ends the epoch early
        return "interrupted" if self.stop.is_set() else "done"

    def _batches(self, batches):
        """The loader's batches; a Ctrl-C that killed its workers ends the epoch quietly."""
        it = iter(batches)
        while True:
            try:
                yield next(it)
            except StopIteration:
                return
            except RuntimeError:
                if self.stop.is_set():
                    return
                raise

    def _train_step(self, x, y) -> tuple[float, int, int]:
        device = self.env.device
        weight = 1.0
        if x is None:  # every image of the batch was unreadable: keep the processes in step
            x = torch.zeros(1, *self.run.arch.graph.input_shape)
            y, weight = torch.zeros(1, dtype=torch.long), 0.0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with self._autocast():
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.recipe.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss * weight).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            (loss * weight).backward()
            self.optimizer.step()
        if self.recipe.schedule == "cosine":
            self.scheduler.step()
        n = len(y) if weight else 0
        correct = int((logits.argmax(dim=1) == y).sum()) if weight else 0
        return float(loss.detach()), correct, n

    def _should_stop(self) -> str | None:
        if distributed.any_rank(self.stop.is_set()):
            return "interrupted"
        if self.config.max_steps and self.step >= self.config.max_steps:
            return "max-steps"
        return None

    def _end_epoch(self) -> str:
        self.events("validating", {"epoch": self.epoch, "images": len(self.run.val)})
        scores = self._validate()
        sums = self._reduced_sums()
        row = {"epoch": self.epoch + 1, "step": self.step,
               "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": sums["loss"] / max(sums["n"], 1),
               "train_top1": sums["correct"] / max(sums["n"], 1),
               "val_loss": scores.mean_loss, "val_top1": scores.top1_accuracy,
               "val_top5": scores.top5_accuracy,
               "images_per_s": sums["n"] / max(self.sums["seconds"], 1e-9),
               "seconds": self.sums["seconds"], "elapsed": self._elapsed()}
        self.history.append(row)
        self.epoch += 1
        self.in_epoch = 0
        self.sums = {"loss": 0.0, "correct": 0, "n": 0, "seconds": 0.0}
        stopped = self._schedule(row)
        # the best weights: the highest top-1, and of equals the lowest loss
        if (row["val_top1"], -row["val_loss"]) > (self.best["top1"], -self.best["loss"]):
            self.best = {"top1": row["val_top1"], "loss": row["val_loss"],
                         "epoch": row["epoch"]}
            if self.env.main:
                save_weights(self.config.out / BEST, self.model, self._weights_meta(row))
        self._checkpoint()
        if self.env.main:
            write_metrics(self.config.out, self.history)
        self.events("epoch", {**row, "epochs": self.recipe.epochs, "best": self.best,
                              "lr_drops": self.drops})
        return stopped

    def _schedule(self, row: dict) -> str:
        """Step the plateau schedule; 'plateau' once the error stalls after the last drop."""
        if self.recipe.schedule != "plateau":
            return "done"
        before = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step(1.0 - row["val_top1"])
        if self.optimizer.param_groups[0]["lr"] < before:
            self.drops += 1
            self.events("lr", {"epoch": row["epoch"], "lr": self.optimizer.param_groups[0]["lr"],
                               "drops": self.drops})
            if self.drops > self.recipe.lr_drops:
                return "plateau"
        return "done"

    def _validate(self) -> Scores:
        scores = evaluate(self.model, self.run.val_loader, len(self.run.classes),
                          self.env.device, self._autocast if self.config.amp else None,
                          self._bad)
        return scores.all_reduce()

    def _reduced_sums(self) -> dict:
        s = self.sums
        if self.env.world == 1:
            return dict(s)
        t = torch.tensor([s["loss"], float(s["correct"]), float(s["n"])], dtype=torch.float64,
                         device=self.env.device)
        torch.distributed.all_reduce(t)
        # each rank's loss sum is its mean loss times its images: the sum is the global sum
        return {"loss": float(t[0]), "correct": int(t[1]), "n": int(t[2])}

    # --- bad images -------------------------------------------------------------------------

    def _bad(self, bad) -> None:
        if self.config.bad_images != "skip":
            raise BadImageError(bad.path, bad.reason)
        if bad.path not in self.reported:
            self.reported.add(bad.path)
            self.events("bad_image", {"path": bad.path, "reason": bad.reason})

    def _report_bad(self, bad: list) -> None:
        for b in bad:
            self._bad(b)

    # --- outputs ----------------------------------------------------------------------------

    def _weights_meta(self, row: dict | None) -> dict:
        run = self.run
        return {**run.identity, "classes": run.classes, "stats": run.stats.to_dict(),
                "recipe": self.recipe.to_dict(), "epoch": row and row["epoch"],
                "val_top1": row and row["val_top1"], "val_top5": row and row["val_top5"]}

    def _checkpoint(self) -> None:
        rng = distributed.rng_states(self.env)  # every rank takes part in the gather
        if self.env.main:
            meta = {**self._weights_meta(None), "config": self.run.fingerprint,
                    "epoch": self.epoch, "step": self.step, "in_epoch": self.in_epoch,
                    "sums": self.sums, "history": self.history, "best": self.best,
                    "drops": self.drops, "world": self.env.world,
                    "elapsed": self._elapsed()}
            save_checkpoint(self.config.out / CHECKPOINT, self.model, self.optimizer,
                            self.scheduler, self.scaler, rng, meta)
            self.events("checkpoint", {"path": self.config.out / CHECKPOINT,
                                       "step": self.step})
        distributed.barrier()

    def _finish(self, stopped: str) -> list[Path]:
        if stopped in ("interrupted", "max-steps") and self.in_epoch:
            self._checkpoint()
        files = [self.config.out / CHECKPOINT]
        if not self.env.main:
            return files
        if (self.config.out / BEST).exists():
            files.append(self.config.out / BEST)
        if self.history:
            files += write_metrics(self.config.out, self.history)
        if self.config.plot and self.history:
            picture = plot_curves(self.history, self.config.out / f"curves.{self.config.plot}",
                                  f"{self.run.arch.name} on {self.config.data}")
            if picture is None:
                self.events("note", {"message": "no curves drawn: matplotlib is not "
                                     "installed (pip install 'archdsl[train]')"})
            else:
                files.append(picture)
        return files + [self.config.out / LABELS]


def _cosine(r: Recipe, steps_per_epoch: int):
    """A factor of the base rate per step: linear warm-up from 1/100, then half a cosine."""
    import math
    warm = r.warmup_epochs * steps_per_epoch
    total = max(r.epochs * steps_per_epoch, 1)

    def factor(step: int) -> float:
        if step < warm:
            return 0.01 + 0.99 * step / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(total - warm, 1))))
    return factor

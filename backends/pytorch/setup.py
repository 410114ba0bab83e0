"""What a training run is made of, checked before any step: the architecture fitted to the
data's classes, the model, the pixel statistics, the split, the loaders. Every problem a user
can cause (a spec without `classes`, a missing or empty folder, settings that differ from the
checkpoint being resumed) is reported here, before anything is written."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

import archdsl
from archdsl.atomic import atomic_path
from archdsl.errors import ArchErrors, UsageError

from . import checkpoint as ckpt
from .data import (
    BUILTIN,
    DataError,
    Samples,
    SeededSampler,
    ShardSampler,
    Source,
    cache_images,
    loader,
    open_source,
    split,
)
from .recipe import Recipe
from .transforms import (
    PixelStats,
    decode_side,
    eval_transform,
    pixel_stats,
    stats_view,
    train_transform,
)

STATS_IMAGES = 1000  # images the pixel statistics are taken from (bounded start-up work)


@dataclass
class Run:
    recipe: Recipe  # the configured one, with flips off for data whose mirror images differ
    arch: archdsl.Architecture
    classes: list[str]
    model: torch.nn.Module
    stats: PixelStats
    train: Samples
    val: Samples
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    rank_batch: int
    steps_per_epoch: int
    workers: int
    identity: dict  # what the weights are: arch, settings, hashes, input
    fingerprint: dict  # what must not change on --resume
    notes: list[str] = field(default_factory=list)


def fit_classes(arch: archdsl.Architecture, k: int, notes: list[str]) -> archdsl.Architecture:
    """The architecture with `k` outputs: through its `classes` parameter, or as written
    when its output already has k classes. Its input must be an image (grey or colour)."""
    graph = arch.graph
    shape = tuple(graph.input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ArchErrors([UsageError(
            f"`{arch.name}` takes {list(shape)}; training and evaluation give it images, "
            "1×H×W (grey) or 3×H×W (colour)", graph.span,
            "write its input as `input 3x224x224` or `input 1x32x32`")])
    if "classes" in graph.settings:
        if graph.settings["classes"] != k:
            notes.append(f"classes = {k} (the data's), not the spec's {graph.settings['classes']}")
            arch = arch.with_settings(classes=k)
    elif tuple(graph.output_shape or ()) != (k,):
        raise ArchErrors([UsageError(
            f"`{arch.name}` has no `classes` parameter and its output is "
            f"{list(graph.output_shape or ())}, but the data has {k} classes", graph.span,
            f"declare it, `arch {arch.name}(classes = {k})`, and end with FC-{{classes}}")])
    if tuple(arch.graph.output_shape or ()) != (k,):
        raise ArchErrors([UsageError(
            f"`{arch.name}` gives {list(arch.graph.output_shape or ())} per image, not one "
            f"score per class ({k})", arch.graph.span,
            "end the network with FC-{classes} (global pooling or flatten before it)")])
    return arch


def prepare(config, env, on_bad) -> Run:
    problems = config.recipe.check() + _config_problems(config, env)
    if problems:
        raise ArchErrors([UsageError(p, None) for p in problems])
    base = archdsl.load(config.spec, config.arch, **config.settings)
    check_run_folder(config.out, config.plot, base.program.files)
    channels = base.graph.input_shape[0]
    meta = _resume_meta(config)
    train_src, val_src = open_source(config.data, channels)
    notes: list[str] = []
    recipe = _flips(config, train_src, notes)
    arch = fit_classes(base, len(train_src.classes), notes)
    _check_fits(arch, recipe, env)
    if val_src is None:
        train_idx, val_idx = split(train_src.targets, config.val_fraction, config.seed)
        val_src = train_src
    else:
        train_idx, val_idx = list(range(len(train_src))), list(range(len(val_src)))
    if not val_idx:
        raise DataError("the validation split is empty", None,
                        "raise --val-fraction, or give DIR/train and DIR/val")
    crop = tuple(arch.graph.input_shape[1:])
    for source in {id(train_src): train_src, id(val_src): val_src}.values():
        source.min_side = decode_side(recipe, crop)  # JPEGs decoded no larger than needed
    if config.cache:
        limit = config.cache_limit_mb * 2**20
        held = cache_images(train_src, train_idx, limit, on_bad)
        held += cache_images(val_src, val_idx, limit - held, on_bad)
    stats = (PixelStats.from_dict(meta["stats"]) if meta else
             _stats(train_src, train_idx, recipe, crop, config.seed, on_bad))
    identity = _identity(config, arch)
    fingerprint = _fingerprint(config, recipe, identity)
    if meta:
        _check_resume(meta, fingerprint, config.out / "checkpoint.safetensors")
    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = arch.to_torch(logits=True)
    _set_dropout(model, recipe.dropout)
    model.to(env.device)
    torch.manual_seed(config.seed + 7919 * env.rank)  # dropout differs between processes
    return _loaders(config, env, recipe, arch, train_src.classes, model, stats,
                    Samples(train_src, train_idx, train_transform(recipe, crop, stats)),
                    Samples(val_src, val_idx, eval_transform(recipe, crop, stats)),
                    identity, fingerprint, notes)


def _flips(config, source: Source, notes: list[str]) -> Recipe:
    """The recipe's flips, unless the data's mirror images are other classes (digits) or
    --flip/--no-flip says otherwise."""
    recipe = config.recipe
    if config.flip is not None:
        return recipe.replace(flip=config.flip)
    if recipe.flip and not source.mirror:
        notes.append(f"no horizontal flips: a mirrored image of {config.data} is not the same "
                     "class (--flip to flip anyway)")
        return recipe.replace(flip=False)
    return recipe


# what a run writes in its folder (train.py's CHECKPOINT, BEST and LABELS; logs.py's metrics)
RUN_FILES = ("checkpoint.safetensors", "best.safetensors", "labels.txt", "metrics.csv",
             "metrics.json")


def check_run_folder(out: Path, plot: str, inputs) -> None:
    """Every file a run writes in `out` can be written there and is none of its inputs (a
    spec hard-linked as best.safetensors), before the data is read or a step taken; the
    atomic writer checks each again when it writes."""
    from archdsl.atomic import check_output
    for name in RUN_FILES + ((f"curves.{plot}",) if plot else ()):
        check_output(Path(out) / name, inputs)


def _check_fits(arch, recipe: Recipe, env) -> None:
    """A batch whose training cannot fit is refused before it is made: in this machine's
    memory, or on a GPU in its free memory."""
    from archdsl.memory import check_training_fits
    batch = max(1, recipe.batch_size // env.world)
    if env.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(env.device)
        check_training_fits(arch, batch, recipe.optimizer, free, f"{env.device} has")
    else:
        check_training_fits(arch, batch, recipe.optimizer)


def _config_problems(config, env) -> list[str]:
    out = []
    if config.recipe.batch_size % env.world:
        out.append(f"the batch size {config.recipe.batch_size} does not split evenly over "
                   f"{env.world} processes")
    if config.bad_images not in ("fail", "skip"):
        out.append(f"--bad-images is fail or skip, not `{config.bad_images}`")
    if config.amp not in (None, "bf16", "fp16"):
        out.append(f"--amp is bf16 or fp16, not `{config.amp}`")
    if config.amp == "fp16" and env.device.type != "cuda":
        out.append("--amp fp16 needs a GPU (on CPUs use bf16)")
    if not 0 <= config.val_fraction < 1:
        out.append(f"--val-fraction must be in [0, 1), got {config.val_fraction}")
    if config.plot not in ("", "png", "svg", "pdf"):
        out.append(f"--plot is png, svg or pdf, not `{config.plot}`")
    return out + _bounds(config)


def _bounds(config) -> list[str]:
    """Counts from the command line that would start unbounded work (archdsl/limits.py)."""
    from archdsl.limits import MAX_CACHE_MIB, MAX_THREADS, MAX_WORKERS
    out = []
    for name, value, low, high in (("--workers", config.workers, 0, MAX_WORKERS),
                                   ("--threads", config.threads, 1, MAX_THREADS),
                                   ("--max-steps", config.max_steps, 1, None),
                                   ("--checkpoint-every", config.checkpoint_every, 0, None),
                                   ("--cache-limit", config.cache_limit_mb, 0, MAX_CACHE_MIB)):
        if value is not None and (value < low or (high is not None and value > high)):
            out.append(f"{name} must be {low} or more" if high is None else
                       f"{name} must be from {low} to {high:,} (archdsl/limits.py), "
                       f"got {value}")
    return out


def _loaders(config, env, recipe, arch, classes, model, stats, train, val, identity,
             fingerprint, notes) -> Run:
    rank_batch = recipe.batch_size // env.world
    steps = (len(train) // env.world) // rank_batch
    if steps == 0:
        raise DataError(f"the training set ({len(train)} images) is smaller than one batch "
                        f"({recipe.batch_size})", None, "lower --batch-size")
    workers, threads = share_cores(config, env)
    if threads:
        torch.set_num_threads(threads)
    pin = env.device.type == "cuda"
    sampler = SeededSampler(train, env.world, env.rank, config.seed)
    train_loader = loader(train, sampler, rank_batch, workers, pin, drop_last=True)
    val_loader = loader(val, ShardSampler(len(val), env.world, env.rank), rank_batch, workers,
                        pin)
    if env.main:
        _write_labels(config.out, classes)
    return Run(recipe, arch, classes, model, stats, train, val, train_loader, val_loader,
               rank_batch, steps, workers, identity, fingerprint, notes)


def share_cores(config, env) -> tuple[int, int | None]:
    """(loader workers, torch threads) per process. By default each process takes its share
    of the cores this process may run on: up to 4 of them for its loader's workers (which
    decode and augment while the model steps), and on CPUs the rest for torch's threads —
    more threads than cores make every step wait for descheduled ones."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    share = max(1, cores // env.world)
    workers = config.workers if config.workers is not None else min(4, share - 1)
    threads = config.threads
    if threads is None and env.device.type == "cpu":
        threads = max(1, share - workers)
    return workers, threads


def _stats(source: Source, indices: list[int], recipe, crop, seed: int, on_bad) -> PixelStats:
    """Pixel statistics of up to STATS_IMAGES training images (evenly spread), as the network
    sees them at test time."""
    step = max(1, len(indices) // STATS_IMAGES)
    view = stats_view(recipe, crop)
    images = []
    for i in indices[::step][:STATS_IMAGES]:
        try:
            images.append(view(source.image(i)))
        except DataError as exc:
            if hasattr(exc, "bad"):
                on_bad(exc.bad)
                continue
            raise
    return pixel_stats(images, seed)


def _identity(config, arch) -> dict:
    text = _spec_bytes(config.spec)
    data = config.data if config.data in BUILTIN else str(Path(config.data).resolve())
    return {"arch": arch.name, "settings": arch.settings,
            "graph_sha256": ckpt.graph_hash(arch.graph),
            "spec_sha256": hashlib.sha256(text).hexdigest(),
            "input": list(arch.graph.input_shape),
            "split": {"data": data, "seed": config.seed, "val_fraction": config.val_fraction}}


def _spec_bytes(spec: str) -> bytes:
    """The spec's text (given as text, as archdsl.load takes it, or as a file)."""
    if "\n" in spec or spec.lstrip().startswith("arch "):
        return spec.encode()
    return Path(spec).read_bytes()


def _fingerprint(config, recipe: Recipe, identity) -> dict:
    fields = recipe.to_dict()
    fields.pop("epochs")  # a run may be extended
    return {"graph_sha256": identity["graph_sha256"], "arch": identity["arch"],
            "data": config.data, "seed": config.seed, "val_fraction": config.val_fraction,
            "recipe": fields, "amp": config.amp}


def _resume_meta(config) -> dict | None:
    path = config.out / "checkpoint.safetensors"
    if not config.resume:
        if path.exists():
            raise UsageError(f"{config.out} already holds a run ({path.name})", None,
                             "continue it with --resume, or give another --out")
        return None
    if not path.exists():
        raise UsageError(f"--resume: there is no {path}", None,
                         "--out names the folder of the run to continue")
    kind, meta = ckpt.read_meta(path)
    if kind != ckpt.CHECKPOINT:
        raise ckpt.CheckpointError(f"{path} is not a training checkpoint", None)
    return meta


def _check_resume(meta: dict, fingerprint: dict, path: Path) -> None:
    saved = meta.get("config", {})
    diffs = []
    for key, value in fingerprint.items():
        if key == "recipe":
            was = saved.get("recipe", {})
            diffs += [f"{k}: {was.get(k)!r} in the checkpoint, {v!r} now"
                      for k, v in value.items() if was.get(k) != v]
        elif key == "graph_sha256" and saved.get(key) != value:
            diffs.append("the network is not the one the checkpoint trained (its canonical "
                         "spec text differs)")
        elif saved.get(key) != value:
            diffs.append(f"{key}: {saved.get(key)!r} in the checkpoint, {value!r} now")
    if diffs:
        raise UsageError(f"{path} was written by a run with other settings:\n  "
                         + "\n  ".join(diffs), None,
                         "resume with the settings the run started with (only --epochs, "
                         "--max-steps and how data is loaded may change)")


def _set_dropout(model: torch.nn.Module, p: float | None) -> None:
    if p is None:
        return
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p


def _write_labels(out: Path, classes: list[str]) -> None:
    with atomic_path(out / "labels.txt") as tmp:
        tmp.write_text("".join(f"{c}\n" for c in classes))

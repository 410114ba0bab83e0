"""`archdsl train` and `archdsl eval`: the command-line shell over the PyTorch backend's
training (backends/pytorch/train.py) and evaluation (evaluate.py). Registered on the main
command by `register(app)`; nothing here imports torch until a command runs."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .errors import ArchError, ArchErrors, UsageError


def _choice(name: str, *values: str) -> type[Enum]:
    """A typer choice (help shows <a|b|c>)."""
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


RecipeName = _choice("RecipeName", "alexnet", "vgg", "modern")
Optimizer = _choice("Optimizer", "sgd", "adamw")
Schedule = _choice("Schedule", "plateau", "cosine")
Crop = _choice("Crop", "rescale", "multiscale", "resized")
BadImages = _choice("BadImages", "fail", "skip")
Device = _choice("Device", "auto", "cpu", "cuda")
Amp = _choice("Amp", "bf16", "fp16")
Plot = _choice("Plot", "png", "svg", "pdf", "none")


def _opt(help: str, *names: str, metavar: str | None = None, **kw):
    """An option that defaults to the recipe's value (None: shown as no default)."""
    return typer.Option(*names, help=help, metavar=metavar, show_default=False, **kw)


SpecArg = Annotated[Path, typer.Argument(help="a spec file", metavar="SPEC",
                                         show_default=False)]
DataOpt = Annotated[str, typer.Option(
    "--data", "-d", metavar="DIR", help="a folder of class subfolders (or DIR/train + "
    "DIR/val), or `digits` (scikit-learn's bundled 8×8 digits)")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="NAME=VALUE", help="override a spec parameter")]
ArchOpt = Annotated[str | None, typer.Option("--arch", "-a", metavar="NAME",
                                             help="the architecture")]
DeviceOpt = Annotated[Device, typer.Option(help="where to run")]


def train(
    spec: SpecArg,
    data: DataOpt,
    recipe: Annotated[RecipeName, typer.Option(
        help="the preset: alexnet (Krizhevsky et al. 2012), vgg (multi-scale, Simonyan & "
        "Zisserman 2015), modern (AdamW, cosine, label smoothing)")] = RecipeName.alexnet,
    out: Annotated[Path | None, _opt("the run's folder (default: runs/ARCH)", "--out", "-o",
                                     metavar="DIR")] = None,
    resume: Annotated[bool, typer.Option(
        help="continue the run in --out from its checkpoint, exactly")] = False,
    epochs: Annotated[int | None, _opt("epochs (default: the recipe's; so for each of these "
                                       "options)", "--epochs", metavar="N")] = None,
    batch_size: Annotated[int | None, _opt("the global batch, split over processes",
                                           "--batch-size", "-b", metavar="N")] = None,
    lr: Annotated[float | None, _opt("initial learning rate", "--lr", metavar="X")] = None,
    momentum: Annotated[float | None, _opt("SGD momentum", "--momentum", metavar="X")] = None,
    weight_decay: Annotated[float | None, _opt("weight decay", "--weight-decay", metavar="X")]
    = None,
    optimizer: Annotated[Optimizer | None, _opt("the optimizer", "--optimizer")] = None,
    schedule: Annotated[Schedule | None, _opt(
        "plateau: ÷10 when the validation error stalls; cosine: annealed", "--schedule")]
    = None,
    patience: Annotated[int | None, _opt("plateau: epochs without improvement before ÷10",
                                         "--patience", metavar="N")] = None,
    lr_drops: Annotated[int | None, _opt("plateau: stop at the next stall after N divisions",
                                         "--lr-drops", metavar="N")] = None,
    warmup_epochs: Annotated[int | None, _opt("cosine: linear warm-up", "--warmup-epochs",
                                              metavar="N")] = None,
    label_smoothing: Annotated[float | None, _opt("label smoothing", "--label-smoothing",
                                                  metavar="X")] = None,
    crop: Annotated[Crop | None, _opt("training views: rescale (fixed S), multiscale (S in "
                                      "[scale, scale-max]) or resized (Inception-style)",
                                      "--crop")] = None,
    scale: Annotated[float | None, _opt("shorter side S as a multiple of the input size "
                                        "(256/224)", "--scale", metavar="X")] = None,
    scale_max: Annotated[float | None, _opt("multiscale: the largest S (512/224)",
                                            "--scale-max", metavar="X")] = None,
    test_scale: Annotated[float | None, _opt("shorter side at test time", "--test-scale",
                                             metavar="X")] = None,
    lighting: Annotated[float | None, _opt("σ of the PCA colour noise (0: off)", "--lighting",
                                           metavar="X")] = None,
    dropout: Annotated[float | None, _opt("rate for every dropout layer of the spec "
                                          "(default: the spec's)", "--dropout", metavar="P")]
    = None,
    flip: Annotated[bool | None, _opt("horizontal flips (default: the recipe's, off for "
                                      "digits)", "--flip/--no-flip")] = None,
    val_fraction: Annotated[float, typer.Option(
        metavar="X", help="held out for validation when the data has no val folder")] = 0.1,
    seed: Annotated[int, typer.Option(metavar="N", help="initial weights, split, order, "
                                      "augmentation")] = 0,
    workers: Annotated[int | None, _opt("DataLoader worker processes per training process "
                                        "(default: up to 4, one core less than each process's "
                                        "share)", "--workers", metavar="N")] = None,
    cache: Annotated[bool, typer.Option(help="decode every image once, into memory")] = False,
    cache_limit: Annotated[int, typer.Option(metavar="MIB", help="--cache: at most")] = 4096,
    bad_images: Annotated[BadImages, typer.Option(
        help="fail: stop at an unreadable image; skip: report it and go on")] = BadImages.fail,
    amp: Annotated[Amp | None, _opt("mixed precision (fp16 on GPUs only)", "--amp")] = None,
    device: DeviceOpt = Device.auto,
    nproc: Annotated[int, typer.Option(metavar="N", min=1, help="processes on this machine "
                                       "(DDP: gloo on CPUs, NCCL on GPUs); or use torchrun")]
    = 1,
    max_steps: Annotated[int | None, _opt("stop after N steps, with a checkpoint",
                                          "--max-steps", metavar="N")] = None,
    checkpoint_every: Annotated[int, typer.Option(
        metavar="N", help="steps between checkpoints (0: at each epoch's end)")] = 0,
    plot: Annotated[Plot, typer.Option(help="the curves' picture")] = Plot.png,
    threads: Annotated[int | None, _opt("torch threads per process (default on CPUs: the "
                                        "cores of its share its workers leave)", "--threads",
                                        metavar="N")] = None,
    set_: SetOpt = None,
    arch: ArchOpt = None,
) -> None:
    """Train the spec's network on an image-classification data set with the lectures'
    recipe: random crops of rescaled images, flips, PCA lighting, SGD with momentum and
    weight decay, the learning rate ÷10 on plateaus; top-1/top-5 on a held-out split each
    epoch; safetensors checkpoints; metrics.csv/json and a curves picture in the run's folder.
    """
    from . import cli_shell as cli
    overrides = dict(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                     weight_decay=weight_decay, optimizer=_value(optimizer),
                     schedule=_value(schedule), patience=patience, lr_drops=lr_drops,
                     warmup_epochs=warmup_epochs, label_smoothing=label_smoothing,
                     crop=_value(crop), scale=scale, scale_max=scale_max,
                     test_scale=test_scale, lighting=lighting, dropout=dropout)

    def body() -> None:
        from .backends import load_backend
        load_backend("pytorch.train")
        from .backends.pytorch.recipe import recipe as make_recipe
        from .backends.pytorch.train import TrainConfig
        cores = os.cpu_count() or 1
        if nproc > cores:
            raise UsageError(f"--nproc {nproc}: this machine has {cores} cores", None,
                             "one process per GPU, or a few per machine on CPUs")
        a = cli._one_graph(spec, set_, arch, "train")
        sets = cli.parse_sets(set_)[0]
        config = TrainConfig(
            spec=str(spec), arch=a.name, settings=sets, data=data,
            recipe=make_recipe(recipe.value, **overrides), seed=seed,
            val_fraction=val_fraction, out=out or Path("runs") / a.name, resume=resume,
            workers=workers, cache=cache, cache_limit_mb=cache_limit,
            bad_images=bad_images.value, amp=_value(amp), device=device.value,
            max_steps=max_steps, checkpoint_every=checkpoint_every, flip=flip,
            plot="" if plot.value == "none" else plot.value, threads=threads)
        code = _launch(config, nproc) if nproc > 1 else _train_here(config)
        if code:
            raise typer.Exit(code)
    cli.run(body)


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


def _train_here(config) -> int:
    """Train in this process (alone, or as one rank of a torchrun job); the exit status."""
    from .backends.pytorch.train import train as do_train
    from .train_display import TrainDisplay
    rank = int(os.environ.get("RANK", "0"))
    display = TrainDisplay(quiet=rank != 0)
    try:
        with display:
            result = do_train(config, display)
    except (ArchError, ArchErrors):
        if rank != 0:  # every rank meets the same user error: rank 0 tells it
            return 1
        raise
    except OSError as exc:  # a full disk, a folder that cannot be written
        if exc.filename is None:
            raise
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror or exc}", None,
                         "nothing half-written was left; the last checkpoint is intact") \
            from None
    except KeyboardInterrupt:  # a second Ctrl-C: no waiting for the step to end
        display.print("interrupted: the steps since the last checkpoint are lost", "yellow")
        return 130
    if rank == 0:
        display.summary(result)
    return 130 if result.stopped == "interrupted" else 0


def _worker(config) -> None:
    """A process started by `--nproc`: train, telling user errors in words, not tracebacks."""
    from . import cli_shell as cli
    code = 0

    def body() -> None:
        nonlocal code
        code = _train_here(config)
    try:
        cli.run(body)
    except typer.Exit as exc:
        code = exc.exit_code
    if code:
        sys.exit(code)


def _launch(config, nproc: int) -> int:
    """`--nproc N`: start N processes with torch's elastic launcher (a user error is told by
    the first; the launcher stops the others when one fails)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from .backends.pytorch import distributed
    try:
        distributed.launch(nproc, _worker, config)
    except ChildFailedError as exc:
        codes = sorted({f.exitcode for f in exc.failures.values()})
        return 130 if codes == [130] else 1
    return 0


class EvalFormat(str, Enum):
    table = "table"
    json = "json"


def evaluate(
    spec: SpecArg,
    weights: Annotated[Path, typer.Option(
        metavar="FILE", help="best.safetensors or checkpoint.safetensors from `archdsl train`, "
        "or a state_dict (.safetensors, or torch.save's)")],
    data: DataOpt,
    ten_crop: Annotated[bool, typer.Option(
        "--ten-crop", help="average the softmax over ten crops (corners, centre, mirrored)")]
    = False,
    dense: Annotated[bool, typer.Option(
        "--dense", help="VGG's dense evaluation: FC layers as convolutions over the whole "
        "image, scores averaged over space and over the image and its mirror")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, metavar="N")] = 64,
    confusion: Annotated[Path | None, _opt(
        "the confusion matrix picture: .png, .svg or .pdf (default: ARCH-confusion.png; "
        "`none`: no picture)", "--confusion", metavar="FILE")] = None,
    workers: Annotated[int, typer.Option(metavar="N", help="DataLoader worker processes")]
    = 0,
    bad_images: Annotated[BadImages, typer.Option(
        help="fail: stop at an unreadable image; skip: report it and go on")] = BadImages.fail,
    device: DeviceOpt = Device.auto,
    format: Annotated[EvalFormat, typer.Option("--format", "-f")] = EvalFormat.table,
    set_: SetOpt = None,
    arch: ArchOpt = None,
) -> None:
    """Evaluate trained weights: top-1/top-5 accuracy, per-class accuracy and a confusion
    matrix picture, from the centre crop or averaged over ten crops."""
    from . import cli_shell as cli

    def body() -> None:
        from .backends import load_backend
        load_backend("pytorch.train")
        from .backends.pytorch.evaluate import EvalConfig, run_eval
        from .train_display import print_eval
        a = cli._one_graph(spec, set_, arch, "eval")
        picture = (None if str(confusion) == "none" else
                   confusion or Path(f"{a.name}-confusion.png"))
        if picture is not None:  # before the data is read; run_eval checks it too
            from .backends.pytorch.evaluate import check_picture
            check_picture(picture, [*a.program.files, weights])
        report = run_eval(EvalConfig(
            spec=str(spec), arch=a.name, settings=cli.parse_sets(set_)[0], weights=weights,
            data=data, views=_views(ten_crop, dense), batch_size=batch_size, workers=workers,
            bad_images=bad_images.value, device=device.value, confusion=picture))
        print_eval(report, format.value)
    cli.run(body)


def _views(ten_crop: bool, dense: bool) -> str:
    if ten_crop and dense:
        raise UsageError("--ten-crop and --dense are two ways to evaluate: choose one", None)
    return "ten-crop" if ten_crop else "dense" if dense else "centre"


def read_labels(path: Path) -> list[str]:
    """Class names, one a line, as `archdsl train` writes them (labels.txt): a regular file
    of at most 16 MiB (never a FIFO or /dev/zero), UTF-8; control characters in a name are
    shown as symbols, never sent to the terminal."""
    from .errors import printable
    from .inputs import read_regular
    try:
        text = read_regular(path, 16 << 20).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UsageError(f"cannot read labels from {path}: {why}", None) from None
    return [printable(name) for name in text.splitlines()]


def check_labels(path: Path, names: list[str], classes: int) -> None:
    if len(names) != classes:
        raise UsageError(f"{path} names {len(names)} classes; the library gives {classes} "
                         "scores", None, "one class name a line, in the order of the outputs")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate)

"""Evaluation: top-1 and top-5 accuracy, per-class accuracy and the confusion matrix, from one
centre crop or averaged over ten crops (Krizhevsky et al. 2012, Section 4.1: "averaging the
predictions made by the network's softmax layer on the ten patches").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from archdsl.errors import UsageError


@dataclass
class Scores:
    """Counts over an evaluation; add them up across processes with `all_reduce`."""

    confusion: torch.Tensor  # K×K int64: row = true class, column = predicted
    top5: int  # samples whose class is among the 5 (or K, if fewer) most likely
    loss: float  # summed cross-entropy (of the averaged probabilities with ten crops)
    bad: int = 0  # unreadable images skipped

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1_accuracy(self) -> float:
        return float(self.confusion.diag().sum()) / max(self.n, 1)

    @property
    def top5_accuracy(self) -> float:
        return self.top5 / max(self.n, 1)

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.n, 1)

    def per_class(self) -> list[tuple[int, float | None]]:
        """(images, accuracy) per class; accuracy is None for a class with no images."""
        totals = self.confusion.sum(dim=1)
        return [(int(n), float(self.confusion[k, k]) / int(n) if n else None)
                for k, n in enumerate(totals)]

    def all_reduce(self) -> Scores:
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return self
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        conf = self.confusion.to(device)
        extra = torch.tensor([float(self.top5), self.loss, float(self.bad)],
                             dtype=torch.float64, device=device)
        dist.all_reduce(conf)
        dist.all_reduce(extra)
        return Scores(conf.cpu(), int(extra[0]), float(extra[1]), int(extra[2]))


def probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities for B×C×H×W, or B×10×C×H×W (ten crops: their mean)."""
    if x.dim() == 5:
        b, v = x.shape[:2]
        return F.softmax(model(x.flatten(0, 1)).float(), dim=1).view(b, v, -1).mean(dim=1)
    return F.softmax(model(x).float(), dim=1)


@torch.no_grad()
def evaluate(model: nn.Module, batches, classes: int, device: torch.device,
             autocast: Callable | None = None, on_bad: Callable | None = None) -> Scores:
    """Scores of `model` (in eval mode) over batches of (images, labels, bad images)."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(classes, classes, dtype=torch.int64)
    top5 = bad = 0
    loss = 0.0
    k = min(5, classes)
    try:
        for x, y, bad_images in batches:
            for b in bad_images:
                bad += 1
                if on_bad is not None:
                    on_bad(b)
            if x is None:
                continue
            x = x.to(device, non_blocking=True)
            with autocast() if autocast else contextlib.nullcontext():
                p = probabilities(model, x).cpu()
            loss += float(F.nll_loss(p.clamp_min(1e-12).log(), y, reduction="sum"))
            pred = p.argmax(dim=1)
            confusion += torch.bincount(y * classes + pred, minlength=classes * classes
                                        ).view(classes, classes)
            top5 += int((p.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum())
    finally:
        model.train(was_training)
    return Scores(confusion, top5, loss, bad)


@dataclass
class EvalConfig:
    spec: str
    weights: Path
    data: str
    arch: str | None = None
    settings: dict = field(default_factory=dict)
    views: str = "centre"  # or ten-crop, dense (transforms.eval_transform)
    batch_size: int = 64
    workers: int = 0
    bad_images: str = "fail"
    device: str = "auto"
    confusion: Path | None = None  # the picture to draw


@dataclass
class EvalReport:
    arch: str
    weights: Path
    data: str  # what was evaluated, in words
    classes: list[str]
    scores: Scores
    views: str
    picture: Path | None
    notes: list[str]


PICTURES = (".png", ".svg", ".pdf")


def check_picture(path: Path, inputs) -> None:
    """The confusion picture can be written at `path`, as a picture, and is none of `inputs`
    (the spec, the weights): said before the evaluation, not after it."""
    from archdsl.atomic import check_output
    if path.suffix not in PICTURES:
        raise UsageError(f"--confusion {path}: a picture is written as "
                         + ", ".join(PICTURES), None, "e.g. --confusion confusion.png")
    check_output(path, inputs)


def run_eval(config: EvalConfig) -> EvalReport:
    """Evaluate weights on a data set (see `data.eval_source` for which images)."""
    from . import distributed
    from .data import BadImageError, Samples, ShardSampler, loader
    from .transforms import eval_transform
    if config.confusion is not None:
        check_picture(Path(config.confusion), [config.spec, config.weights])
    env = distributed.setup(config.device)
    notes: list[str] = []
    arch, model, classes, source, indices, what, meta = _model_and_data(config, notes)
    recipe, stats = _preprocessing(meta, arch, notes)
    crop = tuple(arch.graph.input_shape[1:])
    from .transforms import decode_side
    source.min_side = decode_side(recipe, crop)
    samples = Samples(source, indices, eval_transform(recipe, crop, stats, config.views))
    if config.views == "dense":  # whole images differ in size: one at a time
        from .dense import densify
        model = densify(model, arch.graph)
    batch = 1 if config.views == "dense" else config.batch_size
    batches = loader(samples, ShardSampler(len(samples)), batch, config.workers,
                     env.device.type == "cuda")
    bad: list[str] = []

    def on_bad(b) -> None:
        if config.bad_images != "skip":
            raise BadImageError(b.path, b.reason)
        bad.append(f"skipped {b.path}: {b.reason}")
    try:
        scores = evaluate(model.to(env.device), batches, len(classes), env.device,
                          on_bad=on_bad)
    except RuntimeError as exc:
        if config.views != "dense":
            raise
        raise UsageError(f"dense evaluation failed: {str(exc).splitlines()[0]}", None,
                         "this network takes only inputs of its own size: evaluate centre "
                         "or ten crops") from None
    picture = _picture(config.confusion, arch.name, scores, classes, notes)
    return EvalReport(arch.name, config.weights, what, classes, scores, config.views,
                      picture, notes + bad)


def _picture(path: Path | None, name: str, scores: Scores, classes: list[str],
             notes: list[str]) -> Path | None:
    if path is None:
        return None
    from .logs import plot_confusion
    title = f"{name}: {100 * scores.top1_accuracy:.2f}% top-1 on {scores.n} images"
    picture = plot_confusion(scores.confusion, classes, path, title)
    if picture is None:
        notes.append("no confusion picture: matplotlib is not installed "
                     "(pip install 'archdsl[train]')")
    return picture


def _model_and_data(config: EvalConfig, notes: list[str]):
    """The architecture fitted to the weights' classes, the model holding the weights, and the
    images to evaluate; refuses weights that do not fit and data with other classes."""
    import archdsl

    from .data import DataError, eval_source
    from .setup import fit_classes
    from .weights import load_weights
    base = archdsl.load(config.spec, config.arch, **config.settings)
    meta, state = _weights(config.weights)
    source, indices, what = eval_source(config.data, base.graph.input_shape[0],
                                        meta.get("split"))
    classes = meta.get("classes") or source.classes
    if source.classes != classes:
        raise DataError(f"{config.data} has the classes {source.classes[:6]}…; "
                        f"{config.weights} was trained on {classes[:6]}…", None)
    arch = fit_classes(base, len(classes), notes)
    model = arch.to_torch(logits=True)
    load_weights(model, state, strict=True)
    notes += _provenance(meta, arch, config.weights)
    if config.views != "centre" and not source.mirror:
        notes.append(f"{'five of the ten' if config.views == 'ten-crop' else 'half the'} "
                     f"views are mirror images, and a mirrored image of {config.data} is not "
                     "the same class")
    return arch, model, classes, source, indices, what, meta


def _weights(path: Path) -> tuple[dict, dict]:
    """(metadata, state_dict) of an archdsl weights file, a checkpoint, or a state_dict."""
    from . import checkpoint
    if path.suffix != ".safetensors":
        from .weights import read_state_dict
        return {}, read_state_dict(path)
    kind, meta, tensors = checkpoint.read(path)
    return meta, checkpoint.model_state(kind, tensors)


def _provenance(meta: dict, arch, path: Path) -> list[str]:
    from .checkpoint import graph_hash
    if not meta:
        return [f"{path} was not written by archdsl train: no pixel statistics in it"]
    if meta.get("graph_sha256") != graph_hash(arch.graph):
        return [f"the spec is not the one {path} was trained with (the weights fit it)"]
    return []


def _preprocessing(meta: dict, arch, notes: list[str]):
    """The recipe's test-time sizes and the training pixels' statistics, from the weights'
    metadata; for weights from elsewhere, torchvision's ImageNet normalization (colour) or
    none (grey), and the default 256/224 rescale."""
    from .recipe import Recipe, from_dict
    from .transforms import PixelStats
    if "stats" in meta:
        return from_dict(meta.get("recipe", {})), PixelStats.from_dict(meta["stats"])
    channels = arch.graph.input_shape[0]
    stats = PixelStats.identity(channels)
    if channels == 3:
        stats.mean, stats.std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        notes.append("normalizing with ImageNet's mean and std (torchvision's)")
    return Recipe(), stats

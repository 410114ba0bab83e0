"""Training recipes: the lectures' settings as named presets, every field overridable.

`alexnet` — Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NIPS 2012, Sections 4.1, 4.2 and 5: images rescaled so the shorter side is
256 and random 224×224 crops with horizontal flips taken from them; PCA colour ("lighting")
noise with σ = 0.1; dropout 0.5 in the first two FC layers; SGD, batch 128, momentum 0.9,
weight decay 5e-4, learning rate 0.01 divided by 10 whenever the validation error stopped
improving, three times before the end. Test time: the centre crop, or the average of ten
crops (four corners and centre, and their mirror images).

`vgg` — Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, Section 3.1: the same optimiser (batch 256), and scale jittering:
each image rescaled so its shorter side S is drawn from [256, 512] before the 224 crop
(multi-scale training); tested at Q = 384, the middle of the range.

`modern` — what later work settled on (torchvision's reference scripts; Loshchilov & Hutter
2019; Szegedy et al. 2016 for label smoothing): Inception-style random-resized crops and
flips without PCA noise, AdamW with decoupled weight decay 0.05, a cosine schedule after a
linear warm-up, label smoothing 0.1.

Sizes are given for ImageNet's 224-pixel crops; a spec with another input size scales them
(LeNet-5's 32 pixels: rescale 37, multi-scale 37…73). Dropout is the spec's: a recipe never
adds layers, and `dropout` (when set) changes the rate of every dropout layer the spec has.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

SCHEDULES = ("plateau", "cosine")
OPTIMIZERS = ("sgd", "adamw")
CROPS = ("rescale", "multiscale", "resized")


@dataclass
class Recipe:
    """One training recipe. Sizes are fractions of the crop (the spec's input size)."""

    name: str = "alexnet"
    epochs: int = 90
    batch_size: int = 128  # the global batch: split over the processes of a distributed run
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "plateau"
    # plateau: divide the learning rate by `lr_factor`⁻¹ when the validation error has not
    # improved (by more than `plateau_threshold`) for `patience` epochs; stop when it plateaus
    # again after `lr_drops` divisions (AlexNet's "reduced three times prior to termination").
    lr_factor: float = 0.1
    patience: int = 3
    plateau_threshold: float = 1e-3
    lr_drops: int = 3
    warmup_epochs: int = 0  # cosine: linear warm-up from lr/100
    label_smoothing: float = 0.0
    crop: str = "rescale"  # rescale: fixed S; multiscale: S in [scale, scale_max]; resized
    scale: float = 256 / 224  # the shorter side S, as a multiple of the crop
    scale_max: float = 512 / 224  # multiscale: the largest S
    test_scale: float = 256 / 224  # the shorter side at test time (VGG's Q)
    flip: bool = True
    lighting: float = 0.1  # σ of AlexNet's PCA colour noise; 0 turns it off
    dropout: float | None = None  # None: the spec's own rates

    def check(self) -> list[str]:
        """What is wrong with these settings (empty when nothing is)."""
        problems = []
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("crop", CROPS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, "
                                f"got `{getattr(self, name)}`")
        from archdsl.limits import MAX_EPOCHS, MAX_SCALE
        numbers = [f.name for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), float)]
        infinite = [f"{n} must be a finite number, got {getattr(self, n)}"
                    for n in numbers if not math.isfinite(getattr(self, n))]
        if infinite:  # the comparisons below mean nothing for them
            return problems + infinite
        problems += [f"{n} must be at most {MAX_SCALE} (archdsl/limits.py): the image's side "
                     f"as a multiple of the crop, got {getattr(self, n)}"
                     for n in ("scale", "scale_max", "test_scale")
                     if getattr(self, n) > MAX_SCALE]
        if self.epochs > MAX_EPOCHS:
            problems.append(f"epochs must be at most {MAX_EPOCHS:,} (archdsl/limits.py)")
        positive = ("epochs", "batch_size", "lr", "scale", "scale_max", "test_scale")
        problems += [f"{n} must be positive, got {getattr(self, n)}"
                     for n in positive if not getattr(self, n) > 0]
        nonneg = ("momentum", "weight_decay", "patience", "lr_drops", "warmup_epochs",
                  "label_smoothing", "lighting")
        problems += [f"{n} must not be negative, got {getattr(self, n)}"
                     for n in nonneg if getattr(self, n) < 0]
        if self.scale < 1 or self.test_scale < 1:
            problems.append("scale and test_scale must be at least 1 (the crop fits the image)")
        if self.crop == "multiscale" and self.scale_max < self.scale:
            problems.append("scale_max must not be smaller than scale")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.lr_factor < 1:
            problems.append(f"lr_factor must be in (0, 1), got {self.lr_factor}")
        if self.label_smoothing >= 1:
            problems.append("label_smoothing must be below 1")
        return problems

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES: dict[str, Recipe] = {
    "alexnet": Recipe(),
    "vgg": Recipe(name="vgg", epochs=74, batch_size=256, crop="multiscale",
                  test_scale=384 / 224),
    "modern": Recipe(name="modern", epochs=100, batch_size=256, optimizer="adamw", lr=1e-3,
                     weight_decay=0.05, schedule="cosine", warmup_epochs=5, crop="resized",
                     lighting=0.0, label_smoothing=0.1),
}


def recipe(name: str, **overrides) -> Recipe:
    """A preset with some fields changed (None values keep the preset's)."""
    base = RECIPES[name]
    return base.replace(**{k: v for k, v in overrides.items() if v is not None})


def from_dict(data: dict) -> Recipe:
    names = {f.name for f in dataclasses.fields(Recipe)}
    return Recipe(**{k: v for k, v in data.items() if k in names})

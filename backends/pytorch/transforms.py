"""The recipe's image transforms, built from torchvision.transforms.v2, plus what it lacks:
AlexNet's PCA lighting noise, the per-channel statistics it needs, multi-scale sizes relative
to the spec's input, ten-crop views, and per-sample seeding.

Every transform works on a uint8 C×H×W tensor (what the data sources give) and returns
float32, normalized. Random transforms draw from torch's global generator, as torchvision's
do; `seeded` runs one under a seed of its own, so that a sample's augmentation depends only on
(seed, epoch, index) — not on the worker that loads it, the process that trains on it, or
where a resumed run started.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import v2

from .recipe import Recipe

# Pixels sampled per image when estimating the data's colour statistics (bounded work).
STATS_PIXELS_PER_IMAGE = 4096


@dataclass
class PixelStats:
    """Per-channel mean and std of the training pixels (in [0, 1]), and the principal
    components of their colour covariance (AlexNet Section 4.1)."""

    mean: list[float]
    std: list[float]
    eigval: list[float]  # variances along the components, largest first
    eigvec: list[list[float]]  # columns are the components

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "eigval": self.eigval,
                "eigvec": self.eigvec}

    @classmethod
    def from_dict(cls, d: dict) -> PixelStats:
        return cls(list(d["mean"]), list(d["std"]), list(d["eigval"]),
                   [list(r) for r in d["eigvec"]])

    @classmethod
    def identity(cls, channels: int) -> PixelStats:
        """No normalization (mean 0, std 1), no colour noise: weights from elsewhere."""
        eye = torch.eye(channels).tolist()
        return cls([0.0] * channels, [1.0] * channels, [0.0] * channels, eye)


def pixel_stats(images, seed: int = 0) -> PixelStats:
    """Statistics of uint8 C×H×W images, from a bounded sample of each one's pixels."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for img in images:
        flat = img.reshape(img.shape[0], -1)
        if flat.shape[1] > STATS_PIXELS_PER_IMAGE:
            pick = torch.randint(flat.shape[1], (STATS_PIXELS_PER_IMAGE,), generator=gen)
            flat = flat[:, pick]
        samples.append(flat.to(torch.float64) / 255.0)
    if not samples:
        raise ValueError("no images to take statistics from")
    pixels = torch.cat(samples, dim=1)  # C × P
    mean = pixels.mean(dim=1)
    std = pixels.std(dim=1).clamp_min(1e-3)  # a constant channel must not divide by zero
    cov = torch.atleast_2d(torch.cov(pixels))
    eigval, eigvec = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(eigval, descending=True)
    return PixelStats(mean.tolist(), std.tolist(), eigval[order].clamp_min(0).tolist(),
                      eigvec[:, order].tolist())


class Lighting(nn.Module):
    """AlexNet's colour augmentation: add Σᵢ αᵢ·√λᵢ·pᵢ to every pixel, with αᵢ ~ N(0, σ²) drawn
    once per image, pᵢ and λᵢ the eigenvectors and eigenvalues of the training pixels' colour
    covariance. (The paper writes αᵢλᵢ for pixel values whose scale it leaves implicit; √λᵢ
    is the spread along pᵢ, which makes σ the noise as a fraction of the natural variation
    whatever the pixel scale.) Works on float images in [0, 1], before normalization."""

    def __init__(self, stats: PixelStats, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.register_buffer("eigvec", torch.tensor(stats.eigvec, dtype=torch.float32))
        self.register_buffer("spread", torch.tensor(stats.eigval, dtype=torch.float32).sqrt())

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            return img
        alpha = torch.randn(self.spread.shape[0]) * self.sigma
        shift = self.eigvec @ (alpha * self.spread)
        return img + shift.view(-1, 1, 1).to(img.dtype)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


def sizes(recipe: Recipe, crop: tuple[int, int]) -> dict[str, int]:
    """The recipe's shorter-side sizes for a crop of H×W pixels: ImageNet's 256 (and VGG's
    256…512, Q = 384) for a 224 crop, scaled to the spec's input."""
    side = max(crop)
    return {"scale": math.ceil(recipe.scale * side),
            "scale_max": math.ceil(recipe.scale_max * side),
            "test_scale": math.ceil(recipe.test_scale * side)}


def decode_side(recipe: Recipe, crop: tuple[int, int]) -> int | None:
    """The shorter side images need before the transforms resize them (so JPEGs may be
    decoded smaller, `data.decode`); None when random-resized crops may zoom in anywhere.
    Training and evaluation decode alike, so that `eval` measures what training did."""
    s = sizes(recipe, crop)
    if recipe.crop == "resized":
        return None
    return max(s["scale_max"] if recipe.crop == "multiscale" else s["scale"], s["test_scale"])


def train_transform(recipe: Recipe, crop: tuple[int, int], stats: PixelStats) -> v2.Compose:
    """Random crop (from a rescaled image, a multi-scale one, or Inception-style), horizontal
    flip, PCA lighting, normalization."""
    s = sizes(recipe, crop)
    if recipe.crop == "resized":
        steps = [v2.RandomResizedCrop(list(crop), antialias=True)]
    elif recipe.crop == "multiscale":  # VGG's scale jittering, S uniform in [Smin, Smax]
        steps = [v2.RandomResize(s["scale"], s["scale_max"] + 1, antialias=True),
                 v2.RandomCrop(list(crop))]
    else:
        steps = [v2.Resize(s["scale"], antialias=True), v2.RandomCrop(list(crop))]
    if recipe.flip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if recipe.lighting:
        steps.append(Lighting(stats, recipe.lighting))
    steps.append(v2.Normalize(stats.mean, stats.std))
    return v2.Compose(steps)


VIEWS = ("centre", "ten-crop", "dense")


def eval_transform(recipe: Recipe, crop: tuple[int, int], stats: PixelStats,
                   views: str = "centre") -> v2.Compose:
    """Rescale to the test size, then: the centre crop (C×H×W), the ten crops (10×C×H×W), or
    for dense evaluation the whole image and its mirror (2×C×S×S')."""
    scale = sizes(recipe, crop)["test_scale"]
    cut = {"centre": v2.CenterCrop(list(crop)), "ten-crop": TenCrop(crop),
           "dense": WithMirror()}[views]
    return v2.Compose([v2.Resize(scale, antialias=True), cut,
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(stats.mean, stats.std)])


class WithMirror(nn.Module):
    """The image and its mirror image, stacked (VGG's dense evaluation averages both)."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return torch.stack([img, img.flip(-1)])


class TenCrop(nn.Module):
    """torchvision's TenCrop (four corners and the centre, then the same five of the mirrored
    image), stacked into one 10×C×H×W tensor."""

    def __init__(self, crop: tuple[int, int]) -> None:
        super().__init__()
        self.crop = list(crop)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return torch.stack(v2.functional.ten_crop(img, self.crop))


def stats_view(recipe: Recipe, crop: tuple[int, int]) -> v2.Compose:
    """What statistics are taken over: the test-time view, still uint8."""
    return v2.Compose([v2.Resize(sizes(recipe, crop)["test_scale"], antialias=True),
                       v2.CenterCrop(list(crop))])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample in one epoch (splitmix64 of the three)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index) & (2**64 - 1)
    for mul in (0xBF58476D1CE4E5B9, 0x94D049BB133111EB):
        x ^= x >> 31
        x = (x * mul) & (2**64 - 1)
    return (x ^ (x >> 31)) >> 1


def seeded(transform, img: torch.Tensor, seed: int) -> torch.Tensor:
    """`transform(img)` with torch's CPU generator seeded by `seed`, restored afterwards.
    (Only the CPU generator: `torch.manual_seed` would seed every device's, 100× slower.)"""
    state = torch.get_rng_state()
    try:
        torch.default_generator.manual_seed(seed)
        return transform(img)
    finally:
        torch.set_rng_state(state)


def match_channels(img: torch.Tensor, channels: int) -> torch.Tensor:
    """A grey image for a colour network is repeated over the channels; a colour one for a
    grey network becomes its luminance (ITU-R 601, as PIL's convert('L'))."""
    have = img.shape[0]
    if have == channels:
        return img
    if have == 1:
        return img.expand(channels, -1, -1).contiguous()
    if channels == 1 and have == 3:
        return v2.functional.rgb_to_grayscale(img)
    raise ValueError(f"cannot turn a {have}-channel image into {channels} channels")

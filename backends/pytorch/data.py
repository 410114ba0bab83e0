"""Data for training and evaluation: a folder in torchvision's ImageFolder layout, or
scikit-learn's bundled digits; a held-out validation split; loaders that shard over the
processes of a distributed run and seed each sample's augmentation on its own.

A folder is either `DIR/CLASS/*.jpg` (a validation split is held out of it) or `DIR/train/CLASS/`
with `DIR/val/CLASS/` beside it (ImageNet's layout; `val` is the validation set). Images are
decoded with Pillow after a look at their header (an image over `MAX_PIXELS` is refused before
it is decoded); one that cannot be read is a `BadImage`: fatal, or reported and skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from archdsl.errors import ArchError

from .transforms import match_channels, sample_seed, seeded

MAX_PIXELS = 1 << 26  # 67 Mpixel: larger images are refused before decoding (bounded memory)
MAX_IMAGES = 10_000_000  # files in one data set (ImageNet has 1.3 M)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
                    ".gif")
BUILTIN = ("digits",)


class DataError(ArchError):
    """A data set that cannot be used: missing or empty folders, unreadable images."""


@dataclass
class BadImage:
    """An image that could not be read, with why (returned by a loader instead of a sample)."""

    path: str
    reason: str


class Source:
    """Images and labels: `image(i)` is a uint8 C×H×W tensor with the network's channels."""

    classes: list[str]
    targets: list[int]
    channels: int
    mirror = True  # a mirrored image shows the same class (false for digits and letters)
    min_side: int | None = None  # the shorter side the transforms need (JPEGs: see decode)

    def __len__(self) -> int:
        return len(self.targets)

    def name(self, i: int) -> str:
        raise NotImplementedError

    def image(self, i: int) -> torch.Tensor:
        raise NotImplementedError


class Digits(Source):
    """scikit-learn's `load_digits()`: 1,797 8×8 grey images of 0–9 (values 0–16), bundled
    with scikit-learn, so nothing is downloaded. Upsampled by the transforms like any image."""

    mirror = False

    def __init__(self, channels: int) -> None:
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise DataError("--data digits needs scikit-learn: pip install 'archdsl[train]'",
                            None) from exc
        digits = load_digits()
        images = torch.tensor(digits.images * (255 / 16)).round().to(torch.uint8)
        self.images = images.unsqueeze(1)  # N × 1 × 8 × 8
        self.targets = [int(t) for t in digits.target]
        self.classes = [str(c) for c in range(10)]
        self.channels = channels

    def name(self, i: int) -> str:
        return f"digits[{i}]"

    def image(self, i: int) -> torch.Tensor:
        return match_channels(self.images[i], self.channels)


class Folder(Source):
    """An ImageFolder: torchvision finds the classes and files; we decode them."""

    def __init__(self, root: Path, channels: int, classes: list[str] | None = None) -> None:
        from torchvision.datasets import ImageFolder
        if not root.is_dir():
            raise DataError(f"no such folder: {root}", None,
                            "--data takes a folder with one subfolder per class, or `digits`")
        counter = _Counter(root)
        try:
            folder = ImageFolder(str(root), loader=_no_loader, is_valid_file=counter)
        except FileNotFoundError as exc:
            raise DataError(f"{root}: {str(exc).split('. Supported')[0].rstrip('.')}", None,
                            "every class folder needs at least one image ("
                            + ", ".join(IMAGE_EXTENSIONS) + ")") from None
        if classes is not None and folder.classes != classes:
            raise DataError(f"{root} has the classes {_short(folder.classes)}; the training "
                            f"set has {_short(classes)}", None)
        self.root = root
        self.paths = [p for p, _ in folder.samples]
        self.targets = [t for _, t in folder.samples]
        self.classes = folder.classes
        self.channels = channels
        self.mode = "L" if channels == 1 else "RGB"
        self.cache: dict[int, torch.Tensor] | None = None

    def name(self, i: int) -> str:
        return self.paths[i]

    def image(self, i: int) -> torch.Tensor:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        return match_channels(decode(self.paths[i], self.mode, self.min_side), self.channels)


def _short(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _no_loader(path: str):
    raise AssertionError("images are decoded by archdsl's decode(), not ImageFolder's loader")


class _Counter:
    """ImageFolder's `is_valid_file`: image extensions only, and at most MAX_IMAGES of them
    (a folder of symbolic-link loops would otherwise be walked until paths grow too long)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0

    def __call__(self, path: str) -> bool:
        if not path.lower().endswith(IMAGE_EXTENSIONS) or os.path.basename(path).startswith("."):
            return False
        self.n += 1
        if self.n > MAX_IMAGES:
            raise DataError(f"{self.root} holds more than {MAX_IMAGES:,} images (the limit)",
                            None)
        return True


def decode(path: str, mode: str, min_side: int | None = None) -> torch.Tensor:
    """A uint8 C×H×W tensor; raises BadImageError naming the file and the reason.

    With `min_side`, a JPEG is decoded at 1/2, 1/4 or 1/8 of its size (Pillow's draft mode:
    the decoder's own DCT scaling) as long as both sides stay at least `min_side` — a photo
    many times larger than the transforms keep is decoded several times faster."""
    import numpy as np
    from PIL import Image

    from archdsl.inputs import check_regular
    try:
        check_regular(path)  # a FIFO named x.png would block the loader forever
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise BadImageError(path, f"{w}×{h} pixels is more than the limit of "
                                    f"{MAX_PIXELS:,}")
            if min_side and img.format == "JPEG":
                img.draft(mode, (min_side, min_side))
            array = np.asarray(img.convert(mode))
    except BadImageError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files (even SyntaxError)
        raise BadImageError(path, f"{type(exc).__name__}: {exc}") from None
    t = torch.from_numpy(array.copy())
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


class BadImageError(DataError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}", None,
                         "remove or replace it, or pass --bad-images skip to train without it")
        self.bad = BadImage(path, reason)


def open_source(data: str, channels: int, classes: list[str] | None = None
                ) -> tuple[Source, Source | None]:
    """(the training source, the validation source if the data set has its own)."""
    if data in BUILTIN:
        return Digits(channels), None
    root = Path(data)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = Folder(root / "train", channels, classes)
        return train, Folder(root / "val", channels, train.classes)
    return Folder(root, channels, classes), None


def eval_source(data: str, channels: int, trained_on: dict | None
                ) -> tuple[Source, list[int], str]:
    """What to evaluate on: DIR/val when there is one; the training run's held-out split
    when `data` is what the weights were trained on (`trained_on`: its data, seed and
    fraction); else every image. Also says which, in words."""
    train, val = open_source(data, channels)
    if val is not None:
        return val, list(range(len(val))), f"{Path(data) / 'val'}"
    key = data if data in BUILTIN else str(Path(data).resolve())
    if trained_on and trained_on.get("data") == key and trained_on.get("val_fraction"):
        fraction, seed = trained_on["val_fraction"], trained_on["seed"]
        _, held_out = split(train.targets, fraction, seed)
        return train, held_out, (f"{data}, the {fraction:.0%} held out for validation "
                                 f"(seed {seed})")
    return train, list(range(len(train))), f"{data}, every image"


def split(targets: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A stratified held-out split: `fraction` of each class (at least one image of a class
    with two or more) goes to validation, chosen by `seed`."""
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for t in sorted(by_class):
        idx = by_class[t]
        order = [idx[j] for j in torch.randperm(len(idx), generator=gen).tolist()]
        k = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if fraction > 0 else 0
        val += order[:k]
        train += order[k:]
    return sorted(train), sorted(val)


class Samples(Dataset):
    """A subset of a source, transformed. Items are asked for as (position, seed): the
    transform runs under that seed (`transforms.seeded`). A sample that cannot be read comes
    back as a BadImage, which `collate` sets aside."""

    def __init__(self, source: Source, indices: list[int], transform) -> None:
        self.source = source
        self.indices = indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]):
        pos, seed = key
        i = self.indices[pos]
        try:
            img = self.source.image(i)
        except BadImageError as exc:
            return exc.bad
        return seeded(self.transform, img, seed), self.source.targets[i]

    @property
    def targets(self) -> list[int]:
        return [self.source.targets[i] for i in self.indices]


def collate(items):
    """(images, labels, bad images) from a list of samples and BadImages."""
    good = [it for it in items if not isinstance(it, BadImage)]
    bad = [it for it in items if isinstance(it, BadImage)]
    if not good:
        return None, None, bad
    return (torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), bad)


class SeededSampler(DistributedSampler):
    """torch's DistributedSampler (shuffled by seed + epoch, one shard per process), giving
    each position with its augmentation seed, and able to start `skip` samples into its shard
    (a run resumed in the middle of an epoch)."""

    def __init__(self, dataset: Samples, world: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.skip = 0

    def __iter__(self):
        positions = list(super().__iter__())[self.skip:]
        return iter([(p, sample_seed(self.seed, self.epoch, p)) for p in positions])

    def __len__(self) -> int:
        return self.num_samples - self.skip


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation: every `world`-th sample from `rank`, in order, none repeated (torch's
    DistributedSampler pads the shards to equal sizes, which would count some twice)."""

    def __init__(self, n: int, world: int = 1, rank: int = 0) -> None:
        self.positions = list(range(rank, n, world))

    def __iter__(self):
        return iter([(p, 0) for p in self.positions])

    def __len__(self) -> int:
        return len(self.positions)


def loader(dataset: Samples, sampler, batch_size: int, workers: int, pin: bool,
           drop_last: bool = False) -> DataLoader:
    """A DataLoader over `sampler`'s (position, seed) pairs. It has a generator of its own:
    drawing its workers' base seed must not move torch's global generator, which dropout
    uses and a checkpoint restores."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, pin_memory=pin, drop_last=drop_last,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                      generator=torch.Generator().manual_seed(0))


def cache_images(source: Source, indices: list[int], limit_bytes: int, on_bad) -> int:
    """Decode every image of a folder source once, into memory (shared with the loader's
    workers, which fork after this). Refuses when the decoded images would pass
    `limit_bytes`; `on_bad(BadImage)` is told of each unreadable image (and may raise).
    Returns the bytes held."""
    if not isinstance(source, Folder):
        return 0  # already in memory
    cache = source.cache if source.cache is not None else {}
    held = sum(t.numel() for t in cache.values())
    for i in indices:
        if i in cache:
            continue
        try:
            img = source.image(i)
        except BadImageError as exc:
            on_bad(exc.bad)
            continue
        held += img.numel()
        if held > limit_bytes:
            raise DataError(f"the decoded images of {source.root} need more than "
                            f"{limit_bytes / 2**20:,.0f} MiB (--cache-limit)", None,
                            "raise --cache-limit, or train without --cache")
        cache[i] = img
    source.cache = cache
    return held

"""What a run leaves to read: the metrics log (CSV and JSON, a row per epoch), the loss and
accuracy curves, and an evaluation's confusion matrix, drawn with matplotlib when it is
installed (the [train] extra). Every file is written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from archdsl.atomic import atomic_path

# `seconds`: the epoch's training steps; `elapsed`: since the run began (validation,
# checkpoints and start-up included; a resumed run goes on counting from its checkpoint).
COLUMNS = ("epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_top1",
           "val_top5", "images_per_s", "seconds", "elapsed")


def write_metrics(out: Path, history: list[dict]) -> list[Path]:
    """metrics.csv and metrics.json in `out`, holding `history` (a dict per epoch)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    paths = [out / "metrics.csv", out / "metrics.json"]
    with atomic_path(paths[0]) as tmp:
        tmp.write_text(text.getvalue())
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(json.dumps(history, indent=1) + "\n")
    return paths


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)  # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


def _save(fig, plt, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120,
                    bbox_inches="tight", metadata=_no_date(path))
    plt.close(fig)
    return path


def _no_date(path: Path) -> dict:
    """Pictures that do not change when nothing in them did (no creation date)."""
    return {"svg": {"Date": None}, "png": {}, "pdf": {"CreationDate": None}}.get(
        path.suffix.lstrip("."), {})


def plot_curves(history: list[dict], path: Path, title: str = "") -> Path | None:
    """Loss (training and validation) and top-1/top-5 accuracy per epoch; None without
    matplotlib."""
    plt = _pyplot()
    if plt is None or not history:
        return None
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="training")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    for key, label in (("train_top1", "training top-1"), ("val_top1", "validation top-1"),
                       ("val_top5", "validation top-5")):
        acc_ax.plot(epochs, [100 * h[key] for h in history], label=label)
    acc_ax.set(xlabel="epoch", ylabel="%", title="accuracy")
    # dotted lines where the learning rate was divided (the row's rate is the epoch's)
    drops = [b["epoch"] - 0.5 for a, b in zip(history, history[1:], strict=False)
             if b["lr"] < a["lr"] * 0.5]
    for ax in (loss_ax, acc_ax):
        for x in drops:
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, y=1.02)
    return _save(fig, plt, path)


def plot_confusion(confusion, classes: list[str], path: Path, title: str = "") -> Path | None:
    """The confusion matrix as a picture, rows normalized to the fraction of each true
    class; None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    counts = confusion.double()
    rows = counts.sum(dim=1, keepdim=True).clamp_min(1)
    k = len(classes)
    side = min(2 + 0.35 * k, 24)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow((counts / rows).numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = range(k) if k <= 60 else []  # labels would overlap
    ax.set_xticks(list(ticks), [classes[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(list(ticks), [classes[i] for i in ticks], fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    if k <= 20:  # the counts themselves fit in the cells
        for t in range(k):
            for p in range(k):
                if counts[t, p]:
                    ax.text(p, t, int(counts[t, p]), ha="center", va="center", fontsize=7,
                            color="white" if counts[t, p] / rows[t, 0] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, plt, path)

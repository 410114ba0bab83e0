"""Train a small network, written as an inline spec, on scikit-learn's digits with the Python
API behind `archdsl train`, then evaluate the weights it wrote as `archdsl eval` does.

    python examples/train_digits.py [--epochs N] [--seed S] [--out DIR]

The data is scikit-learn's bundled `load_digits()` (1,797 8×8 grey images, 10 classes; no
download), 10% held out for validation. The recipe is AlexNet's (random crops of rescaled
images, PCA lighting, SGD with momentum 0.9 and weight decay 5e-4, the learning rate ÷10 on
plateaus) with a larger learning rate and a smaller batch for so small a network and data set;
flips are left out because a mirrored digit is another digit. The command line equivalent:

    archdsl train SPEC --data digits --batch-size 32 --lr 0.05 --epochs N

Prints the validation top-1 accuracy of the best epoch's weights and exits non-zero below 90%.
Needs the [train] extra (`pip install 'archdsl[train]'`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import archdsl
from archdsl.backends.pytorch.evaluate import EvalConfig, run_eval
from archdsl.backends.pytorch.recipe import recipe
from archdsl.backends.pytorch.train import TrainConfig, train

SPEC = """
# LeNet-style: two conv layers with pooling, then two FC layers.
arch digits_net(classes = 10)
input 1x8x8
conv3-16 act=relu          # 16x8x8
maxpool                    # 16x4x4
conv3-32 act=relu          # 32x4x4
FC-64 act=relu
FC-{classes} act=none      # scores (the loss applies the softmax)
"""

TARGET = 0.90


def show(kind: str, info: dict) -> None:
    """The trainer's events (the command line draws a progress bar from the same)."""
    if kind == "start":
        print(f"{info['train']} training and {info['val']} validation images, "
              f"{info['steps_per_epoch']} steps an epoch")
        for note in info["notes"]:
            print(f"note: {note}")
    elif kind == "epoch":
        print(f"epoch {info['epoch']:>2}: train loss {info['train_loss']:.4f}, validation "
              f"top-1 {info['val_top1']:.4f}, top-5 {info['val_top5']:.4f}, lr {info['lr']:g}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="keep the run here (default: a temporary folder)")
    args = ap.parse_args()

    arch = archdsl.load(SPEC)
    totals = arch.stats().totals
    print(f"{arch}: {totals['params']:,} params, {totals['macs']:,} MACs per image")

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "run"
        config = TrainConfig(spec=SPEC, data="digits", out=out, seed=args.seed, plot="",
                             recipe=recipe("alexnet", epochs=args.epochs, batch_size=32,
                                           lr=0.05))
        result = train(config, show)
        print(f"stopped: {result.stopped} after {result.steps} steps, "
              f"{result.seconds:.1f} s")
        # evaluate the saved weights again, as `archdsl eval` would: the same held-out images
        report = run_eval(EvalConfig(spec=SPEC, weights=out / "best.safetensors",
                                     data="digits"))
    acc = report.scores.top1_accuracy
    print(f"evaluated on {report.data}")
    if abs(acc - result.best_top1) > 1e-9:  # the same images, transform and weights
        print(f"FAILED: eval gives {acc:.4f}, training measured {result.best_top1:.4f}",
              file=sys.stderr)
        return 1
    print(f"top-1 validation accuracy: {acc:.4f} ({round(acc * report.scores.n)}/"
          f"{report.scores.n}), epoch {result.best_epoch}")
    if acc <= TARGET:
        print(f"FAILED: accuracy {acc:.4f} is not above {TARGET:.2f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train a small LeNet-style network, written as an inline spec, on scikit-learn's digits.

    python examples/train_digits.py [--epochs N] [--seed S]

The data is scikit-learn's bundled `load_digits()` (1,797 8x8 grey images, 10 classes; no
download). The network is built with `to_torch()` and trained on the CPU with Adam; the script
prints the top-1 accuracy on a held-out test split and exits non-zero below 90%.
Needs torch and scikit-learn (`pip install 'archdsl[torch,examples]'`).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import archdsl

SPEC = """
# LeNet-style: two conv layers with pooling, then two FC layers.
arch digits_net(classes = 10)
input 1x8x8
conv3-16 act=relu          # 16x8x8
maxpool                    # 16x4x4
conv3-32 act=relu          # 32x4x4
FC-64 act=relu
FC-{classes} act=none      # logits (CrossEntropyLoss applies the softmax)
"""

TARGET = 0.90


def data(seed: int):
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N x 1 x 8 x 8
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(torch.arange(len(y)).numpy(), test_size=0.25,
                                           random_state=seed, stratify=digits.target)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: tensors this small gain nothing from more, "
                         "and extra threads slow down badly on a busy machine)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    arch = archdsl.load(SPEC)
    totals = arch.stats().totals
    print(f"{arch}: {totals['params']:,} params, {totals['macs']:,} MACs per image")
    model = arch.to_torch()
    print(model)

    x_train, y_train, x_test, y_test = data(args.seed)
    print(f"digits: {len(y_train)} train, {len(y_test)} test images of "
          f"{'x'.join(map(str, x_train.shape[1:]))}")

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=gen)
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            b = order[i:i + args.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x_train[b]), y_train[b])
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        print(f"epoch {epoch:>2}: train loss {total / len(y_train):.4f}, "
              f"test accuracy {accuracy(model, x_test, y_test):.4f}")

    acc = accuracy(model, x_test, y_test)
    print(f"top-1 test accuracy: {acc:.4f} ({round(acc * len(y_test))}/{len(y_test)})")
    print(f"time: {time.perf_counter() - t0:.1f} s")
    if acc <= TARGET:
        print(f"FAILED: accuracy {acc:.4f} is not above {TARGET:.2f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

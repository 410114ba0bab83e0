"""Transfer learning: torchvision weights into an archdsl ResNet-18 with a new 10-class head.

    python examples/transfer_learning.py [--steps N] [--size PX]

1. build resnet18 from specs/resnet.arch with `to_torch(num_classes=10)` (the head `fc` is
   rebuilt with 10 outputs and keeps its name);
2. load a torchvision resnet18 state_dict with `load_weights(..., strict=False)`: every tensor
   whose name and shape fit is loaded, and the 1000-class head is reported as skipped. (This
   machine cannot download, so the torchvision model is randomly initialised — with
   `weights=ResNet18_Weights.DEFAULT` the code is the same);
3. `freeze(model)`: only the head stays trainable;
4. train the head a few steps on random data and check that only `fc.*` changed.

The spec's input is 3x224x224, but the module ends in global average pooling, so it also runs
on smaller images; 64x64 keeps this quick. Needs torch and torchvision.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchvision
from torch import nn

import archdsl
from archdsl.backends.pytorch import freeze, load_weights

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--size", type=int, default=64, help="image side (the spec says 224)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    arch = archdsl.load(ROOT / "specs" / "resnet.arch", arch="resnet18")
    model = arch.to_torch(num_classes=10)
    print(f"{arch.name}: built with a 10-class head, "
          f"{sum(p.numel() for p in model.parameters()):,} params; fc = {model.fc}")

    # Weights from torchvision (random init here: no downloads on this machine).
    reference = torchvision.models.resnet18()
    diff = load_weights(model, reference.state_dict(), strict=False)
    loaded = len(model.state_dict()) - len(diff.missing) - len(diff.mismatched)
    print(f"loaded {loaded} of {len(model.state_dict())} tensors; skipped:")
    print("  " + diff.render().replace("\n", "\n  "))
    skipped = sorted(k for k, _, _ in diff.mismatched)
    assert skipped == ["fc.bias", "fc.weight"], skipped
    assert not diff.missing and not diff.unexpected, diff

    # The body now computes what torchvision's does: compare the pooled features.
    x = torch.randn(args.batch_size, 3, args.size, args.size)
    reference.fc = nn.Identity()
    features = {}
    model.avgpool.register_forward_hook(lambda m, i, o: features.update(ours=o.flatten(1)))
    model.eval()
    reference.eval()
    with torch.no_grad():
        logits = model(x)
        theirs = reference(x)
    err = (features["ours"] - theirs).abs().max().item()
    print(f"forward {tuple(x.shape)} -> {tuple(logits.shape)} (global pooling: any size works); "
          f"features vs torchvision: max abs diff {err:.2e}")
    assert tuple(logits.shape) == (args.batch_size, 10)
    assert err < 1e-4, err

    trainable = freeze(model)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"freeze(model): trainable {trainable} ({n_train:,} params)")
    assert trainable == ["fc.weight", "fc.bias"], trainable

    # Train the head. freeze() only stops gradients: BatchNorm running statistics would still
    # update in train mode, so the frozen body stays in eval mode and only the head trains.
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.eval()
    model.fc.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    y = torch.randint(0, 10, (args.batch_size,))
    for step in range(1, args.steps + 1):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        print(f"step {step}: loss {loss.item():.4f}")

    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    print(f"changed tensors: {changed}")
    assert changed == ["fc.bias", "fc.weight"], changed
    print("OK: only the head changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

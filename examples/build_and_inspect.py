"""Load a spec, look at its size and cost, build it as a PyTorch module and run it.

    python examples/build_and_inspect.py [SPEC] [--arch NAME]

With no arguments it uses specs/resnet50.arch. Then it shows the same API on spec *text*
(a small inline network) and on a parameter override (MobileNet v1 at alpha=0.5, 160x160).
Needs torch for the forward passes (`pip install 'archdsl[torch]'`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import archdsl

ROOT = Path(__file__).resolve().parents[1]

INLINE_SPEC = """
# A tiny VGG-style network, written inline.
arch tiny(classes = 10, width = 32)
input 3x32x32
defaults norm=bn act=relu
conv3-{width} x2; maxpool
conv3-{2 * width} x2; maxpool
gap
fc: FC-{classes} act=none
"""


def show(arch: archdsl.Architecture, rows: int = 6) -> None:
    """Print an architecture's totals, its first layer rows, and run its module once."""
    print(arch)
    stats = arch.stats()
    t = stats.totals
    print(f"  params {t['params']:,}   MACs {t['macs']:,}   "
          f"activations {t['activation_bytes'] / 2**20:.1f} MiB/image   "
          f"weights {t['param_bytes'] / 2**20:.1f} MiB")
    if rows:
        print(f"  {'layer':<24}{'op':<10}{'shape':<16}{'params':>12}{'MACs':>16}")
    shown = stats.rows[:rows]
    for r in shown:
        shape = "x".join(map(str, r.shape)) if r.shape is not None else "?"
        print(f"  {r.name:<24}{r.op:<10}{shape:<16}{r.params:>12,}{r.macs:>16,}")
    if len(stats.rows) > rows:
        print(f"  ... {len(stats.rows) - rows} more layers")

    model = arch.to_torch().eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == t["params"], (n_params, t["params"])
    x = torch.randn(2, *arch.graph.input_shape)
    with torch.no_grad():
        y = model(x)
    print(f"  torch: {type(model).__name__} with {n_params:,} parameters; "
          f"forward {tuple(x.shape)} -> {tuple(y.shape)}")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "resnet50.arch"))
    ap.add_argument("--arch", default=None, help="which architecture, when the file has several")
    args = ap.parse_args()
    torch.manual_seed(0)

    print("== a spec file ==")
    net = archdsl.load(args.spec, arch=args.arch)
    show(net)
    # Submodules sit at the spec's names (for ResNet, torchvision's).
    model = net.to_torch()
    names = [n for n, _ in model.named_modules() if n][:4]
    print("  first submodules:", ", ".join(names))
    print()

    print("== spec text ==")
    tiny = archdsl.load(INLINE_SPEC)
    show(tiny)
    print("  the same, twice as wide (with_settings):")
    show(tiny.with_settings(width=64), rows=0)

    print("== a parameter override: MobileNet v1, alpha=0.5, resolution=160 ==")
    mobilenet = archdsl.load(ROOT / "specs" / "mobilenet_v1.arch", alpha=0.5, resolution=160)
    show(mobilenet, rows=4)
    # The paper's Table 6/7 reports 0.5 MobileNet-160 as 76 M Mult-Adds and 1.32 M params.
    t = mobilenet.stats().totals
    print(f"0.5 MobileNet-160: {t['macs'] / 1e6:.0f} M MACs, {t['params'] / 1e6:.2f} M params "
          f"(paper: 76 M, 1.32 M)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How far float16 builds are from float32: archdsl's TVM float16 build and PyTorch's own
float16 forward, both against PyTorch float32, same weights and input.

Prints, per model, the largest |difference| over the largest |float32 output| (the "output
scale") for each, and their ratio. PyTorch runs float16 on the CPU here (slow, but exact to
its kernels' rounding); a spec with an op PyTorch cannot run in half on the CPU says so.

    python benchmarks/fp16_error.py                       # resnet18, mobilenet_v1 (small), lenet5
    python benchmarks/fp16_error.py --models resnet18 --seed 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import archdsl
from archdsl.backends import tvm as backend

ROOT = Path(__file__).resolve().parents[1]
# name → (spec, parameters)
MODELS = {
    "resnet18": ("resnet18.arch", {}),
    "mobilenet_v1": ("mobilenet_v1.arch", {"alpha": 0.25, "resolution": 64}),
    "lenet5": ("lenet5.arch", {}),
}


def errors(name: str, seed: int) -> tuple[float, float | str]:
    spec, params = MODELS[name]
    arch = archdsl.load(ROOT / "specs" / spec, **params)
    torch.manual_seed(seed)
    model = arch.to_torch().eval()
    x = torch.randn(1, *arch.graph.input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x).numpy()
        scale = float(np.abs(ref).max())
        compiled = backend.compile(arch.graph, weights=model.state_dict(), dtype="float16")
        tvm_err = float(np.abs(compiled(x.numpy()).astype(np.float32) - ref).max()) / scale
        try:
            half = model.half()(x.half()).float().numpy()
            torch_err: float | str = float(np.abs(half - ref).max()) / scale
        except RuntimeError as exc:  # an op without a CPU half kernel
            torch_err = f"PyTorch cannot: {str(exc)[:60]}"
    return tvm_err, torch_err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"{'model':14s} {'archdsl TVM float16':>20s} {'PyTorch float16':>16s} {'ratio':>7s}")
    for name in args.models.split(","):
        tvm_err, torch_err = errors(name, args.seed)
        if isinstance(torch_err, str):
            print(f"{name:14s} {100 * tvm_err:19.3f}% {torch_err}")
        else:
            print(f"{name:14s} {100 * tvm_err:19.3f}% {100 * torch_err:15.3f}% "
                  f"{tvm_err / torch_err:7.2f}")
    print("(max |float16 - float32| / max |float32 output|, PyTorch float32 as the reference)")


if __name__ == "__main__":
    main()

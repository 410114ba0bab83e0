"""Export a spec for deployment: ONNX (checked with onnxruntime), and — when TVM is installed —
a compiled native library that needs only the TVM runtime to run.

    python examples/export_and_compile.py [SPEC] [--arch NAME] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import archdsl
from archdsl.backends.pytorch.export import export

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "mobilenet_v1.arch"))
    parser.add_argument("--arch")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="archdsl-")))
    args = parser.parse_args()

    # a small MobileNet by default: the spec's own parameters shrink it
    params = {"alpha": 0.25, "resolution": 96} if args.spec.endswith("mobilenet_v1.arch") else {}
    arch = archdsl.load(args.spec, arch=args.arch, **params)
    model = arch.to_torch().eval()
    print(arch)

    report = export(model, arch.graph.input_shape, "onnx", args.out / f"{arch.name}.onnx")
    print(f"ONNX: {report.path} ({report.bytes / 2**20:.2f} MiB), checked with {report.checked}, "
          f"max abs diff vs PyTorch {report.max_abs_diff:.2g}")

    try:
        import tvm  # noqa: F401
    except ImportError:
        print("TVM: not installed (pip install 'archdsl[tvm]'); skipping the compiled library")
        return
    # the same weights in both: the TVM path takes the PyTorch state_dict (or a file)
    compiled = arch.compile("llvm", weights=model.state_dict())
    lib = compiled.export_library(args.out / f"{arch.name}.so")
    from archdsl.backends.tvm import Compiled
    loaded = Compiled.load(lib)  # what a deployment does: the runtime loads the library
    x = np.random.default_rng(0).standard_normal(loaded.input_shape).astype("float32")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    diff = float(abs(loaded(x) - expected).max())
    print(f"TVM: {lib} ({lib.stat().st_size / 2**20:.2f} MiB), compiled in "
          f"{compiled.compile_seconds:.1f} s, max abs diff vs PyTorch {diff:.2g}")
    print(f"top class: {int(expected.argmax())} (PyTorch), {int(loaded(x).argmax())} (TVM)")


if __name__ == "__main__":
    main()

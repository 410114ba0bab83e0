"""CUDA libraries of `archdsl compile` on a GPU machine that has no archdsl and no TVM compiler:
each checked against its CPU build's output, then timed next to PyTorch eager (torchvision's
network of the same name, cuDNN benchmark mode) on the same GPU. Prints a JSON report.

Here (with archdsl and TVM), for each network NAME and batch B:

    archdsl compile specs/resnet18.arch --target cuda --batch 32 -o DIR/NAME_cuda.so
    archdsl compile specs/resnet18.arch --target llvm --batch 32 -o /tmp/NAME_cpu.so
    python benchmarks/cuda_vs_eager.py --reference /tmp/NAME_cpu.so DIR/NAME_ref.npy

There (TVM's runtime alone, `TVM_USE_RUNTIME_LIB=1`; numpy, torch and torchvision):

    python benchmarks/cuda_vs_eager.py DIR NAME=TORCHVISION_NAME ...

The input is a fixed function of the input shape (a sine of the element index), the same on
both machines, so that only the reference outputs travel. A library's kernels come from its
manifest (compiled by nvcc when it was written): no CUDA compiler is needed there."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import deploy  # noqa: E402


def fixed_input(shape) -> np.ndarray:
    return np.sin(np.arange(int(np.prod(shape))) * 0.001).reshape(shape).astype(np.float32)


def _median_ms(run, argument, sync, runs: int = 100) -> float:
    """The median of `runs` timed calls of run(argument), each synchronized, after 10."""
    for _ in range(10):
        run(argument)
    sync()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run(argument)
        sync()
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", help="the folder of NAME_cuda.so and NAME_ref.npy")
    ap.add_argument("networks", nargs="*", help="NAME=TORCHVISION_NAME (resnet18=resnet18)")
    ap.add_argument("--reference", nargs=2, metavar=("CPU_LIBRARY", "OUT_NPY"),
                    help="write a CPU library's output on the fixed input (here, not there)")
    args = ap.parse_args()
    if not args.reference and not args.folder:
        ap.error("give the folder of the libraries (or --reference CPU_LIBRARY OUT_NPY)")
    import tvm
    if args.reference:
        deploy.verify(args.reference[0])
        vm, meta = deploy.load(args.reference[0], "cpu")
        np.save(args.reference[1], vm["main"](tvm.runtime.tensor(
            fixed_input(tuple(meta["input"])))).numpy())
        return
    import torch
    import torchvision
    torch.backends.cudnn.benchmark = True
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for pair in args.networks:
        name, torch_name = pair.split("=")
        library = str(Path(args.folder) / f"{name}_cuda.so")
        deploy.verify(library)
        started = time.perf_counter()
        vm, meta = deploy.load(library, "cuda")
        loaded = time.perf_counter() - started
        x = fixed_input(tuple(meta["input"]))
        ref = np.load(Path(args.folder) / f"{name}_ref.npy")
        dev = tvm.device("cuda", 0)
        xt = tvm.runtime.tensor(x, dev)
        y = vm["main"](xt).numpy()
        model = getattr(torchvision.models, torch_name)().eval().cuda()
        xc = torch.from_numpy(x).cuda()
        with torch.no_grad():
            eager = _median_ms(model, xc, torch.cuda.synchronize)
        report[name] = {
            "batch": int(x.shape[0]), "load_s": round(loaded, 3),
            "max_diff_over_scale": float(np.abs(y - ref).max() / np.abs(ref).max()),
            "tvm_ms": round(_median_ms(vm["main"], xt, dev.sync), 3),
            "torch_eager_ms": round(eager, 3)}
        print(name, report[name], flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

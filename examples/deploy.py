"""Run a library written by `archdsl compile` where archdsl is not installed: this file, the
`.so`, numpy and TVM's runtime are all a deployment needs (no archdsl, no torch, no TVM compiler).

TVM's runtime is the `tvm` and `tvm_ffi` packages of the apache-tvm wheel without
`tvm/lib/libtvm_compiler.so` (and `tvm/3rdparty`): about 7 MB compressed. A CUDA library also
needs `tvm/lib/libtvm_runtime_cuda.so`, the CUDA runtime it links (libcudart) and the driver.
TVM 0.27 keeps a library's kernels as CUDA source, which its CUDA runtime compiles as the
library loads, through the function `tvm_callback_cuda_compile` (TVM's own, in
`tvm.support.nvcc`, needs TVM's compiler). `archdsl compile` compiles them with nvcc into the
manifest (`cuda_kernels`) and this file hands those to the runtime; for a library whose
manifest has none it runs `nvcc` here for the GPU the manifest names (ResNet-18's 38 kernels:
7 s on an H200 machine).
TVM's thread pool starts half as many threads as there are logical CPUs (it assumes SMT pairs):
set TVM_NUM_THREADS to the core count where that is wrong (archdsl's own `run` does).

A library is code: loading it runs it. Like `archdsl run`, this loads a library only if it
matches the SHA-256 in the manifest `archdsl compile` wrote beside it (`resnet18.so.json`).

    python examples/deploy.py resnet18.so [--input x.npy] [--device cpu|cuda] [--repeat 20]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine


def verify(path: str) -> None:
    """Refuse a library that does not match its manifest's `library_sha256`."""
    manifest = Path(path + ".json")
    try:
        want = json.loads(manifest.read_text())["library_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"error: cannot read the manifest {manifest} ({exc}); a library is "
                         "code: load only one whose manifest vouches for it") from None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != want:
        raise SystemExit(f"error: {path} does not match its manifest {manifest}")


def use_nvcc(arch: str | None) -> None:
    """Compile the CUDA source of a library as it loads with `nvcc` for `arch` (sm_90...; None:
    this machine's GPU 0)."""
    import shutil
    import subprocess
    import tempfile

    import tvm_ffi
    nvcc = shutil.which("nvcc") or shutil.which("/usr/local/cuda/bin/nvcc")
    if nvcc is None:
        raise SystemExit("error: a CUDA library's kernels are compiled as it loads, and nvcc "
                         "is not on PATH")

    @tvm_ffi.register_global_func("tvm_callback_cuda_compile", override=True)
    def compile_cuda(code: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="archdsl-cuda-") as folder:
            source, binary = Path(folder) / "kernels.cu", Path(folder) / "kernels.fatbin"
            source.write_text(code)
            number = (arch.removeprefix("sm_") if arch else
                      tvm.cuda(0).compute_version.replace(".", ""))
            subprocess.run([nvcc, "--fatbin", "-O3", f"-arch=sm_{number}", "-o", str(binary),
                            str(source), "-w"], check=True)
            return binary.read_bytes()


def use_kernels(kernels: dict) -> None:
    """Answer TVM's CUDA runtime with the kernels `archdsl compile` compiled (the manifest's
    `cuda_kernels`: the SHA-256 of each CUDA source → its fatbin, base64)."""
    import base64

    import tvm_ffi
    binaries = {k: base64.b64decode(v, validate=True) for k, v in kernels.items()}

    @tvm_ffi.register_global_func("tvm_callback_cuda_compile", override=True)
    def compiled(code: str) -> bytes:
        digest = hashlib.sha256(code.encode()).hexdigest()
        if digest not in binaries:
            raise SystemExit("error: the library's CUDA source is not among the kernels its "
                             "manifest holds")
        return binaries[digest]


def load(path: str, device: str):
    """The library's VM on `device`, and its metadata (arch, input/output shapes, dtype)."""
    if device == "cuda":  # kernels compiled by `archdsl compile`, else nvcc here
        manifest = json.loads(Path(path + ".json").read_text())
        target = manifest.get("target")
        if isinstance(manifest.get("cuda_kernels"), dict):
            use_kernels(manifest["cuda_kernels"])
        else:  # the GPU the manifest names, else this one
            use_nvcc(target.get("arch") if isinstance(target, dict) else None)
    if device != "cpu":
        from tvm.base import _LOADED_LIBS
        from tvm_ffi.libinfo import load_lib_ctypes
        # a runtime-only TVM does not load its device runtimes by itself
        name = f"tvm_runtime_{device}"
        if name not in _LOADED_LIBS:
            folder = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
            _LOADED_LIBS[name] = load_lib_ctypes(package="tvm", target_name=name,
                                                 extra_lib_paths=[folder], mode="RTLD_LOCAL")
    lib = tvm.runtime.load_module(path)
    vm = VirtualMachine(lib, tvm.device(device, 0))
    return vm, json.loads(str(vm["archdsl_meta"]()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("library")
    parser.add_argument("--input", help=".npy array of the compiled input shape (default: "
                        "random)")
    parser.add_argument("--device", default="cpu", help="cpu (an llvm build) or cuda")
    parser.add_argument("--repeat", type=int, default=0, help="also time this many runs")
    args = parser.parse_args()

    verify(args.library)
    try:
        vm, meta = load(args.library, args.device)
    except (OSError, RuntimeError) as exc:  # not a library; no driver for its device code
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise SystemExit(f"error: cannot load {args.library} for {args.device}: {why}") from None
    shape, dtype = tuple(meta["input"]), meta["dtype"]
    x = (np.load(args.input) if args.input else
         np.random.default_rng(0).standard_normal(shape)).astype(dtype)
    if x.shape != shape:
        raise SystemExit(f"error: the input has shape {list(x.shape)}; {meta['arch']} takes "
                         f"{list(shape)}")
    dev = tvm.device(args.device, 0)
    xt = tvm.runtime.tensor(x, dev)
    y = vm["main"](xt).numpy()
    # what the numbers are: a softmax's probabilities, or the last layer's logits
    what = {"softmax": "probabilities", "fc": "logits", "linear": "logits",
            "conv": "logits"}.get(meta.get("output_op"), "scores")
    for b, row in enumerate(y.reshape(y.shape[0], -1)):
        best = np.argsort(-row)[:5]
        print(f"[{b}] top-5 {what}: " + ", ".join(f"class {int(i)}: {row[i]:.4g}" for i in best))
    if args.repeat:
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            vm["main"](xt)
            dev.sync()
            times.append(time.perf_counter() - started)
        print(f"{meta['arch']} batch {shape[0]} on {args.device}: median "
              f"{1e3 * float(np.median(times)):.2f} ms, best {1e3 * min(times):.2f} ms "
              f"({args.repeat} runs, {tvm.runtime.num_threads()} CPU threads)")


if __name__ == "__main__":
    main()

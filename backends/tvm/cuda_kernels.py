"""A CUDA library's kernels compiled when it is exported, so that it loads without a CUDA
compiler.

TVM 0.27 keeps a CUDA build's kernels as CUDA source; its CUDA runtime compiles that source as
the library loads, through the global function `tvm_callback_cuda_compile` (TVM's own, in
`tvm.support.nvcc`, needs TVM's compiler). `Compiled.export_library` compiles each CUDA module's
source with `nvcc` for the build's GPU (`--fatbin`) and writes the binaries into the manifest
(`cuda_kernels`: the SHA-256 of each source → its fatbin, base64; 200–300 KB for ResNet-18/50);
`Compiled.load` hands them to that hook (`provide`), which answers a source by its hash and
passes any other to the hook it replaced. Without `nvcc` at export the manifest has none and
the deployment compiles the source itself, as before."""

from __future__ import annotations

import base64
import binascii
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["KEY", "KernelError", "compile_kernels", "provide"]

KEY = "cuda_kernels"


class KernelError(RuntimeError):
    """nvcc could not compile a CUDA build's kernels (an architecture it does not know)."""


HOOK = "tvm_callback_cuda_compile"
_KERNELS: dict[str, bytes] = {}  # SHA-256 of a source → its binary, for every library loaded
_previous: list = []  # the hook replaced (TVM's own, if its compiler is there)


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def compile_kernels(modules, arch: str) -> dict[str, str]:
    """{SHA-256 of a CUDA module's source: its fatbin for `arch` (sm_90...), base64} for the
    CUDA modules among `modules`; {} without `nvcc` on PATH."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return {}
    made = {}
    for module in modules:
        if module.kind != "cuda":
            continue
        source = module.inspect_source()
        with tempfile.TemporaryDirectory(prefix="archdsl-cuda-") as folder:
            code, binary = Path(folder) / "kernels.cu", Path(folder) / "kernels.fatbin"
            code.write_text(source)
            done = subprocess.run([nvcc, "--fatbin", "-O3", f"-arch={arch}", "-w", "-o",
                                   str(binary), str(code)], capture_output=True, text=True)
            if done.returncode:
                raise KernelError(f"nvcc could not compile the CUDA kernels for {arch}: "
                                   f"{done.stderr.strip()[-2000:]}")
            made[_digest(source)] = base64.b64encode(binary.read_bytes()).decode()
    return made


def provide(kernels) -> None:
    """Let TVM's CUDA runtime take these compiled kernels (a manifest's `cuda_kernels`) for
    their sources as a library loads. A ValueError if they are not such a table."""
    import tvm_ffi
    if not isinstance(kernels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in kernels.items()):
        raise ValueError(f"{KEY} is not a table of SHA-256 → base64 binaries")
    try:
        decoded = {k: base64.b64decode(v, validate=True) for k, v in kernels.items()}
    except binascii.Error:
        raise ValueError(f"{KEY} holds a binary that is not base64") from None
    _KERNELS.update(decoded)
    if not _previous:
        _previous.append(tvm_ffi.get_global_func(HOOK, allow_missing=True))
        tvm_ffi.register_global_func(HOOK, _compiled, override=True)


def _compiled(source: str) -> bytes:
    binary = _KERNELS.get(_digest(source))
    if binary is not None:
        return binary
    if _previous[0] is not None:
        return _previous[0](source)
    raise RuntimeError("a CUDA library's kernels are not among those compiled when it was "
                       "exported, and no CUDA compiler is hooked into TVM here")

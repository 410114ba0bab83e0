"""The runtime half of the TVM backend: `Compiled`, a built network to call, save and load.

Everything here needs only TVM's runtime, not its compiler, nor torch: a deployment loads a
library written by `archdsl compile` with `Compiled.load` (or `archdsl run`) under a runtime-only
TVM (the `tvm` and `tvm_ffi` packages without `libtvm_compiler.so`, or `TVM_USE_RUNTIME_LIB=1`).
`archdsl.backends.tvm` (build.py) compiles and re-exports `Compiled`."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine

from archdsl.backends.tvm import cpu, cuda_kernels, library
from archdsl.inputs import open_regular

__all__ = ["Compiled", "LibraryError", "physical_cores", "read_input", "runtime_threads",
           "use_physical_cores"]

LibraryError = library.LibraryError

# The name of the Relax function that returns a build's metadata (JSON), so that a loaded
# library knows its input shape and dtype.
META_FUNC = "archdsl_meta"


# ---------------------------------------------------------------- threads

def physical_cores() -> int:
    """The cores this process may run on, SMT siblings counted once (Linux topology; the
    logical CPU count elsewhere)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
    cores = set()
    for number in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{number}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(),
                       (topology / "core_id").read_text()))
        except OSError:
            return len(cpus)
    return len(cores) or 1


THREAD_VARIABLES = ("TVM_NUM_THREADS", "OMP_NUM_THREADS")  # TVM's pool reads them, in order


def runtime_threads() -> int:
    """The threads TVM's pool runs kernels on in this process: TVM_NUM_THREADS or
    OMP_NUM_THREADS (a positive number), else the physical cores (`use_physical_cores`)."""
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return physical_cores()


def use_physical_cores() -> None:
    """Let TVM's thread pool use every core. Unless TVM_NUM_THREADS or OMP_NUM_THREADS says
    otherwise, TVM starts half as many threads as there are logical CPUs (it assumes SMT
    pairs): one thread on a 2-core VM without SMT. The pool reads the variable when it starts,
    at the first parallel kernel of a process, so this must come before that."""
    if not any(name in os.environ for name in THREAD_VARIABLES):
        os.environ["TVM_NUM_THREADS"] = str(physical_cores())


def read_input(path: str | os.PathLike, shape: tuple[int, ...]) -> np.ndarray:
    """An input batch from a `.npy` file, checked before its data is read: one array (not an
    .npz archive), a floating-point dtype (an integer or complex array would be cast
    silently), the compiled `shape`, and a file that holds as many bytes as its header says
    (a header may claim 10**10 floats). No pickles. Raises ValueError or OSError."""
    with open_regular(path) as fd, os.fdopen(os.dup(fd), "rb") as fh:
        magic = fh.read(6)
        if magic[:2] == b"PK":
            raise ValueError("it is an .npz archive; save the one input array with numpy.save")
        if magic != b"\x93NUMPY":
            raise ValueError("it is not a .npy file (numpy.save writes one)")
        fh.seek(0)
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        got, fortran, dtype = read_header(fh)
        if dtype.kind != "f":
            raise ValueError(f"it holds {dtype} values; the network takes floating point "
                             "(convert with .astype('float32'), and scale as in training)")
        if tuple(got) != tuple(shape):
            raise ValueError(f"it has shape {list(got)}; the library takes {list(shape)}")
        need = fh.tell() + math.prod(got) * dtype.itemsize
        size = os.fstat(fd).st_size
        if size != need:
            raise ValueError(f"it holds {size:,} bytes where its header says {need:,}")
        data = np.fromfile(fh, dtype=dtype, count=math.prod(got))
    return data.reshape(got, order="F" if fortran else "C")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float8_e4m3fn", "torch.float8_e5m2"):
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


_DEVICE_KINDS = ("cuda", "opencl", "metal", "hip", "vulkan", "webgpu")


def _device_modules(mod) -> list:
    found, stack, seen = [], [mod], set()
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        if m.kind in _DEVICE_KINDS:
            found.append(m)
        stack.extend(m.imports)
    return found


@contextmanager
def _quiet_scope_warnings() -> Iterator[None]:
    """TVM 0.27 logs a `Warning: Scope Saving:` / `Scope Loaded:` line from C++ for every
    constant it (de)serializes; hold back those lines of fd 2, pass everything else on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            kept = [line for line in buf.read().decode(errors="replace").splitlines(True)
                    if "Warning: Scope Saving:" not in line
                    and "Warning: Scope Loaded:" not in line]
            if kept:
                sys.stderr.write("".join(kept))


class Compiled:
    """A compiled network: call it on a batch (numpy or torch) to get numpy outputs."""

    def __init__(self, module, device_kind: str, meta: dict[str, Any] | None = None) -> None:
        self.module = module  # the runtime module: the VM executable, importing its kernels
        self.device_kind = device_kind  # "llvm" (the CPU), "cuda", ...
        self._meta = meta
        self.compile_seconds: float | None = None
        self._vm: VirtualMachine | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """arch, input and output shapes (batch first), dtype, and the CPU features its code
        needs (`cpu`: archdsl.backends.tvm.cpu.needs), as compiled."""
        if self._meta is None:
            # the VM interprets this function: no kernel runs, whatever the CPU
            self._meta = json.loads(str(self._machine()[META_FUNC]()))
        return self._meta

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input"])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["output"])

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]

    @property
    def device(self):
        return tvm.device("cpu" if self.device_kind == "llvm" else self.device_kind, 0)

    @property
    def vm(self) -> VirtualMachine:
        """The Relax VM on this build's device (made on first use), once `check_cpu` has
        passed. CPU kernels run on every core unless TVM_NUM_THREADS (or OMP_NUM_THREADS) is
        set (`use_physical_cores`)."""
        self.check_cpu()
        return self._machine()

    def _machine(self) -> VirtualMachine:
        if self._vm is None:
            use_physical_cores()
            self._vm = VirtualMachine(self.module, self.device)
        return self._vm

    def check_cpu(self) -> None:
        """Raise `CpuFeaturesError` if the build's code needs CPU features this CPU lacks (a
        library built for another x86-64 would die of SIGILL in its first kernel)."""
        need = self.meta.get("cpu")
        lacking = cpu.missing(need)
        if lacking:
            raise cpu.CpuFeaturesError(
                f"`{self.arch}` was built for {need.get('mcpu')} and needs CPU features this "
                f"CPU lacks: {', '.join(lacking)}; build it for this CPU (`--target llvm`) or "
                "for one it has the features of (`--target llvm -mcpu=NAME`)")

    def device_modules(self) -> list:
        """The imported device-code modules (CUDA etc.); none for a CPU build."""
        return _device_modules(self.module)

    def __call__(self, x: Any) -> np.ndarray:
        x = _to_numpy(x)
        if x.dtype.kind != "f":  # casting bool, integer or complex input would hide a mistake
            raise ValueError(f"`{self.arch}` takes floating-point input, got {x.dtype}")
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if x.shape != self.input_shape:
            raise ValueError(f"`{self.arch}` was compiled for input {self.input_shape}, "
                             f"got {x.shape}")
        return self.vm["main"](tvm.runtime.tensor(x, self.device)).numpy()

    def export_library(self, path: str | os.PathLike, manifest: dict[str, Any] | None = None,
                       inputs=()) -> Path:
        """Write the shared library, weights included (a C compiler links it), and its
        manifest `PATH.json` (the build's metadata, `manifest`, and the library's SHA-256),
        together and atomically (library.write). `inputs`: files the write must not
        replace."""
        path = Path(path)
        manifest = {**self.meta, **(manifest or {})}
        gpu = self.meta.get("gpu")
        if isinstance(gpu, dict) and gpu.get("arch"):  # a CUDA build: its kernels compiled
            kernels = cuda_kernels.compile_kernels(self.device_modules(), gpu["arch"])
            if kernels:
                manifest[cuda_kernels.KEY] = kernels

        def export(tmp: Path, workspace: Path) -> None:
            with _quiet_scope_warnings():
                self.module.export_library(str(tmp), workspace_dir=str(workspace))

        library.write(path, export, manifest, inputs)
        return path

    save = export_library

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> Compiled:
        """Load a library written by `export_library`; needs only the TVM runtime (and, for a
        GPU build, TVM's runtime library for that GPU, its CUDA runtime and a driver; a CUDA
        build's kernels come from its manifest, `cuda_kernels`, compiled when it was exported).

        A library is code: it is loaded only if it matches the SHA-256 in its manifest
        (`library.open_verified`; `verify=False` skips that, for a library you trust without
        one), and never if it is not a complete shared object. Raises library.LibraryError."""
        seen: list[dict[str, Any]] = []
        with library.open_verified(path, verify, seen) as checked:
            if seen and cuda_kernels.KEY in seen[0]:  # compiled at export
                try:
                    cuda_kernels.provide(seen[0][cuda_kernels.KEY])
                except ValueError as exc:
                    raise LibraryError(f"cannot load {path}: {exc}") from None
            try:
                module = _load_module(checked)
            except RuntimeError as exc:
                kind = _unloadable_kind(exc)
                if kind is None:
                    raise
                why = _load_device_runtime(kind)  # a runtime-only TVM loads no device runtime
                if why is not None:
                    raise RuntimeError(f"{path}: holds {kind} code, and TVM's runtime for "
                                       f"{kind} cannot be loaded here: {why}") from None
                module = _load_module(checked)
        if not module.implements_function("vm_load_executable"):
            raise LibraryError(f"cannot load {path}: it is a shared library, but not one "
                               "written by archdsl compile (no Relax VM executable)")
        kinds = [m.kind for m in _device_modules(module)]
        compiled = cls(module, kinds[0] if kinds else "llvm")
        compiled.check_cpu()
        return compiled

    def __repr__(self) -> str:
        return (f"Compiled({self.arch!r}, {self.device_kind}, input={self.input_shape}, "
                f"dtype={self.dtype})")


def _load_module(path: str):
    # tvm_ffi's loader, not tvm.runtime.load_module: that one resolves the path (the checked
    # file's link would become its name again) and compiles or untars .o/.tar files
    import tvm_ffi
    with _quiet_scope_warnings():
        return tvm_ffi.load_module(path)


def _unloadable_kind(exc: RuntimeError) -> str | None:
    """The device kind a library's code needs a loader for ("... created using {cuda} but a
    loader of that name is not registered"), if that is what `exc` says."""
    text = str(exc)
    if "loader of that name is not registered" not in text or "{" not in text:
        return None
    return text[text.index("{") + 1:text.index("}", text.index("{"))]


def _load_device_runtime(kind: str) -> str | None:
    """Load TVM's runtime library for a device kind (libtvm_runtime_cuda.so beside
    libtvm_runtime.so), as a full `import tvm` does and a runtime-only one does not. None when
    it is loaded; else why not (no such library, or its own dependencies missing: the CUDA
    runtime, the driver's libcuda)."""
    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes
    name = f"tvm_runtime_{kind}"
    if name in _LOADED_LIBS:
        return "it is loaded, yet registers no loader for this code"
    folder = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    try:
        _LOADED_LIBS[name] = load_lib_ctypes(package="tvm", target_name=name,
                                             extra_lib_paths=[folder], mode="RTLD_LOCAL")
    except (OSError, RuntimeError) as exc:
        return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return None

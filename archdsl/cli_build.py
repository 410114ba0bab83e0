"""The commands that build and run: `export` (ONNX, TorchScript, torch.export), `compile`
(a TVM library and its manifest) and `run` (a compiled library on an image or random input)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from . import interrupt, progress
from .api import Architecture
from .cli_shell import (
    ArchOpt,
    SetOneOpt,
    _err,
    _note,
    _one_graph,
    _out,
    _random_weights,
    run,
)
from .cli_train import check_labels, read_labels
from .errors import UsageError, last_line
from .program import display_path


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("compile")(compile_)
    app.command("run")(run_)


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"
    exported = "exported"


def export(
    spec: Annotated[Path, typer.Argument(help="a spec file", metavar="SPEC")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE",
        help="file to write (default: ARCH.onnx / .ts / .pt2)")] = None,
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.onnx,
    set_: SetOneOpt = None,
    arch: ArchOpt = None,
    weights: Annotated[Path | None, typer.Option(
        metavar="FILE", help="a state_dict saved with torch.save, or a .safetensors file")] = None,
) -> None:
    """Export the PyTorch model: ONNX (checked, and compared with onnxruntime when installed),
    TorchScript, or a torch.export program. Written atomically."""
    def body() -> None:
        from .atomic import check_output
        from .backends import load_backend
        a = _one_graph(spec, set_, arch, "export")
        graph = a.graph
        backend = load_backend("pytorch")
        from .backends.pytorch.export import SUFFIXES
        from .backends.pytorch.export import export as do_export
        target = output or Path(graph.name + SUFFIXES[format.value])
        inputs = [*a.program.files, *([weights] if weights else [])]
        check_output(target, inputs)  # before the model is built and exported
        model = backend.to_torch(graph)
        if weights is not None:
            backend.load_weights(model, backend.read_state_dict(weights), strict=True)
        else:
            _note(_random_weights("PyTorch's random initial"))
        with progress.display(f"exporting {graph.name} to {format.value}"):
            report = do_export(model, graph.input_shape, format.value, target, inputs=inputs)
        diff = "" if report.max_abs_diff is None else f", max abs diff {report.max_abs_diff:.2g}"
        _out().print(f"wrote {report.path} ({report.bytes / 2**20:.1f} MiB, {report.format}; "
                     f"checked with {report.checked}{diff})", markup=False)
    run(body)


def parse_target(text: str) -> Any:
    """--target: llvm (this CPU), llvm -mcpu=NAME or llvm:NAME (another x86-64: znver4,
    skylake-avx512, x86-64-v3...), cuda or cuda:sm_80 (host code for any x86-64), a TVM tag
    (nvidia/nvidia-h100), or a JSON dict ({"kind": "llvm", "mcpu": "x86-64-v3"})."""
    import json
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--target is not valid JSON: {exc}", None) from None
    words = text.split()
    if len(words) == 2 and words[0] == "llvm" and words[1].startswith("-mcpu="):
        return {"kind": "llvm", "mcpu": words[1].removeprefix("-mcpu=")}
    if len(words) > 1:
        raise UsageError(f"--target `{text}`: the only flag taken is -mcpu", None,
                         'llvm -mcpu=NAME, or a JSON dict such as {"kind": "llvm", "mcpu": '
                         '"znver4"}')
    kind, _, arch = text.partition(":")
    if kind == "cuda":
        # generic x86-64 host code: the library must load on the GPU machine's CPU too
        return {"kind": "cuda", "arch": arch or "sm_90", "host": {"kind": "llvm"}}
    if kind == "llvm" and arch:
        return {"kind": "llvm", "mcpu": arch}
    return text


def compile_(
    spec: Annotated[Path, typer.Argument(help="a spec file", metavar="SPEC")],
    target: Annotated[str, typer.Option(
        "--target", "-t", metavar="TARGET",
        help="llvm (this CPU), 'llvm -mcpu=NAME' (another x86-64, e.g. znver4; the library "
        "refuses to run on a CPU without its features), cuda[:sm_XX] (default sm_90), a TVM "
        "tag, or a JSON target dict")] = "llvm",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="the library to write (default: ARCH.so)")] = None,
    batch: Annotated[int, typer.Option(min=1, metavar="N", help="batch size compiled in")] = 1,
    dtype: Annotated[str, typer.Option(metavar="DTYPE", help="float32 or float16")] = "float32",
    weights: Annotated[Path | None, typer.Option(
        metavar="FILE",
        help="a .safetensors file or a torch.save state_dict (default: seeded random)")]
    = None,
    tune: Annotated[int, typer.Option(
        "--tune", min=0, metavar="TRIALS",
        help="tune with MetaSchedule until every kernel has TRIALS measured trials in the "
        "database; kernels already there are not tuned again, so re-running resumes an "
        "interrupted run and a larger TRIALS extends it (measuring needs the target's "
        "hardware)")] = 0,
    tuning_db: Annotated[Path | None, typer.Option(
        "--tuning-db", metavar="DIR",
        help="the tuning database (default with --tune: "
        "$XDG_CACHE_HOME or ~/.cache, then archdsl/tuning/TARGET such as llvm-znver3); "
        "without --tune it is only applied")] = None,
    winograd: Annotated[bool, typer.Option(
        "--winograd/--no-winograd",
        help="CPU: 3×3 stride-1 convs on planes of 14×14 and up by Winograd F(4×4, 3×3), "
        "2–3× faster; its rounding error is about 6e-6 of a conv's output scale, the direct "
        "conv's 3e-7")] = True,
    chunk: Annotated[int | None, typer.Option(
        "--chunk", min=1, metavar="IMAGES",
        help="CPU: run the network's trunk (every layer before its first FC) IMAGES images "
        "at a time, so that each layer's output stays in L2 for the next (IMAGES dividing "
        "the batch; default: one at a time where the activations outweigh the weights, "
        "else the whole batch; a build for several threads runs the chunks on all of them "
        "at once where they share them evenly)")] = None,
    set_: SetOneOpt = None,
    arch: ArchOpt = None,
) -> None:
    """Compile with Apache TVM (Relax) into a deployable shared library, plus a JSON
    manifest beside it. Both are written atomically."""
    def body() -> None:
        a = _one_graph(spec, set_, arch, "compile")
        build, tgt = _tvm_target(target)
        try:
            batch_ = build.check_build_args(batch, dtype)
        except ValueError as exc:
            raise UsageError(str(exc), None) from None
        out = output or Path(a.name + ".so")
        inputs = [*a.program.files, *([weights] if weights else [])]
        from .atomic import check_output
        from .backends.tvm.library import manifest_path
        for path in (out, manifest_path(out)):  # before the compile: it takes minutes
            check_output(path, inputs)
        if weights is None:
            _note(_random_weights("seeded random"))
        display = progress.display(f"compiling {a.name} for {target} with TVM")
        try:
            with display:
                compiled = _tvm_compile(a, tgt, weights, batch_, dtype, tune, tuning_db, display,
                                        winograd, chunk)
                display.stage("writing the library")
                _write_library(compiled, out, inputs, _manifest(
                    a, tgt, dtype, batch_, weights, compiled, display.event, tune, winograd))
        except KeyboardInterrupt:
            kept = ("" if display.event is None or not tune else
                    f"; {display.event.database} keeps every trial measured so far: "
                    "run the same command again to go on")
            _err().print(f"interrupted: no library written{kept}", markup=False)
            raise typer.Exit(130) from None
        tuned = display.event
        how = ("" if tuned is None else
               f", {tuned.applied} of {tuned.tasks} kernels from the tuning database"
               + (f" ({tuned.defaults} more measured faster with archdsl's default schedule)"
                  if tuned.defaults else ""))
        _out().print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {compiled.device_kind}"
                     f", compiled in {compiled.compile_seconds:.1f} s{how}) and "
                     f"{manifest_path(out)}", markup=False)
    run(body)


def _tvm_target(target: str):
    """The TVM build module and the target, checked before anything is compiled."""
    from .backends import load_backend
    build = load_backend("tvm.build")  # a clear message when TVM is missing
    tgt = parse_target(target)
    try:
        build.make_target(tgt)
    except ValueError as exc:
        raise UsageError(f"--target {target}: {last_line(exc)}", None,
                         "llvm (this CPU), llvm -mcpu=NAME (another x86-64: znver4, "
                         "skylake-avx512...), cuda or cuda:sm_80 (an NVIDIA architecture), a "
                         "TVM tag such as nvidia/nvidia-h100, or a JSON dict such as "
                         '{"kind": "llvm", "mcpu": "x86-64-v3"}') from None
    return build, tgt


def _manifest(a: Architecture, tgt: Any, dtype: str, batch: int, weights: Path | None,
              compiled, tuned, tune: int, winograd: bool) -> dict[str, Any]:
    """What a library's manifest says about its build (Compiled.export_library adds the
    library's own SHA-256 and metadata)."""
    return {
        "arch": a.name, "settings": a.settings, "target": tgt, "dtype": dtype,
        "input": [batch, *a.graph.input_shape], "output": [batch, *a.graph.output_shape],
        # every file the spec is made of, not only the root (its includes)
        "spec_sha256": a.program.sha256(),
        "spec_files": {display_path(p): d for p, d in a.program.files.items()},
        "weights": str(weights) if weights else "random (seed 0)",
        "compile_seconds": round(compiled.compile_seconds, 2),
        "winograd": winograd,
        # images per call of the network's trunk, when the batch runs in chunks (CPU)
        "chunk": compiled.meta.get("chunk"),
        # the threads that take those chunks at once (`trunk_threads`), when several do
        "chunk_threads": compiled.meta.get("chunk_threads"),
        "tuning": None if tuned is None else {
            "database": str(tuned.database), "trials_per_kernel": tune,
            "trials_this_run": tuned.trials, "kernels": tuned.tasks,
            "kernels_from_database": tuned.applied,
            "kernels_default_faster": tuned.defaults,
            "per_kernel": [{"kernel": k.kernel, "uses": k.uses,
                            "tuned_ms": _ms(k.tuned_s), "default_ms": _ms(k.default_s),
                            "built_with": k.built_with} for k in tuned.kernels]},
    }


def _write_library(compiled, out: Path, inputs: list, manifest: dict[str, Any]) -> None:
    from archdsl.backends.tvm.cuda_kernels import KernelError
    interrupt.checkpoint()  # not after a Ctrl-C that was swallowed on the way
    try:
        compiled.export_library(out, manifest, inputs)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}", None) from None
    except KernelError as exc:  # nvcc compiles a CUDA build's kernels into the manifest
        raise UsageError(f"cannot write {out}: {last_line(exc)[:500]}", None,
                         "pick a GPU architecture this nvcc knows (`--target cuda:sm_XX`; "
                         "`nvcc --list-gpu-arch` lists them)") from None
    except RuntimeError as exc:  # TVM runs a C compiler to link the library
        raise UsageError(f"cannot write {out}: linking the library failed: "
                         f"{last_line(exc)[:500]}", None,
                         "TVM links with the C compiler `cc` (or $CXX): is one installed "
                         "and working?") from None


def _ms(seconds: float | None) -> float | None:
    """Milliseconds to 4 significant digits (a kernel may take nanoseconds)."""
    return None if seconds is None else float(f"{1e3 * seconds:.4g}")


def _tvm_compile(a: Architecture, tgt: Any, weights: Path | None, batch: int, dtype: str,
                 tune: int, tuning_db: Path | None, display: Any, winograd: bool,
                 chunk: int | None):
    """Architecture.compile, with tuning's errors told as a user's."""
    from .backends.tvm.lower import ChunkError, WeightsError
    from .backends.tvm.tune import TuningError
    try:
        return a.compile(tgt, weights, batch, dtype, tune=tune, tuning_db=tuning_db,
                         progress=display, winograd=winograd, chunk=chunk)
    except (TuningError, ChunkError) as exc:
        raise UsageError(str(exc), None) from None
    except WeightsError as exc:
        raise UsageError(str(exc), None, "the keys and shapes are the PyTorch backend's: "
                         "compare with archdsl.load(spec).to_torch().state_dict()") from None


# what the last layer makes, as `run` labels it (a library older than this record: scores)
_SCORES = {"softmax": "probabilities"} | dict.fromkeys(("fc", "linear", "conv"), "logits")


def run_(
    library: Annotated[Path, typer.Argument(help="a library from `archdsl compile`",
                                            metavar="LIBRARY")],
    input: Annotated[Path | None, typer.Option(
        "--input", "-i", metavar="FILE.npy",
        help="a .npy array of the compiled input shape (default: random)")]
    = None,
    top: Annotated[int, typer.Option(min=1, metavar="N", help="classes to show")] = 5,
    labels: Annotated[Path | None, typer.Option(
        metavar="FILE", help="class names, one a line (the labels.txt of `archdsl train`)")]
    = None,
) -> None:
    """Run a compiled library (needs only the TVM runtime) and print the top classes.
    A library is code: it is loaded only if it matches the SHA-256 its manifest holds."""
    def body() -> None:
        import numpy as np

        from .backends import load_backend
        names = None if labels is None else read_labels(labels)  # before the library runs
        runtime = load_backend("tvm.runtime")
        try:
            compiled = runtime.Compiled.load(library)
        except runtime.LibraryError as exc:
            raise UsageError(str(exc), None, "a library is code: run only libraries you "
                             "compiled or trust, with the manifest written beside them "
                             "(docs/limits.md)") from None
        except (RuntimeError, OSError) as exc:  # its device runtime is missing
            why = last_line(exc).removeprefix(f"{library}: ")
            raise UsageError(f"cannot load {library}: {why}", None) from None
        shape = tuple(compiled.input_shape)
        if compiled.meta.get("weights", "given") != "given":
            _note(f"{library} holds {compiled.meta['weights']} weights (compiled without "
                  "--weights): its outputs mean nothing")
        if input is None:
            _note(f"no --input: running on a random input (normal, seed 0) of shape "
                  f"{list(shape)}")
            x = np.random.default_rng(0).standard_normal(shape).astype(compiled.dtype)
        else:
            try:
                x = runtime.read_input(input, shape)
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot use {input}: {getattr(exc, 'strerror', None) or exc}",
                                 None) from None
        try:
            y = np.asarray(compiled(x))
        except RuntimeError as exc:  # e.g. a CUDA library on a machine without the GPU
            raise UsageError(f"cannot run {library} on {compiled.device_kind}: "
                             f"{last_line(exc)}", None) from None
        scores = y.reshape(y.shape[0], -1)
        what = _SCORES.get(compiled.meta.get("output_op"), "scores")
        if names is not None:
            check_labels(labels, names, scores.shape[1])
        for b, row in enumerate(scores):
            best = np.argsort(-row)[:top]
            cells = ", ".join(f"class {int(i)}{f' ({names[i]})' if names else ''}: "
                              f"{row[i]:.4g}" for i in best)
            _out().print(f"[{b}] top-{len(best)} {what}: {cells}", markup=False)
    run(body)

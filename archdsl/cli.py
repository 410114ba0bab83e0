"""The `archdsl` command: a thin shell that parses arguments, calls the library, renders."""

from __future__ import annotations

import itertools
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .analysis import DTYPE_BYTES, Conventions, Stats, analyse
from .api import Architecture, elaborate, named_like_file, select_archs
from .errors import ArchError, ArchErrors, UsageError, last_line
from .program import Program, load_program

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="archdsl: describe, measure and compile neural-network architectures.")


class Count(str, Enum):
    macs = "macs"
    flops = "flops"


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


SpecArgs = Annotated[list[Path], typer.Argument(help="spec files (.arch)", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="NAME=VALUE",
    help="override a spec parameter; NAME=v1,v2,... gives one row per value")]
ArchOpt = Annotated[str | None, typer.Option("--arch", "-a", help="only this architecture")]


def _out() -> Console:
    # Piped output keeps whole tables: a width of 80 would crop the numbers.
    wide = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 220
    return Console(highlight=False, soft_wrap=False, width=wide)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def parse_value(text: str) -> Any:
    """A --set value: int, float, true/false, or a word (e.g. norm=bn)."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_sets(sets: list[str] | None) -> list[dict[str, Any]]:
    """--set a=1,2 --set b=x → [{a:1,b:x}, {a:2,b:x}] (the cartesian product)."""
    axes: list[tuple[str, list[Any]]] = []
    for item in sets or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ArchErrors([UsageError(f"--set expects NAME=VALUE, got `{item}`", None,
                                         "e.g. --set alpha=0.75 or --set resolution=128,160")])
        axes.append((name.strip(), [parse_value(v) for v in value.split(",")]))
    names = [n for n, _ in axes]
    combos = itertools.product(*(v for _, v in axes))
    return [dict(zip(names, combo, strict=True)) for combo in combos]


def _load(specs: list[Path]) -> list[Program]:
    programs, errors = [], []
    for spec in specs:
        try:
            programs.append(load_program(path=spec))
        except ArchErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise ArchErrors(errors)
    return programs


def _graphs(specs: list[Path], sets: list[str] | None, arch: str | None,
            need_graphs: bool = True):
    """Elaborate every selected architecture under every --set combination; collect errors."""
    combos = parse_sets(sets)
    graphs, errors = [], []
    for program in _load(specs):
        try:
            names = (select_archs(program, arch, allow_none=True)
                     if arch is None or arch in program.archs else [])
        except ArchErrors as exc:
            errors.extend(exc.errors)
            continue
        for name in names:
            for combo in combos:
                try:
                    graphs.append(Architecture(elaborate(program, name, combo), program))
                except ArchErrors as exc:
                    errors.extend(exc.errors)
    if arch is not None and not graphs and not errors:
        errors.append(UsageError(f"no spec defines an architecture `{arch}`", None))
    elif not graphs and not errors and need_graphs:
        errors.append(UsageError("these files define blocks but no architecture", None,
                                 "name a file that has an `arch` (or includes one)"))
    if errors:
        raise ArchErrors(_unique(errors))
    return graphs


def _unique(errors: list[ArchError]) -> list[ArchError]:
    """An error in a file that several specs include is reported once."""
    seen, out = set(), []
    for e in errors:
        key = (e.message, e.span and (e.span.file, e.span.line, e.span.col))
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _report_errors(errors: list[ArchError]) -> None:
    console = _err()
    for i, err in enumerate(errors):
        if i:
            console.print()
        text = err.render()
        head, _, rest = text.partition("\n")
        where, sep, msg = head.partition(": error: ")
        if sep:
            console.print(f"{where}: ", end="", markup=False)
            console.print("error: ", style="bold red", end="")
            console.print(msg, markup=False)
        else:
            console.print(head, markup=False, style="bold red" if not where.startswith(
                ("note", "hint")) else None)
        if rest:
            console.print(rest, markup=False)
    n = len(errors)
    console.print(f"{n} error{'s' if n != 1 else ''}", style="bold red")


def run(fn) -> None:
    try:
        fn()
    except ArchErrors as exc:
        _report_errors(exc.errors)
        raise typer.Exit(1) from None
    except ArchError as exc:
        _report_errors([exc])
        raise typer.Exit(1) from None
    except ImportError as exc:  # a backend whose framework is missing
        _err().print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None


@app.command()
def check(specs: SpecArgs, set_: SetOpt = None, arch: ArchOpt = None) -> None:
    """Check specs: syntax, names, shapes. Prints nothing but errors, or one OK line."""
    def body() -> None:
        graphs = _graphs(specs, set_, arch, need_graphs=False)
        nodes = sum(len(a.graph.g) - 1 for a in graphs)
        _out().print(f"ok: {len(graphs)} architecture{'s' if len(graphs) != 1 else ''} "
                     f"in {len(specs)} file{'s' if len(specs) != 1 else ''}, {nodes:,} nodes",
                     markup=False)
    run(body)


@app.command()
def stats(
    specs: SpecArgs,
    set_: SetOpt = None,
    arch: ArchOpt = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="one row per layer")] = False,
    depth: Annotated[int | None, typer.Option(
        "--depth", min=1, help="roll layers up into blocks/stages N name-levels deep")] = None,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    dtype: Annotated[str, typer.Option(help="bytes per value for memory columns: "
                                       + ", ".join(DTYPE_BYTES))] = "float32",
    count: Annotated[Count, typer.Option(
        "--count", help="show cost as MACs or FLOPs (= 2 × MACs)")] = Count.macs,
    bias: Annotated[bool, typer.Option(
        "--bias/--no-bias", help="count biases as parameters")] = True,
    norm: Annotated[bool, typer.Option(
        "--norm/--no-norm", help="count normalization scale/shift as parameters")] = True,
) -> None:
    """Size and cost: units, weights, params, connections, MACs, memory.

    Several specs (or architectures) give one comparison table, one row each.
    """
    def body() -> None:
        if dtype not in DTYPE_BYTES:
            raise UsageError(f"unknown dtype `{dtype}`", None, "one of " + ", ".join(DTYPE_BYTES))
        conv = Conventions(bias=bias, norm=norm, count=count.value)
        all_stats = [analyse(a.graph, dtype, conv) for a in _graphs(specs, set_, arch)]
        _print_stats(all_stats, per_layer or depth is not None, depth, format)
    run(body)


def _print_stats(all_stats: list[Stats], per_layer: bool, depth: int | None,
                 fmt: Format) -> None:
    from . import report
    out = _out()
    if fmt is Format.json:
        out.print(report.to_json(all_stats, depth), markup=False, soft_wrap=True)
    elif fmt is Format.csv:
        sys.stdout.write(report.to_csv(all_stats, per_layer, depth))
    elif fmt is Format.markdown:
        sys.stdout.write(report.to_markdown(all_stats, per_layer, depth))
    elif per_layer:
        for s in all_stats:
            out.print(report.layer_table(s, depth))
    else:
        out.print(report.comparison_table(all_stats))


@app.command("format")
def format_(spec: Annotated[Path, typer.Argument(help="a spec file")],
            set_: SetOpt = None, arch: ArchOpt = None) -> None:
    """Print the canonical, fully expanded form of each architecture."""
    from .formatter import format_graph

    def body() -> None:
        for i, a in enumerate(_graphs([spec], set_, arch)):
            sys.stdout.write(("\n" if i else "") + format_graph(a.graph))
    run(body)


def _one_graph(spec: Path, set_: list[str] | None, arch: str | None, what: str):
    """The one architecture a command works on: the one named, else the file's only one or
    the one named like the file (`named_like_file`)."""
    archs = _graphs([spec], set_, arch)
    if arch is None and len({a.name for a in archs}) > 1:
        main = named_like_file(archs[0].program, [a.name for a in archs])
        archs = [a for a in archs if a.name in main]
    if len(archs) != 1:
        raise UsageError(f"{spec} gives {len(archs)} architectures; {what} takes one",
                         None, "choose one with --arch (and a single --set value)")
    return archs[0]


@app.command()
def graph(
    spec: Annotated[Path, typer.Argument(help="a spec file")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="file to write: .svg, .png, .pdf or .dot (default: ARCH.svg)")]
    = None,
    depth: Annotated[int | None, typer.Option(
        "--depth", min=1, help="one box per block/stage N name-levels deep")] = None,
    set_: SetOpt = None,
    arch: ArchOpt = None,
    count: Annotated[Count, typer.Option(
        "--count", help="show cost as MACs or FLOPs (= 2 × MACs)")] = Count.macs,
) -> None:
    """Draw the network with Graphviz: boxes per layer (or block), shapes on the edges."""
    def body() -> None:
        from .drawing import draw, render
        g = _one_graph(spec, set_, arch, "graph").graph
        target = output or Path(g.name + ".svg")
        path = render(draw(g, depth, conventions=Conventions(count=count.value)), target)
        _out().print(f"wrote {path}", markup=False)
    run(body)


class TableFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    latex = "latex"


@app.command()
def table(
    specs: SpecArgs,
    set_: SetOpt = None,
    arch: ArchOpt = None,
    depth: Annotated[int, typer.Option("--depth", min=1, help="stage = first N name parts")] = 1,
    format: Annotated[TableFormat, typer.Option("--format", "-f")] = TableFormat.table,
    count: Annotated[Count, typer.Option("--count")] = Count.macs,
) -> None:
    """The paper's configuration table regenerated from specs: a column per architecture,
    a row per stage, in the paper's notation (e.g. VGG's Table 1 from specs/vgg.arch)."""
    def body() -> None:
        from . import paper_table as pt
        t = pt.config_table(_graphs(specs, set_, arch), depth=depth,
                            conventions=Conventions(count=count.value))
        if format is TableFormat.markdown:
            sys.stdout.write(pt.paper_table_markdown(t))
        elif format is TableFormat.latex:
            sys.stdout.write(pt.paper_table_latex(t))
        else:
            _out().print(pt.paper_table_rich(t))
    run(body)


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="the first spec")],
    b: Annotated[Path | None, typer.Argument(help="the second spec (default: the first)")]
    = None,
    arch_a: Annotated[str | None, typer.Option("--arch-a", help="architecture in A")] = None,
    arch_b: Annotated[str | None, typer.Option("--arch-b", help="architecture in B")] = None,
    set_a: Annotated[list[str] | None, typer.Option("--set-a", metavar="NAME=VALUE")] = None,
    set_b: Annotated[list[str] | None, typer.Option("--set-b", metavar="NAME=VALUE")] = None,
    depth: Annotated[int, typer.Option("--depth", min=1, help="stage = first N name parts")]
    = 1,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """What changed between two specs, or two settings of one: layers added, removed and
    changed, and Δparams/ΔMACs per stage and in total."""
    def body() -> None:
        from . import diff as d
        sides = [_one_graph(spec, sets, name, "diff")
                 for spec, name, sets in ((a, arch_a, set_a), (b or a, arch_b, set_b))]
        result = d.diff_archs(sides[0], sides[1], depth)
        if format is Format.json:
            import json
            _out().print(json.dumps(d.diff_dict(result), indent=2), markup=False, soft_wrap=True)
        elif format is Format.markdown:
            sys.stdout.write(d.diff_markdown(result))
        elif format is Format.csv:
            raise UsageError("diff has no CSV form", None, "use json, markdown or table")
        else:
            _out().print(d.diff_table(result))
    run(body)


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"
    exported = "exported"


@app.command()
def export(
    spec: Annotated[Path, typer.Argument(help="a spec file")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="file to write (default: ARCH.onnx / .ts / .pt2)")] = None,
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.onnx,
    set_: SetOpt = None,
    arch: ArchOpt = None,
    weights: Annotated[Path | None, typer.Option(
        help="a state_dict saved with torch.save, or a .safetensors file")] = None,
) -> None:
    """Export the PyTorch model: ONNX (checked, and compared with onnxruntime when installed),
    TorchScript, or a torch.export program. Written atomically."""
    def body() -> None:
        from .backends import load_backend
        graph = _one_graph(spec, set_, arch, "export").graph
        backend = load_backend("pytorch")
        model = backend.to_torch(graph)
        if weights is not None:
            backend.load_weights(model, backend.read_state_dict(weights), strict=True)
        from .backends.pytorch.export import SUFFIXES
        from .backends.pytorch.export import export as do_export
        target = output or Path(graph.name + SUFFIXES[format.value])
        with _err().status(f"exporting {graph.name} to {format.value}..."):
            report = do_export(model, graph.input_shape, format.value, target)
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


@app.command("compile")
def compile_(
    spec: Annotated[Path, typer.Argument(help="a spec file")],
    target: Annotated[str, typer.Option(
        "--target", "-t", help="llvm (this CPU), 'llvm -mcpu=NAME' (another x86-64, e.g. "
        "znver4; the library refuses to run on a CPU without its features), cuda[:sm_XX] "
        "(default sm_90), a TVM tag, or a JSON target dict")] = "llvm",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="the library to write (default: ARCH.so)")] = None,
    batch: Annotated[int, typer.Option(min=1, help="batch size compiled in")] = 1,
    dtype: Annotated[str, typer.Option(help="float32 or float16")] = "float32",
    weights: Annotated[Path | None, typer.Option(
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
    set_: SetOpt = None,
    arch: ArchOpt = None,
) -> None:
    """Compile with Apache TVM (Relax) into a deployable shared library, plus a JSON
    manifest beside it. Both are written atomically."""
    def body() -> None:
        import hashlib
        import json

        from .atomic import atomic_path
        if dtype not in ("float32", "float16"):
            raise UsageError(f"unknown dtype `{dtype}`", None, "float32 or float16")
        a = _one_graph(spec, set_, arch, "compile")
        tgt = parse_target(target)
        out = output or Path(a.name + ".so")
        display = _CompileDisplay(f"compiling {a.name} for {target} with TVM")
        try:
            with display:
                compiled = _tvm_compile(a, tgt, weights, batch, dtype, tune, tuning_db, display)
                display.building("writing the library")
                compiled.export_library(out)
        except KeyboardInterrupt:
            kept = ("" if display.event is None or not tune else
                    f"; {display.event.database} keeps every trial measured so far: "
                    "run the same command again to go on")
            _err().print(f"interrupted: no library written{kept}", markup=False)
            raise typer.Exit(130) from None
        tuned = display.event
        manifest = {
            "arch": a.name, "settings": a.settings, "target": tgt, "dtype": dtype,
            "cpu": compiled.meta.get("cpu"),
            "input": [batch, *a.graph.input_shape], "output": [batch, *a.graph.output_shape],
            "spec_sha256": hashlib.sha256(Path(spec).read_bytes()).hexdigest(),
            "weights": str(weights) if weights else "random (seed 0)",
            "compile_seconds": round(compiled.compile_seconds, 2),
            "tuning": None if tuned is None else {
                "database": str(tuned.database), "trials_per_kernel": tune,
                "trials_this_run": tuned.trials, "kernels": tuned.tasks,
                "kernels_from_database": tuned.applied,
                "kernels_default_faster": tuned.defaults,
                "per_kernel": [{"kernel": k.kernel, "uses": k.uses,
                                "tuned_ms": _ms(k.tuned_s), "default_ms": _ms(k.default_s),
                                "built_with": k.built_with} for k in tuned.kernels]},
        }
        manifest_path = out.with_suffix(out.suffix + ".json")
        with atomic_path(manifest_path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        how = ("" if tuned is None else
               f", {tuned.applied} of {tuned.tasks} kernels from the tuning database"
               + (f" ({tuned.defaults} more measured faster with archdsl's default schedule)"
                  if tuned.defaults else ""))
        _out().print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {compiled.device_kind}"
                     f", compiled in {compiled.compile_seconds:.1f} s{how}) and {manifest_path}",
                     markup=False)
    run(body)


def _ms(seconds: float | None) -> float | None:
    """Milliseconds to 4 significant digits (a kernel may take nanoseconds)."""
    return None if seconds is None else float(f"{1e3 * seconds:.4g}")


def _tvm_compile(a: Architecture, tgt: Any, weights: Path | None, batch: int, dtype: str,
                 tune: int, tuning_db: Path | None, display: _CompileDisplay):
    """Architecture.compile, with tuning's errors told as a user's."""
    from .backends import load_backend
    build = load_backend("tvm.build")  # a clear message when TVM is missing
    from .backends.tvm.tune import TuningError
    try:
        build.make_target(tgt)
    except ValueError as exc:  # an unknown target kind, tag or CPU
        raise UsageError(f"--target: {last_line(exc)}", None) from None
    try:
        return a.compile(tgt, weights, batch, dtype, tune=tune, tuning_db=tuning_db,
                         progress=display)
    except TuningError as exc:
        raise UsageError(str(exc), None) from None


class _CompileDisplay:
    """The compile command's live display on stderr: a spinner while compiling; while tuning,
    trials done of planned, kernels done, the estimated network time and the elapsed time.
    Gets the tuning's `TuneEvent`s; keeps the last in `event`."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.event = None
        self._tuning = None
        self._progress = None

    def __enter__(self) -> _CompileDisplay:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        # TVM's C++ code writes to fd 2, which tuning sends to its log: show this on a copy
        self._stream = _dup_stderr()
        console = Console(file=self._stream, highlight=False, soft_wrap=True)
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                  BarColumn(), TextColumn("{task.fields[info]}"),
                                  TimeElapsedColumn(),
                                  console=console, transient=True)
        self._main = self._progress.add_task(self.title, total=None, info="")
        self._progress.start()
        return self

    def __call__(self, event) -> None:
        self.event = event
        p = self._progress
        if event.kind == "note":
            p.console.print(f"note: {event.message}", markup=False, style="yellow")
        elif event.kind == "start" and event.trials_total:
            p.console.print(f"tuning {event.tasks_to_tune} of {event.tasks} kernels "
                            f"({event.trials_total} trials); log in "
                            f"{event.database / 'logs' / 'tuning.log'}", markup=False)
            self._tuning = p.add_task("tuning", total=event.trials_total,
                                      info=f"0/{event.trials_total} trials")
        elif event.kind == "trials" and self._tuning is not None:
            best = f", est. {event.best_ms:.2f} ms" if event.best_ms else ""
            p.update(self._tuning, completed=event.trials,
                     info=f"{event.trials}/{event.trials_total} trials, kernels "
                     f"{event.tasks_done}/{event.tasks_to_tune}{best}")
        elif event.kind == "compare":
            self.building(event.message)
        elif event.kind == "applied":
            self.building("building")

    def building(self, what: str) -> None:
        if self._tuning is not None:
            self._progress.remove_task(self._tuning)
            self._tuning = None
        self._progress.update(self._main, description=f"{self.title}: {what}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            if self._stream is not sys.stderr:
                self._stream.close()

    def __exit__(self, *exc) -> None:
        self.close()


def _dup_stderr():
    """A stream on a copy of fd 2 (sys.stderr itself where it has no file descriptor)."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w")
    except (AttributeError, OSError, ValueError):
        return sys.stderr


@app.command("run")
def run_(
    library: Annotated[Path, typer.Argument(help="a library from `archdsl compile`")],
    input: Annotated[Path | None, typer.Option(
        "--input", "-i", help="a .npy array of the compiled input shape (default: random)")]
    = None,
    top: Annotated[int, typer.Option(min=1, help="classes to show")] = 5,
) -> None:
    """Run a compiled library (needs only the TVM runtime) and print the top classes."""
    def body() -> None:
        import numpy as np

        from .backends import load_backend
        if not library.exists():
            raise UsageError(f"no such library: {library}", None)
        try:
            compiled = load_backend("tvm.runtime").Compiled.load(library)
        except (RuntimeError, OSError) as exc:  # not a library, or its device runtime missing
            why = last_line(exc).removeprefix(f"{library}: ")
            raise UsageError(f"cannot load {library}: {why}", None) from None
        shape = tuple(compiled.input_shape)
        if input is None:
            x = np.random.default_rng(0).standard_normal(shape).astype(compiled.dtype)
        else:
            try:
                x = np.load(input)
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot read {input}: {exc}", None) from None
            if tuple(x.shape) != shape:
                raise UsageError(f"{input} has shape {list(x.shape)}; the library takes "
                                 f"{list(shape)}", None)
        try:
            y = np.asarray(compiled(x.astype(compiled.dtype)))
        except RuntimeError as exc:  # e.g. a CUDA library on a machine without the GPU
            raise UsageError(f"cannot run {library} on {compiled.device_kind}: "
                             f"{last_line(exc)}", None) from None
        scores = y.reshape(y.shape[0], -1)
        for b, row in enumerate(scores):
            best = np.argsort(-row)[:top]
            cells = ", ".join(f"{int(i)}: {row[i]:.4g}" for i in best)
            _out().print(f"[{b}] top-{len(best)}: {cells}", markup=False)
    run(body)


@app.command()
def ops() -> None:
    """List the ops the language knows, with their syntax."""
    from rich.table import Table

    from .elaborate import _attr_hint
    from .ops import ALIASES, OPS
    table = Table(title="archdsl ops")
    for col in ("Op", "Category", "Written", "Aliases", "What it is"):
        table.add_column(col)
    for name, op in OPS.items():
        if not op.in_syntax:
            continue
        aliases = ", ".join(a for a, t in ALIASES.items() if t == name)
        table.add_row(name, op.category, _attr_hint(op).split(" is written ", 1)[1], aliases,
                      op.doc)
    _out().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""The `archdsl` command: a thin shell that parses arguments, calls the library, renders."""

from __future__ import annotations

import gc
import itertools
import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand

from . import progress
from .analysis import DTYPE_BYTES, Conventions, Stats, analyse
from .api import Architecture, elaborate, named_like_file, select_archs
from .cli_train import read_labels, register
from .columns import COLUMNS, choose
from .errors import ArchError, ArchErrors, UsageError, did_you_mean, last_line
from .program import Program, load_program


class _Command(TyperCommand):
    """A command whose help shows metavars (SPEC, NAME, N), never typer's Python types
    (`<list[Path]>`, `<str>`): an argument or option without a metavar of its own gets its
    name in capitals; choices keep their list (`<macs|flops>`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            flag = getattr(param, "is_flag", False) or getattr(param, "count", False)
            choice = getattr(getattr(param, "type_descriptor", None), "is_choice", False)
            if flag or choice or not param.name:
                continue
            if param.metavar is None:
                param.metavar = param.name.upper()
            if isinstance(param, TyperArgument):
                param.display_type_rich = lambda *a, **k: None  # type: ignore[method-assign]


class _App(typer.Typer):
    """Every command is a `_Command`."""

    def command(self, name: str | None = None, *, cls: Any = None, **kwargs: Any):
        return super().command(name, cls=cls or _Command, **kwargs)


app = _App(no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
           help="archdsl: describe, measure and compile neural-network architectures.")


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version
        print(f"archdsl {version('archdsl')}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="print the version and exit")]
        = False) -> None:
    """archdsl: describe, measure and compile neural-network architectures."""


class Count(str, Enum):
    macs = "macs"
    flops = "flops"


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


SpecArgs = Annotated[list[Path], typer.Argument(
    help="one or more spec files (.arch)", show_default=False, metavar="SPEC")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="NAME=VALUE",
    help="override a spec parameter; NAME=v1,v2,... gives one row per value")]
SetOneOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="NAME=VALUE",
    help="override a spec parameter (one value: this command builds one architecture)")]
ArchOpt = Annotated[str | None, typer.Option("--arch", "-a", metavar="NAME",
                                             help="only this architecture")]


if TYPE_CHECKING:
    from rich.console import Console


def _out() -> Console:
    from rich.console import Console  # not needed by --format json/csv: loaded when used
    # Piped output keeps whole tables: a width of 80 would crop the numbers.
    wide = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 220
    return Console(highlight=False, soft_wrap=False, width=wide)


def _err() -> Console:
    from rich.console import Console
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _note(text: str) -> None:
    """A console note on stderr (stdout keeps only the results)."""
    _err().print(f"note: {text}", markup=False, style="yellow")


def _random_weights(which: str) -> str:
    return (f"no --weights: the output holds {which} weights, a stand-in for testing speed "
            "and deployment, not a trained network")


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
    programs = _load(specs)
    for program in programs:
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
        offered = [n for p in programs for n in p.archs]
        errors.append(UsageError(f"no spec defines an architecture `{arch}`", None,
                                 did_you_mean(arch, offered)
                                 or "they define: " + ", ".join(dict.fromkeys(offered))))
    elif not graphs and not errors and need_graphs:
        errors.append(UsageError("these files define blocks but no architecture", None,
                                 "name a file that has an `arch` (or includes one)"))
    if errors:
        raise ArchErrors(_unique(errors))
    _report_warnings(graphs)
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
    _print_diagnostics(console, errors)
    n = len(errors)
    console.print(f"{n} error{'s' if n != 1 else ''}", style="bold red")


def _print_diagnostics(console: Console, diagnostics: list[ArchError]) -> None:
    """Errors or warnings, compiler style: `file:line:col: error: ...` with the source
    line, the caret, notes and a hint; a blank line between two."""
    for i, err in enumerate(diagnostics):
        if i:
            console.print()
        text = err.render()
        head, _, rest = text.partition("\n")
        marker = f"{err.kind}: "
        style = "bold red" if err.kind == "error" else "bold yellow"
        where, sep, msg = head.partition(f": {marker}")
        if sep:
            console.print(f"{where}: ", end="", markup=False)
            console.print(marker, style=style, end="")
            console.print(msg, markup=False)
        else:
            console.print(head, markup=False, style=style if not where.startswith(
                ("note", "hint")) else None)
        if rest:
            console.print(rest, markup=False)


def _report_warnings(graphs: list) -> None:
    """The warnings of every graph elaborated, each once (a sweep repeats them), on stderr."""
    seen, warnings = set(), []
    for a in graphs:
        for w in a.graph.warnings:
            key = (w.message, w.span and (w.span.file, w.span.line, w.span.col))
            if key not in seen:
                seen.add(key)
                warnings.append(w)
    if warnings:
        console = _err()
        _print_diagnostics(console, warnings)
        console.print()


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
        nodes = sum(a.graph.node_count - 1 for a in graphs)
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
        "--depth", min=1, metavar="N",
        help="roll layers up into blocks/stages N name-levels deep")] = None,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    columns: Annotated[str | None, typer.Option(
        "--columns", "-c", metavar="NAME,...",
        help="the table's columns, in order: " + ", ".join(COLUMNS))] = None,
    wide: Annotated[bool, typer.Option("--wide", "-w", help="every column")] = False,
    dtype: Annotated[str, typer.Option(metavar="DTYPE", help="bytes per value for memory columns: "
                                       + ", ".join(DTYPE_BYTES))] = "float32",
    count: Annotated[Count, typer.Option(
        "--count", help="show cost as MACs or FLOPs (= 2 × MACs)")] = Count.macs,
    bias: Annotated[bool, typer.Option(
        "--bias/--no-bias", help="count biases as parameters")] = True,
    norm: Annotated[bool, typer.Option(
        "--norm/--no-norm", help="count normalization scale/shift as parameters")] = True,
) -> None:
    """Size and cost: params, MACs, memory (and units, weights, connections: --wide).

    Several specs (or architectures) give one comparison table, one row each. The table fits
    the terminal; --format json/csv/markdown give every number in full.
    """
    def body() -> None:
        if dtype not in DTYPE_BYTES:
            raise UsageError(f"unknown dtype `{dtype}`", None, "one of " + ", ".join(DTYPE_BYTES))
        per = per_layer or depth is not None
        chosen = choose(columns, wide, per_layer=per)
        conv = Conventions(bias=bias, norm=norm, count=count.value)
        all_stats = [analyse(a.graph, dtype, conv) for a in _graphs(specs, set_, arch)]
        _print_stats(all_stats, per, depth, format, chosen)
    run(body)


def _print_stats(all_stats: list[Stats], per_layer: bool, depth: int | None,
                 fmt: Format, columns: list) -> None:
    # machine formats go straight to stdout: never wrapped, never cut, and fast (a
    # 10,000-layer JSON through rich's console took seconds)
    if fmt in (Format.json, Format.csv):
        from . import writers
        sys.stdout.write(writers.to_json(all_stats, depth) if fmt is Format.json else
                         writers.to_csv(all_stats, per_layer, depth))
        return
    from . import report
    if fmt is Format.markdown:
        sys.stdout.write(report.to_markdown(all_stats, per_layer, depth, columns))
    elif per_layer:
        for s in all_stats:
            _out().print(report.layer_table(s, depth, columns))
    else:
        _out().print(report.comparison_table(all_stats, columns))


@app.command("format")
def format_(spec: Annotated[Path, typer.Argument(help="a spec file", metavar="SPEC")],
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
    spec: Annotated[Path, typer.Argument(help="a spec file", metavar="SPEC")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE",
        help="file to write: .svg, .png, .pdf or .dot (default: ARCH.svg)")]
    = None,
    depth: Annotated[int | None, typer.Option(
        "--depth", min=1, metavar="N", help="one box per block/stage N name-levels deep")] = None,
    set_: SetOneOpt = None,
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
    depth: Annotated[int, typer.Option("--depth", min=1, metavar="N",
                                       help="stage = first N name parts")] = 1,
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
    a: Annotated[Path, typer.Argument(help="the first spec", metavar="A")],
    b: Annotated[Path | None, typer.Argument(help="the second spec (default: the first)",
                                             metavar="B")]
    = None,
    arch_a: Annotated[str | None, typer.Option("--arch-a", metavar="NAME",
                                               help="architecture in A")] = None,
    arch_b: Annotated[str | None, typer.Option("--arch-b", metavar="NAME",
                                               help="architecture in B")] = None,
    set_a: Annotated[list[str] | None, typer.Option("--set-a", metavar="NAME=VALUE")] = None,
    set_b: Annotated[list[str] | None, typer.Option("--set-b", metavar="NAME=VALUE")] = None,
    depth: Annotated[int, typer.Option("--depth", min=1, metavar="N",
                                       help="stage = first N name parts")] = 1,
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
        from .backends import load_backend
        graph = _one_graph(spec, set_, arch, "export").graph
        backend = load_backend("pytorch")
        model = backend.to_torch(graph)
        if weights is not None:
            backend.load_weights(model, backend.read_state_dict(weights), strict=True)
        else:
            _note(_random_weights("PyTorch's random initial"))
        from .backends.pytorch.export import SUFFIXES
        from .backends.pytorch.export import export as do_export
        target = output or Path(graph.name + SUFFIXES[format.value])
        with progress.display(f"exporting {graph.name} to {format.value}"):
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
    set_: SetOneOpt = None,
    arch: ArchOpt = None,
) -> None:
    """Compile with Apache TVM (Relax) into a deployable shared library, plus a JSON
    manifest beside it. Both are written atomically."""
    def body() -> None:
        import hashlib
        import json

        from .atomic import atomic_path
        from .backends import load_backend
        if dtype not in ("float32", "float16"):
            raise UsageError(f"unknown dtype `{dtype}`", None, "float32 or float16")
        a = _one_graph(spec, set_, arch, "compile")
        load_backend("tvm.build")  # a missing TVM is said before anything else
        tgt = parse_target(target)
        out = output or Path(a.name + ".so")
        if weights is None:
            _note(_random_weights("seeded random"))
        display = progress.display(f"compiling {a.name} for {target} with TVM")
        try:
            with display:
                compiled = _tvm_compile(a, tgt, weights, batch, dtype, tune, tuning_db, display)
                display.stage("writing the library")
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
                 tune: int, tuning_db: Path | None, display: Any):
    """Architecture.compile, with tuning's errors told as a user's."""
    from .backends.tvm.build import make_target
    from .backends.tvm.tune import TuningError
    try:
        make_target(tgt)
    except ValueError as exc:  # an unknown target kind, tag or CPU
        raise UsageError(f"--target: {last_line(exc)}", None) from None
    try:
        return a.compile(tgt, weights, batch, dtype, tune=tune, tuning_db=tuning_db,
                         progress=display)
    except TuningError as exc:
        raise UsageError(str(exc), None) from None


# what the last layer makes, as `run` labels it (a library older than this record: scores)
_SCORES = {"softmax": "probabilities"} | dict.fromkeys(("fc", "linear", "conv"), "logits")


@app.command("run")
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
        if compiled.meta.get("weights", "given") != "given":
            _note(f"{library} holds {compiled.meta['weights']} weights (compiled without "
                  "--weights): its outputs mean nothing")
        if input is None:
            _note(f"no --input: running on a random input (normal, seed 0) of shape "
                  f"{list(shape)}")
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
        what = _SCORES.get(compiled.meta.get("output_op"), "scores")
        names = None if labels is None else read_labels(labels, scores.shape[1])
        for b, row in enumerate(scores):
            best = np.argsort(-row)[:top]
            cells = ", ".join(f"class {int(i)}{f' ({names[i]})' if names else ''}: "
                              f"{row[i]:.4g}" for i in best)
            _out().print(f"[{b}] top-{len(best)} {what}: {cells}", markup=False)
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


register(app)  # train and eval (cli_train.py)


def main() -> None:
    # What is loaded by now (archdsl, typer, lark...) lives as long as the process: the
    # garbage collector need not scan it again at every collection (a 10,000-layer stats
    # run spends ~0.05 s less in it; benchmarks/bench_frontend.py).
    gc.freeze()
    app()


if __name__ == "__main__":
    main()

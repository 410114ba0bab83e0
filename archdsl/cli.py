"""The `archdsl` command: a thin shell that parses arguments, calls the library, renders."""

from __future__ import annotations

import gc
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand

from . import interrupt, progress
from .analysis import DTYPE_BYTES, Conventions, Stats, analyse
from .api import Architecture
from .cli_import import register as register_import
from .cli_shell import (
    _err,
    _graphs,
    _note,
    _one_graph,
    _out,
    run,
)
from .cli_train import check_labels, read_labels, register
from .columns import COLUMNS, TRAINING_KEYS, choose
from .errors import UsageError, last_line, printable
from .plugins import PluginError, load_plugin
from .program import display_path
from .training import DEFAULT_COLUMNS, for_stats


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
        = False,
        plugin: Annotated[list[str] | None, typer.Option(
            "--plugin", metavar="MODULE|FILE.py",
            help="import a module or .py file that registers its own ops (archdsl.plugins); "
                 "repeatable")] = None) -> None:
    """archdsl: describe, measure and compile neural-network architectures."""
    for target in plugin or []:
        try:
            load_plugin(target)
        except PluginError as exc:
            _err().print(f"error: {exc}", markup=False)
            raise typer.Exit(1) from None


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


def _random_weights(which: str) -> str:
    return (f"no --weights: the output holds {which} weights, a stand-in for testing speed "
            "and deployment, not a trained network")



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
    training: Annotated[bool, typer.Option(
        "--training", help="training columns too: trainable params, forward+backward MACs, "
        "activations kept for backward, Adam's memory (all of them: --columns, --wide); "
        "training facts in JSON and CSV")] = False,
    batch: Annotated[int, typer.Option(
        "--batch", min=1, metavar="N", help="images per batch, for the per-batch training "
        "columns (Kept, SGD and Adam MB) and --latency")] = 1,
    freeze: Annotated[bool, typer.Option(
        "--freeze", help="train only the head, as archdsl.backends.pytorch.freeze does")]
    = False,
    train_last: Annotated[int, typer.Option(
        "--train-last", min=0, metavar="N", help="with --freeze: the last N stages train too")]
    = 0,
    by_kind: Annotated[bool, typer.Option(
        "--by-kind", help="one row per kind of op (conv, linear, attention, norm...)")]
    = False,
    latency: Annotated[str | None, typer.Option(
        "--latency", metavar="TARGET", help="measure: compile each architecture with TVM for "
        "TARGET (llvm: this CPU) and add its median latency in ms (random weights, --batch); "
        "builds are cached (--cache-dir)")] = None,
    runs: Annotated[int, typer.Option(
        "--runs", min=1, max=10_000, metavar="N",
        help="--latency: timed runs per architecture, after 3 warm-up runs")] = 20,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", metavar="DIR", help="--latency's build cache (default: "
        "$XDG_CACHE_HOME or ~/.cache, then archdsl/builds)")] = None,
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
        if training and columns is None and not wide:
            chosen += [COLUMNS[k] for k in DEFAULT_COLUMNS
                       if (COLUMNS[k].layer if per else COLUMNS[k].arch)]
        train = training or batch > 1 or freeze or train_last > 0 or by_kind or \
            any(c.key in TRAINING_KEYS for c in chosen)
        chosen = _latency_column(chosen, latency, columns is not None, per or by_kind)
        conv = Conventions(bias=bias, norm=norm, count=count.value)
        archs = _graphs(specs, set_, arch)
        all_stats = [analyse(a.graph, dtype, conv) for a in archs]
        for a, s in zip(archs, all_stats, strict=True) if train else ():
            for_stats(s, a.graph, batch, freeze, train_last)
        failed = [] if latency is None else \
            _latency(archs, all_stats, latency, batch, dtype, runs, cache_dir)
        if by_kind:
            _print_kinds(all_stats, format)
        else:
            _print_stats(all_stats, per, depth, format, chosen)
        if failed:
            from .errors import ArchErrors
            raise ArchErrors(failed)
    run(body)


def _latency_column(chosen: list, target: str | None, named: bool, per: bool) -> list:
    """The columns, with `latency_ms` when --latency measures (it cannot be shown without)."""
    if target is None:
        if COLUMNS["latency_ms"] in chosen:
            raise UsageError("the latency_ms column is measured: it needs --latency TARGET",
                             None, "e.g. --latency llvm (this CPU)")
        return chosen
    if per:
        raise UsageError("--latency measures whole networks: it goes with the comparison "
                         "table, not --per-layer, --depth or --by-kind", None)
    return chosen if COLUMNS["latency_ms"] in chosen or named else \
        [*chosen, COLUMNS["latency_ms"]]


def _latency(archs: list[Architecture], all_stats: list[Stats], target: str, batch: int,
             dtype: str, runs: int, cache_dir: Path | None) -> list[UsageError]:
    """Compile (or load from the cache) and time every architecture; the points that failed."""
    from .backends import load_backend
    from .latency import measure_all
    build = load_backend("tvm.build")  # a clear message when TVM is missing
    try:
        tgt = build.make_target(parse_target(target))
    except ValueError as exc:
        raise UsageError(f"--latency {target}: {last_line(exc)}", None,
                         "--latency takes the targets `archdsl compile --target` takes "
                         "(llvm: this CPU)") from None
    try:
        build.check_build_args(batch, dtype)
    except ValueError as exc:
        raise UsageError(f"--latency: {exc}", None, "--dtype float32 or float16") from None
    return measure_all(archs, all_stats, tgt, target, batch, dtype, runs, cache_dir=cache_dir,
                       show=True)


def _print_kinds(all_stats: list[Stats], fmt: Format) -> None:
    from . import report, writers
    if fmt is Format.json:
        sys.stdout.write(writers.kinds_json(all_stats))
    elif fmt is Format.csv:
        sys.stdout.write(writers.kinds_csv(all_stats))
    elif fmt is Format.markdown:
        sys.stdout.write("".join(report.kinds_markdown(s) for s in all_stats))
    else:
        for s in all_stats:
            _out().print(report.kinds_table(s))


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
        a = _one_graph(spec, set_, arch, "graph")
        target = output or Path(a.graph.name + ".svg")
        path = render(draw(a.graph, depth, conventions=Conventions(count=count.value)), target,
                      inputs=list(a.program.files))
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
                compiled = _tvm_compile(a, tgt, weights, batch_, dtype, tune, tuning_db, display)
                display.stage("writing the library")
                _write_library(compiled, out, inputs, _manifest(
                    a, tgt, dtype, batch_, weights, compiled, display.event, tune))
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
              compiled, tuned, tune: int) -> dict[str, Any]:
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
    interrupt.checkpoint()  # not after a Ctrl-C that was swallowed on the way
    try:
        compiled.export_library(out, manifest, inputs)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}", None) from None
    except RuntimeError as exc:  # TVM runs a C compiler to link the library
        raise UsageError(f"cannot write {out}: linking the library failed: "
                         f"{last_line(exc)[:500]}", None,
                         "TVM links with the C compiler `cc` (or $CXX): is one installed "
                         "and working?") from None


def _ms(seconds: float | None) -> float | None:
    """Milliseconds to 4 significant digits (a kernel may take nanoseconds)."""
    return None if seconds is None else float(f"{1e3 * seconds:.4g}")


def _tvm_compile(a: Architecture, tgt: Any, weights: Path | None, batch: int, dtype: str,
                 tune: int, tuning_db: Path | None, display: Any):
    """Architecture.compile, with tuning's errors told as a user's."""
    from .backends.tvm.lower import WeightsError
    from .backends.tvm.tune import TuningError
    try:
        return a.compile(tgt, weights, batch, dtype, tune=tune, tuning_db=tuning_db,
                         progress=display)
    except TuningError as exc:
        raise UsageError(str(exc), None) from None
    except WeightsError as exc:
        raise UsageError(str(exc), None, "the keys and shapes are the PyTorch backend's: "
                         "compare with archdsl.load(spec).to_torch().state_dict()") from None


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


@app.command()
def ops() -> None:
    """List the ops the language knows, with their syntax."""
    from rich.table import Table
    from rich.text import Text

    from .layer_attrs import attr_hint
    from .ops import ALIASES, OPS
    table = Table(title="archdsl ops")
    for col in ("Op", "Category", "Written", "Aliases", "What it is"):
        table.add_column(col)
    for name, op in OPS.items():
        if not op.in_syntax:
            continue
        aliases = ", ".join(a for a, t in ALIASES.items() if t == name)
        # a plugin's op is described by its own text: plain text, never markup or escapes
        cells = (name, op.category, attr_hint(op).split(" is written ", 1)[1], aliases, op.doc)
        table.add_row(*(Text(printable(str(c))) for c in cells))
    _out().print(table)


register(app)  # train and eval (cli_train.py)

register_import(app)  # import (cli_import.py)


def main() -> None:
    # SIGTERM unwinds like Ctrl-C does: the atomic writer removes its temporary files
    signal.signal(signal.SIGTERM, _terminate)
    interrupt.install()  # a Ctrl-C that a library swallows still stops the command
    # what a library's destructors raise at exit after an interrupt (TVM's worker pools
    # joining their own thread) is not the user's to read as a traceback
    sys.unraisablehook = _ignore_unraisable
    # What is loaded by now (archdsl, typer, lark...) lives as long as the process: the
    # garbage collector need not scan it again at every collection (a 10,000-layer stats
    # run spends ~0.05 s less in it; benchmarks/bench_frontend.py).
    gc.freeze()
    app()


def _ignore_unraisable(unraisable) -> None:
    pass


def _terminate(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main()

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

from . import interrupt
from .analysis import DTYPE_BYTES, Conventions, Stats, analyse
from .api import Architecture
from .cli_build import parse_target
from .cli_build import register as register_build
from .cli_import import register as register_import
from .cli_shell import (
    ArchOpt,
    SetOneOpt,
    SetOpt,
    SpecArgs,
    _err,
    _graphs,
    _one_graph,
    _out,
    run,
)
from .cli_train import register
from .columns import COLUMNS, TRAINING_KEYS, choose
from .errors import UsageError, last_line, printable
from .plugins import PluginError, load_plugin
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


register_build(app)  # export, compile and run (cli_build.py)


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

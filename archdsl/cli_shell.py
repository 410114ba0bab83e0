"""What every command of the CLI shares: the consoles, `--set` parsing, loading and
elaborating specs, reporting errors and warnings compiler-style, and `run` (a command's body,
with user errors told in words, never a traceback). `cli.py` registers the core commands,
`cli_build.py` export, compile and run, `cli_train.py` the training ones, `cli_import.py` import."""

from __future__ import annotations

import itertools
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import interrupt
from .api import Architecture, elaborate, named_like_file, select_archs
from .errors import (
    ArchError,
    ArchErrors,
    ErrorLimit,
    UsageError,
    did_you_mean,
    last_line,
    printable,
)
from .limits import MAX_ERRORS, MAX_SETTINGS, exceeded
from .program import Program, load_program

if TYPE_CHECKING:
    from rich.console import Console


def _out() -> Console:
    from rich.console import Console  # not needed by --format json/csv: loaded when used
    # Piped output keeps whole tables: a width of 80 would crop the numbers.
    wide = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 220
    return Console(highlight=False, soft_wrap=False, width=wide, emoji=False)


def _err() -> Console:
    from rich.console import Console
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def _note(text: str) -> None:
    """A console note on stderr (stdout keeps only the results)."""
    _err().print(f"note: {text}", markup=False, style="yellow")


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
    count = math.prod(len(v) for _, v in axes)
    if count > MAX_SETTINGS:
        raise ArchErrors([UsageError(f"--set gives {count:,} combinations of values", None,
                                     exceeded("architectures one command elaborates",
                                              MAX_SETTINGS))])
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
        if len(graphs) + len(errors) + len(names) * len(combos) > MAX_SETTINGS:
            raise ArchErrors([UsageError(
                "these files and --set values give more than "
                f"{MAX_SETTINGS:,} architectures", None,
                exceeded("architectures one command elaborates", MAX_SETTINGS))])
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
    # the note that a pass stopped at the error limit goes last, never cut off
    stops = [e for e in errors if isinstance(e, ErrorLimit)][:1]
    errors = [e for e in errors if not isinstance(e, ErrorLimit)]
    _print_diagnostics(console, errors[:MAX_ERRORS] + stops)
    n = len(errors)
    if n > MAX_ERRORS:
        console.print(f"\n... and {n - MAX_ERRORS} more errors (the first {MAX_ERRORS} are "
                      "shown)", markup=False)
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
        _print_diagnostics(console, warnings[:MAX_ERRORS])
        console.print()


def run(fn) -> None:
    """Run a command's body: errors are reported as errors (exit 1), never as tracebacks;
    what is not an error of the input is reported as a bug in archdsl (exit 70)."""
    try:
        fn()
    except ArchErrors as exc:
        _report_errors(exc.errors)
        raise typer.Exit(1) from None
    except ArchError as exc:
        _report_errors([exc])
        raise typer.Exit(1) from None
    except ImportError as exc:  # a backend whose framework is missing
        _err().print(f"error: {printable(str(exc))}", markup=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        _err().print("interrupted", markup=False)
        raise typer.Exit(130) from None
    except MemoryError:
        _err().print("error: out of memory", markup=False)
        raise typer.Exit(1) from None
    except OSError as exc:  # a full disk, a file that went away
        _err().print(f"error: {printable(str(exc))}", markup=False)
        raise typer.Exit(1) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:
        if interrupt.pressed():  # a Ctrl-C that a library turned into another error
            _err().print("interrupted", markup=False)
            raise typer.Exit(130) from None
        _err().print(f"internal error: {type(exc).__name__}: {printable(last_line(exc))}\n"
                     "this is a bug in archdsl: please report it with the command and files "
                     "that caused it", markup=False)
        raise typer.Exit(70) from None


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


# the arguments and options the commands share
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

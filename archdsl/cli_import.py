"""`archdsl import`: a PyTorch classifier → a spec (the body of the command; cli.py
registers it)."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

BUILT_IN = ("torchvision", "timm")  # sources that name a library's model, not the user's code
SOURCE_HELP = (
    "torchvision:NAME (e.g. torchvision:resnet50), timm:NAME (when timm is installed), or "
    "package.module:callable — which IMPORTS AND RUNS that Python code (the callable is "
    "called with --args and must return an nn.Module); only name code you trust")


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)


def import_command(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP, show_default=False,
                                          metavar="SOURCE")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="the spec to write (default: print it)")]
    = None,
    input_: Annotated[str | None, typer.Option(
        "--input", metavar="CxHxW",
        help="one image's shape (default: the model's own, e.g. 3x299x299 for Inception v3; "
        "required for package.module:callable)")] = None,
    args: Annotated[list[str] | None, typer.Option(
        "--args", metavar="NAME=VALUE",
        help="an argument for the model's constructor (repeatable): --args num_classes=10")]
    = None,
    name: Annotated[str | None, typer.Option(
        metavar="NAME", help="the architecture's name in the spec (default: the model's)")]
    = None,
    partial: Annotated[bool, typer.Option(
        "--partial", help="where archdsl lacks an op, write the network up to it and list "
        "what is missing in the spec (without it: an error naming each)")] = False,
) -> None:
    """Import a PyTorch model as an archdsl spec: blocks for repeated modules, residual /
    concat / gate for their joins, the module's state_dict names as labels. The spec is
    checked to elaborate to the traced network; its parameters and MACs are compared with
    the model's (PyTorch's FlopCounterMode)."""
    from .cli_shell import _err, parse_sets, run

    def body() -> None:
        from .backends import load_backend
        from .errors import UsageError
        importer = load_backend("pytorch.importer")
        shape = _shape(input_) if input_ else None
        kwargs = parse_sets(args)[0] if args else {}
        if any(isinstance(v, list) for v in kwargs.values()):
            raise UsageError("--args takes one value per name", None)
        from .atomic import check_output
        if output is not None:
            check_output(output)  # before the model is built and traced
        with _err().status(f"importing {source}..."), _user_code_path(source):
            result = importer.import_source(source, kwargs, shape, name, partial)
        if output is not None:  # the spec never replaces the module it came from
            check_output(output, _module_files(source))
        with _err().status(f"checking {result.name}..."):
            check = importer.check_counts(result)
        if output is None:
            sys.stdout.write(result.text)
        else:
            result.write(output, _module_files(source))
        _err().print(_summary(result, output, check), markup=False)
    run(body)


@contextlib.contextmanager
def _user_code_path(source: str) -> Iterator[None]:
    """The current folder on the import path while `package.module:callable` is imported
    and called, as `python -m` would have it; never for torchvision:/timm:, whose imports
    must not find a `torchvision.py` planted in the folder the command runs in (the
    console script does not search it)."""
    here = str(Path.cwd())
    add = source.partition(":")[0] not in BUILT_IN and "" not in sys.path \
        and here not in sys.path
    if add:
        sys.path.insert(0, here)
    try:
        yield
    finally:
        if add and here in sys.path:
            sys.path.remove(here)


def _module_files(source: str) -> list[str]:
    """The file of the module a package.module:callable source imported (none for
    torchvision:/timm:)."""
    kind = source.partition(":")[0]
    module = None if kind in BUILT_IN else sys.modules.get(kind)
    where = getattr(module, "__file__", None)
    return [where] if isinstance(where, str) else []


def _shape(text: str) -> tuple[int, ...]:
    from .errors import UsageError
    from .limits import MAX_DIM, MAX_ELEMENTS, MAX_INPUT_RANK, exceeded
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(d) for d in parts) if len(parts) <= MAX_INPUT_RANK else ()
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise UsageError(f"--input expects a shape such as 3x224x224, got `{text[:80]}`", None)
    if max(dims) > MAX_DIM or math.prod(dims) > MAX_ELEMENTS:
        raise UsageError(f"--input {text[:80]} is larger than archdsl describes", None,
                         exceeded("one dimension of a tensor", MAX_DIM) if max(dims) > MAX_DIM
                         else exceeded("the elements of one tensor", MAX_ELEMENTS))
    return dims


def _summary(result, output: Path | None, check) -> str:
    where = f"wrote {output}" if output is not None else f"imported {result.name}"
    lines = len(result.text.splitlines())
    text = f"{where}: {lines} lines, {result.blocks} block{'s' if result.blocks != 1 else ''}"
    if result.unmapped:
        text += f"; PARTIAL: {sum(u.count for u in result.unmapped)} operations left out"
    return text + "\n" + check.describe()

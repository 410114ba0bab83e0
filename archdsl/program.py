"""Loading spec files: includes (once each, never outside the including file's tree),
shared blocks, and the architectures a file offers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import syntax as S
from ._perf import gc_paused
from .errors import ArchErrors, ErrorSink, IncludeError, NameError_, Span
from .parser import parse


@dataclass
class Program:
    """Everything one root file brings in: blocks and architectures by name."""

    file: str
    blocks: dict[str, S.BlockDef] = field(default_factory=dict)
    archs: dict[str, S.ArchDef | S.ArchAlias] = field(default_factory=dict)
    own: list[str] = field(default_factory=list)  # the architectures the root file offers


def display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def load_program(path: str | os.PathLike | None = None, text: str | None = None,
                 name: str = "<string>") -> Program:
    """Load a spec from a file (or from `text`, with includes relative to the cwd)."""
    with gc_paused():
        return _load_program(path, text, name)


def _load_program(path: str | os.PathLike | None, text: str | None, name: str) -> Program:
    sink = ErrorSink()
    if text is None:
        if path is None:
            raise ValueError("load_program needs a path or text")
        root = Path(path).resolve()
        name = display_path(Path(path))
        try:
            text = root.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ArchErrors([IncludeError(f"cannot read {name}: {_reason(exc)}", None)]) from None
    else:
        root = Path.cwd() / name
    prog = Program(name)
    files: dict[Path, S.Module] = {}
    root_module = _visit(root, text, name, files, sink)
    if root_module is not None:
        _collect(prog, files, root_module, sink)
    sink.check()
    return prog


def _visit(path: Path, text: str, name: str, files: dict[Path, S.Module],
           sink: ErrorSink) -> S.Module | None:
    try:
        module = parse(text, name)
    except ArchErrors as exc:
        for e in exc.errors:
            sink.add(e)
        return None
    files[path] = module
    for inc in module.includes:
        target = (path.parent / inc.path).resolve()
        if not target.is_relative_to(path.parent.resolve()):
            sink.add(IncludeError(f"include \"{inc.path}\" escapes the directory of {name}",
                                  inc.span, "include files from the same folder or below"))
            continue
        if target in files:
            continue  # included once, like `#pragma once`; cycles are harmless
        try:
            sub = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            sink.add(IncludeError(f"cannot include \"{inc.path}\": {_reason(exc)}", inc.span))
            continue
        _visit(target, sub, display_path(target), files, sink)
    return module


def _collect(prog: Program, files: dict[Path, S.Module], root: S.Module, sink: ErrorSink) -> None:
    seen_blocks: dict[str, Span] = {}
    seen_archs: dict[str, Span] = {}
    for module in files.values():
        for b in module.blocks:
            _define(prog.blocks, seen_blocks, b.name, b, b.span, "block", sink)
        for a in module.archs:
            _define(prog.archs, seen_archs, a.name, a, a.span, "architecture", sink)
    own = [a.name for a in root.archs]
    prog.own = own or [a for a in prog.archs]


def _define(table: dict, seen: dict[str, Span], name: str, value, span: Span, what: str,
            sink: ErrorSink) -> None:
    if name in seen:
        sink.add(NameError_(f"{what} `{name}` is defined twice", span,
                            notes=[("first defined here", seen[name])]))
        return
    seen[name] = span
    table[name] = value


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return getattr(exc, "strerror", None) or str(exc)

"""Loading spec files: includes (once each, never outside the including file's tree),
shared blocks, and the architectures a file offers."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import syntax as S
from ._perf import gc_paused
from .errors import ArchErrors, ErrorSink, IncludeError, NameError_, Span, printable
from .inputs import FileTooLarge, read_regular
from .limits import MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, exceeded
from .parser import parse


@dataclass
class Program:
    """Everything one root file brings in: blocks and architectures by name."""

    file: str
    blocks: dict[str, S.BlockDef] = field(default_factory=dict)
    archs: dict[str, S.ArchDef | S.ArchAlias] = field(default_factory=dict)
    own: list[str] = field(default_factory=list)  # the architectures the root file offers
    # every file read (the root first, then its includes): path → SHA-256 of its bytes
    files: dict[Path, str] = field(default_factory=dict)

    def sha256(self) -> str:
        """One hash over every file the spec is made of (names and contents), for manifests."""
        h = hashlib.sha256()
        for path, digest in self.files.items():
            h.update(f"{display_path(path)}\0{digest}\n".encode())
        return h.hexdigest()


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
    budget = _Budget()
    if text is None:
        if path is None:
            raise ValueError("load_program needs a path or text")
        name = display_path(Path(path))
        try:
            root = _resolve(Path(path))
            text = budget.read(root, f"read {name}", None)
        except IncludeError as exc:
            raise ArchErrors([exc]) from None
    else:
        root = Path.cwd() / name
        if len(text) > MAX_FILE_BYTES:
            raise ArchErrors([IncludeError(f"{name} is longer than {MAX_FILE_BYTES:,} characters",
                                           None, exceeded("the size of a spec file",
                                                          MAX_FILE_BYTES, " bytes"))])
    prog = Program(name)
    files: dict[Path, S.Module] = {}
    with sink.collecting():
        root_module = _visit(root, text, name, files, sink, budget)
        if root_module is not None:
            _collect(prog, files, root_module, sink)
    prog.files = {p: d for p, d in budget.digests.items() if p in files}
    sink.check()
    return prog


class _Budget:
    """Reads spec files: regular files only, each within MAX_FILE_BYTES, all together within
    MAX_TOTAL_BYTES and MAX_FILES; a FIFO or device is refused without reading from it."""

    def __init__(self) -> None:
        self.total = 0
        self.digests: dict[Path, str] = {}

    def read(self, path: Path, name: str, span: Span | None) -> str:
        """The text of the file at `path`; `name` says what reading it is ("read x.arch",
        'include "y.arch"'), for messages."""
        if len(self.digests) >= MAX_FILES:
            raise IncludeError(f"cannot {name}: the spec reads more than {MAX_FILES} "
                               "files", span, exceeded("files in one spec", MAX_FILES))
        data = _read_regular(path, name, span)
        self.total += len(data)
        if self.total > MAX_TOTAL_BYTES:
            raise IncludeError(f"cannot {name}: the spec and its includes hold more "
                               f"than {MAX_TOTAL_BYTES:,} bytes", span,
                               exceeded("the size of a spec with its includes", MAX_TOTAL_BYTES,
                                        " bytes"))
        self.digests[path] = hashlib.sha256(data).hexdigest()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IncludeError(f"cannot {name}: not UTF-8 text (byte {exc.start})",
                               span) from None


def _read_regular(path: Path, name: str, span: Span | None) -> bytes:
    try:
        return read_regular(path, MAX_FILE_BYTES)
    except FileTooLarge as exc:
        raise IncludeError(f"cannot {name}: it holds {exc.size:,} bytes", span,
                           exceeded("the size of a spec file", MAX_FILE_BYTES, " bytes")) from None
    except OSError as exc:
        raise IncludeError(f"cannot {name}: {exc.strerror or exc}", span) from None


def _resolve(path: Path, span: Span | None = None) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, a NUL byte
        raise IncludeError(f"cannot read {printable(str(path))}: {exc}", span) from None


def _visit(root: Path, text: str, name: str, files: dict[Path, S.Module], sink: ErrorSink,
           budget: _Budget) -> S.Module | None:
    """Parse the root file and, depth first, every file it includes (each once)."""
    todo: list[tuple[Path, str | None, str, S.Include | None]] = [(root, text, name, None)]
    first = None
    while todo:
        path, source, shown, inc = todo.pop()
        if path in files:
            continue  # included once, like `#pragma once`; cycles are harmless
        try:
            if source is None:
                source = budget.read(path, f'include "{inc.path}"', inc.span)
            module = parse(source, shown)
        except IncludeError as exc:
            sink.add(exc)
            continue
        except ArchErrors as exc:
            for e in exc.errors:
                sink.add(e)
            if first is None:
                return None
            continue
        files[path] = module
        first = first or module
        todo.extend(reversed(_includes(path, module, name if inc is None else shown, sink)))
    return first


def _includes(path: Path, module: S.Module, name: str,
              sink: ErrorSink) -> list[tuple[Path, None, str, S.Include]]:
    found = []
    folder = path.parent.resolve()
    for inc in module.includes:
        if any(ord(c) < 32 or c == "\x7f" for c in inc.path):
            sink.add(IncludeError(f"include {printable(repr(inc.path))}: a path cannot hold "
                                  "control characters", inc.span))
            continue
        try:
            target = _resolve(folder / inc.path, inc.span)
        except IncludeError as exc:
            sink.add(exc)
            continue
        if not target.is_relative_to(folder):
            sink.add(IncludeError(f"include \"{inc.path}\" escapes the directory of {name}",
                                  inc.span, "include files from the same folder or below"))
            continue
        found.append((target, None, display_path(target), inc))
    return found


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

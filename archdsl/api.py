"""The Python API: `archdsl.load(...)` → Architecture, with stats, graph, format and backends."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import syntax as S
from ._perf import gc_paused
from .elaborate import Abort, Elaborator
from .errors import ArchErrors, ErrorSink, UsageError, did_you_mean
from .expr import WorkLimit, metered
from .ir import Graph
from .program import Program, load_program


def load_spec(source: str | os.PathLike) -> Program:
    """A path to a .arch file, or spec text (anything containing a newline or `arch `)."""
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith("arch ")):
        return load_program(text=source)
    return load_program(path=source)


def elaborate(program: Program, arch: str, overrides: dict[str, Any] | None = None) -> Graph:
    """Elaborate one architecture of a loaded program into a typed graph (raises ArchErrors)."""
    sink = ErrorSink()
    graph = None
    with metered() as meter:
        try:
            with gc_paused(), sink.collecting():
                graph = Elaborator(program, sink).arch(arch, dict(overrides or {}))
        except Abort:
            pass
        except WorkLimit as exc:
            with sink.collecting():
                sink.add(exc.error)
        sink.check()
        assert graph is not None
        if graph.budgets:
            from .budgets import check_budgets
            meter.where = graph.span
            try:
                with sink.collecting():
                    for err in check_budgets(graph):
                        sink.add(err)
            except WorkLimit as exc:
                with sink.collecting():
                    sink.add(exc.error)
            sink.check()
    return graph


def select_archs(program: Program, arch: str | None, allow_none: bool = False) -> list[str]:
    """The architectures a command works on: the one named, or all the file offers.

    `allow_none` accepts a file of blocks only (it parsed, so `check` passes it)."""
    if arch is None:
        if not program.own and not (allow_none and program.blocks):
            raise ArchErrors([UsageError(f"{program.file} defines no architecture", None,
                                         "add `arch NAME` followed by `input` and layers")])
        return list(program.own)
    if arch not in program.archs:
        raise ArchErrors([UsageError(f"{program.file} has no architecture `{arch}`", None,
                                     did_you_mean(arch, program.archs)
                                     or "it has: " + ", ".join(program.own))])
    return [arch]


def named_like_file(program: Program, names: list[str]) -> list[str]:
    """Of several architectures a file offers, the one named like the file (`vgg_e.arch`
    defines vgg_e and vgg19_bn = vgg_e(norm=bn): vgg_e), where there is one; else all. What a
    command that takes one architecture uses when none is named."""
    stem = Path(program.file).stem
    return [stem] if len(names) > 1 and stem in names else names


@dataclass
class Architecture:
    """One elaborated architecture: its graph, and what can be made from it."""

    graph: Graph
    program: Program

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.graph.settings)

    @property
    def warnings(self) -> list:
        """What is valid but probably not meant (`ArchWarning`s; the CLI prints them)."""
        return list(self.graph.warnings)

    def stats(self, dtype: str = "float32", conventions=None):
        """Per-layer and total counts (archdsl.analysis.Stats); `conventions` switches
        biases/normalization out of params or cost to FLOPs (analysis.Conventions)."""
        from .analysis import analyse
        return analyse(self.graph, dtype=dtype, conventions=conventions)

    def training(self, dtype: str = "float32", freeze: bool = False, train_last: int = 0):
        """Training costs (archdsl.training.Training): activations kept for backward per
        image (`.kept`, `.kept_for(batch)`), forward+backward MACs, trainable and frozen
        parameters, `.memory(batch, "adam")`; `freeze` as `stats --freeze` counts it."""
        from .analysis import DTYPE_BYTES
        from .training import costs, trainable_names
        trains = trainable_names(self.graph, last_stages=train_last) \
            if freeze or train_last else None
        return costs(self.graph, DTYPE_BYTES[dtype], trains)

    def to_torch(self, num_classes: int | None = None, logits: bool = False):
        """A PyTorch `nn.Module` built from the graph (needs the [torch] extra).

        `num_classes` rebuilds the network with that many outputs, through the spec's
        `classes` parameter (the zoo's convention): the new classifier keeps its name, so
        pretrained weights for everything else load with `load_weights(..., strict=False)`.
        `logits=True` leaves out a final softmax: the module gives class scores, as
        cross-entropy training wants (the weights are the same).
        """
        from .backends import load_backend
        arch = self
        if num_classes is not None and "classes" not in self.graph.settings:
            raise ArchErrors([UsageError(
                f"to_torch(num_classes=...) needs a `classes` parameter in `{self.name}`",
                self.graph.span, f"declare it (`arch {self.name}(classes = 1000)`) and write "
                "the classifier as FC-{classes}")])
        if num_classes is not None and self.settings.get("classes") != num_classes:
            arch = self.with_settings(classes=num_classes)
        return load_backend("pytorch").to_torch(arch.graph, logits=logits)

    def compile(self, target: Any = "llvm", weights: Any = None, batch: int = 1,
                dtype: str = "float32", tune: int = 0, tuning_db: str | os.PathLike | None = None,
                progress: Any = None, winograd: bool = True, chunk: int | None = None):
        """Compile with TVM (the [tvm] extra) → `archdsl.backends.tvm.Compiled`, callable on
        numpy or torch inputs. `weights`: a state_dict (the PyTorch backend's keys) or a file
        (.safetensors, or a torch.save state_dict); None: seeded random weights.

        `tune=N` tunes with MetaSchedule until every kernel has N measured trials in the
        database `tuning_db` (default: a per-user cache folder per target), then builds with
        the best schedules; with `tune=0` a given `tuning_db` is only applied. `progress`
        receives `archdsl.backends.tvm.tune.TuneEvent`s (see that module). `winograd=False`
        keeps every CPU conv direct (3×3 convs by Winograd round to about 6e-6 of their
        output's scale, the direct sum to 3e-7). `chunk=N` runs the network's trunk N images
        at a time (N dividing the batch; default: one at a time in a CPU build whose
        activations outweigh its weights, else the whole batch); a build for several threads
        runs the chunks on all of them at once where they share them evenly."""
        from .backends import load_backend
        if isinstance(weights, (str, os.PathLike)):
            weights = read_weights(weights)
        return load_backend("tvm.build").compile(self.graph, target, weights, batch, dtype,
                                                 tune=tune, tuning_db=tuning_db,
                                                 progress=progress, winograd=winograd,
                                                 chunk=chunk)

    def with_settings(self, **params: Any) -> Architecture:
        """The same architecture elaborated with some parameters changed."""
        unknown = [k for k in params if k not in self.graph.settings]
        if unknown:
            raise ArchErrors([UsageError(
                f"`{self.name}` has no parameter `{unknown[0]}`", self.graph.span,
                did_you_mean(unknown[0], self.graph.settings) or
                "parameters: " + ", ".join(self.graph.settings) if self.graph.settings else
                f"`{self.name}` takes no parameters")])
        return Architecture(elaborate(self.program, self.name, {**self.graph.given, **params}),
                            self.program)

    def format(self) -> str:
        from .formatter import format_graph
        return format_graph(self.graph)

    def __repr__(self) -> str:
        from .ops import fmt_shape
        return (f"Architecture({self.name!r}, input={fmt_shape(self.graph.input_shape)}, "
                f"output={fmt_shape(self.graph.output_shape)}, nodes={self.graph.node_count})")


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """A state_dict from a file: .safetensors (read as numpy: no torch needed), or a
    torch.save file (needs torch; loaded with weights_only=True)."""
    from .inputs import check_regular
    try:
        check_regular(path)  # a reader would wait on a FIFO, or read /dev/zero forever
    except OSError as exc:
        raise ArchErrors([UsageError(f"cannot read weights from {path}: "
                                     f"{exc.strerror or exc}", None)]) from None
    if str(path).endswith(".safetensors"):
        try:
            from safetensors import safe_open
        except ImportError as exc:
            raise ArchErrors([UsageError(f"reading {path} needs safetensors: pip install "
                                         "safetensors", None)]) from exc
        try:
            with safe_open(str(path), framework="numpy") as f:
                # a checkpoint of `archdsl train` holds its model's state under "model."
                prefix = "model." if (f.metadata() or {}).get("format") == \
                    "archdsl-checkpoint" else ""
                return {k[len(prefix):]: f.get_tensor(k) for k in f.keys()
                        if k.startswith(prefix)}
        except Exception as exc:  # corrupt files raise several types
            raise ArchErrors([UsageError(f"cannot read weights from {path}: {exc}", None)]) \
                from None
    from .backends import load_backend
    return load_backend("pytorch").read_state_dict(path)


def load(source: str | os.PathLike, arch: str | None = None, **params: Any) -> Architecture:
    """Load one architecture from a spec file or spec text.

    `arch` picks one when the file defines several (without it, the one named like the file,
    if any); keyword arguments override the spec's parameters (e.g. `alpha=0.75`).
    """
    program = load_spec(source)
    names = select_archs(program, arch)
    if arch is None:
        names = named_like_file(program, names)
    if len(names) > 1:
        raise ArchErrors([UsageError(
            f"{program.file} defines {len(names)} architectures; choose one with arch=...", None,
            "it has: " + ", ".join(names))])
    return Architecture(elaborate(program, names[0], params), program)


def load_all(source: str | os.PathLike, **params: Any) -> list[Architecture]:
    """Every architecture a spec file offers (parameters apply to each that declares them)."""
    program = load_spec(source)
    return [Architecture(elaborate(program, n, _declared(program, n, params)), program)
            for n in select_archs(program, None)]


def _declared(program: Program, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters an architecture declares (through a derived arch, its target's)."""
    decl = program.archs[name]
    seen = 0
    while isinstance(decl, S.ArchAlias) and seen < len(program.archs):
        decl, seen = program.archs.get(decl.target, decl), seen + 1
    names = {p.name for p in getattr(decl, "params", [])}
    return {k: v for k, v in params.items() if k in names}


def from_torch(module: Any, input_shape: tuple[int, ...], name: str | None = None,
               partial: bool = False):
    """A PyTorch `nn.Module` as an archdsl spec (needs the [torch] extra): returns an
    `Imported` whose `.text` is the spec and `.load()` the Architecture. `input_shape` is one
    image's (3, 224, 224). Raises ImportFailed (an ArchError) naming every part archdsl cannot
    express; `partial=True` writes the network up to the first of them instead."""
    from .backends import load_backend
    return load_backend("pytorch.importer").from_torch(module, input_shape, name, partial)


def import_model(source: str, input_shape: tuple[int, ...] | None = None,
                 partial: bool = False, **args: Any):
    """`archdsl import` in Python: "torchvision:resnet50", "timm:resnet50d" (with timm
    installed) or "package.module:callable" — which imports and runs that code — called with
    `args`."""
    from .backends import load_backend
    return load_backend("pytorch.importer").import_source(source, args, input_shape,
                                                          partial=partial)


def unique_archs(paths: list[Path], distinct: bool = False) -> list[tuple[Path, str]]:
    """(file, architecture) for every architecture the files offer, each name once (index
    files such as specs/vgg.arch repeat the architectures of the files they include). With
    `distinct`, each network once: a family's default that equals one of its named members
    (`densenet` is `densenet121`) is left out, as is any other repeat of the same graph."""
    seen: set[str] = set()
    graphs: set[str] = set()
    out = []
    for path in paths:
        for name in load_spec(path).own:
            if name in seen:
                continue
            seen.add(name)
            if distinct:
                graph = load(path, arch=name).graph
                key = repr((graph.input_shape, graph.signature()))
                if key in graphs:
                    continue
                graphs.add(key)
            out.append((path, name))
    return out


def spec_path(source: str | os.PathLike) -> Path | None:
    p = Path(source)
    return p if p.exists() else None

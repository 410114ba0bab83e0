"""What an import gives back: the spec text and what could not be mapped (no torch here)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from .flat import FlatNet, Unmapped


class ImportFailed(UsageError):
    """Part of the network has no archdsl equivalent (and --partial was not asked for)."""

    def __init__(self, source: str, unmapped: list[Unmapped]) -> None:
        n = sum(u.count for u in unmapped)
        kinds = len(unmapped)
        super().__init__(
            f"cannot import {source}: archdsl cannot express {n} of its operations "
            f"({kinds} kind{'s' if kinds != 1 else ''})", None,
            "--partial (Python: partial=True) writes the network up to the first of them and "
            "lists them all in the spec",
            notes=[(u.render(), None) for u in unmapped])
        self.unmapped = unmapped


@dataclass
class Imported:
    """An imported network: `text` is its spec (it elaborates to the traced graph)."""

    name: str
    source: str
    text: str
    unmapped: list[Unmapped] = field(default_factory=list)  # non-empty: a partial import
    notes: list[str] = field(default_factory=list)
    blocks: int = 0
    input_shape: tuple[int, ...] = ()
    module_params: int = 0  # parameters of the module that the forward pass uses
    module: Any = field(default=None, repr=False)  # what was imported (the importer's object)

    @property
    def complete(self) -> bool:
        return not self.unmapped

    def load(self) -> Any:
        """The spec as an `archdsl.Architecture`."""
        from ..api import load
        return load(self.text)

    def write(self, path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> None:
        """The spec, written atomically; never onto one of `inputs` (the user's module)."""
        from ..atomic import atomic_path
        with atomic_path(path, inputs) as tmp:
            tmp.write_text(self.text, encoding="utf-8")


def truncate(net: FlatNet, cut: int) -> FlatNet:
    """The network up to node `cut` (the last one mapped before the first unmapped op):
    only what that node depends on is kept."""
    keep = {cut}
    for node in reversed(net.nodes[:cut + 1]):
        if node.id in keep:
            keep.update(node.inputs)
    nodes = [n for n in net.nodes if n.id in keep]
    return FlatNet(net.name, net.input_shape, nodes, cut, net.classes, net.source,
                   net.unmapped, net.notes)


def partial_comment(net: FlatNet, stop: str) -> list[str]:
    """The lines that mark what a partial import left out."""
    lines = [f"# PARTIAL IMPORT: the network continues after this spec's last layer, at "
             f"`{stop}`, with", "# operations archdsl cannot express:"]
    for u in net.unmapped:
        lines += [f"#   {line}" for line in u.render().splitlines()]
    return lines

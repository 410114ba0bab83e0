"""Labels: write only those the elaborator would not give by itself.

Elaboration names an unlabelled item with the next free index of its scope, and a layer's
attached norm/act after the layer's label (`conv1` → `bn1`, `relu1`; `3` → `4`; `fc1` →
`fc1_swish`), so a spec that follows torchvision's numbering needs almost no labels. `Sim`
replays the elaborator's naming (elaborate.Scope) while statements are made; every node
that holds tensors must come out under its module path, and an item without a name of its own
(a torch.flatten, a sum) must not take an index that a later module needs.
"""

from __future__ import annotations

import re
from collections import Counter


class Sim:
    """elaborate.Scope's naming, replayed: which label an unlabelled item would get."""

    def __init__(self, reserved: Counter[str]) -> None:
        self.counter = 0
        self.names: set[str] = set()
        self.reserved = reserved  # labels later items of this scope want

    def copy(self) -> Sim:
        other = Sim(self.reserved)
        other.counter, other.names = self.counter, set(self.names)
        return other

    def adopt(self, other: Sim) -> None:
        self.counter, self.names = other.counter, other.names

    def peek(self) -> str:
        c = self.counter
        while str(c) in self.names:
            c += 1
        return str(c)

    def auto(self) -> str:
        label = self.peek()
        self.counter = int(label) + 1
        self.names.add(label)
        return label

    def claim(self, label: str) -> None:
        self.names.add(label)
        if label.isdigit():
            self.counter = max(self.counter, int(label) + 1)

    def release(self, label: str | None) -> None:
        """An item is being named: its own wish no longer blocks anything."""
        if label is not None and self.reserved[label] > 0:
            self.reserved[label] -= 1

    def free(self, label: str) -> bool:
        return label not in self.names and self.reserved[label] <= 0

    def invent(self, base: str) -> str:
        """A label for an item that must not take the next index: its op's name."""
        label, n = base, 2
        while not self.free(label):
            label, n = f"{base}_{n}", n + 1
        self.claim(label)
        return label

    def attached(self, primary: str, labelled: bool, kind: str) -> str:
        """The name elaboration gives a norm/act attached to a layer (elaborate's
        _attached_label), claimed."""
        if not labelled:
            return self.auto()
        if primary.isdigit():
            label = str(self.counter)
        else:
            m = re.match(r"^conv(.*)$", primary)
            label = kind + m.group(1) if m else f"{primary}_{kind}"
        self.claim(label)
        return label


def name_layer(sim: Sim, want: str | None, keep: bool, op: str) -> tuple[str | None, str] | None:
    """Name a layer's primary node: (the label to write or None, its name); None when a
    node that holds tensors cannot get its name here."""
    if want is not None and want == sim.peek() and (keep or sim.free(want)):
        return None, sim.auto()
    if want is not None and want not in sim.names and (keep or sim.free(want)):
        sim.claim(want)
        return want, want
    if keep:
        return None
    if sim.free(sim.peek()):
        return None, sim.auto()
    label = sim.invent(op)
    return label, label

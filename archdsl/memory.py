"""Will it fit? Sizes checked against this machine's memory before a backend allocates.

A spec passes `check` with any sizes its budgets allow (limits.py): a 4-KB spec can describe a
network of terabytes. Backends ask here first, so that `compile` or `to_torch` says what is too
big, and where, instead of asking numpy for 46 TiB (issue #13). The estimate is a lower bound of
what a build needs (its weights, made `copies` times over, and the largest activation of the
batch), so a refusal is never wrong about a network that would have fitted.
"""

from __future__ import annotations

import math
import os

from .errors import ArchErrors, UsageError
from .ir import Graph, Node


def available_bytes() -> int | None:
    """Memory this process can still use: the least of the machine's available memory, this
    process's address-space limit and its cgroup's limit; None when none is known."""
    known = [n for n in (_meminfo_available(), _rlimit_left(), _cgroup_left()) if n is not None]
    return min(known) if known else None


def check_fits(graph: Graph, batch: int, itemsize: int, what: str, copies: int = 2) -> None:
    """Raise a located error when `graph`'s weights (`copies` of them, at `itemsize` bytes a
    value) and its largest activation at `batch` cannot fit in `available_bytes()`."""
    weights, biggest, biggest_act = 0, None, None
    for node in graph.nodes:
        size = _tensor_elements(graph, node)
        weights += size
        if biggest is None or size > biggest[1]:
            biggest = (node, size)
        act = math.prod(node.shape or ())
        if biggest_act is None or act > biggest_act[1]:
            biggest_act = (node, act)
    need = (copies * weights + batch * (biggest_act[1] if biggest_act else 0)) * itemsize
    free = available_bytes()
    if free is None or need <= free:
        return
    node, size = biggest if biggest and biggest[1] * copies >= batch * biggest_act[1] \
        else biggest_act
    raise ArchErrors([UsageError(
        f"{what} `{graph.name}` needs at least {_gib(need)} of memory and this process has "
        f"{_gib(free)} available; its largest layer `{node.name}` alone holds "
        f"{_gib(size * itemsize)}", node.span,
        "make the network smaller (channels, resolution, batch), or use a machine with more "
        "memory")])


def check_training_fits(arch, batch: int, optimizer: str, free: int | None = None,
                        where: str = "this process has") -> None:
    """Raise an error when training `arch` (an Architecture) on batches of `batch` images
    cannot fit in `free` bytes (default: `available_bytes()`; a GPU's free memory for a run
    on it): its parameters, their gradients, the optimizer's state and the activations kept
    for backward (archdsl.training)."""
    need = arch.training().memory(batch, "adam" if optimizer.startswith("adam") else "sgd")
    free = available_bytes() if free is None else free
    if free is None or need <= free:
        return
    raise ArchErrors([UsageError(
        f"training `{arch.graph.name}` on batches of {batch:,} needs at least {_gib(need)} of "
        f"memory and {where} {_gib(free)} available", None,
        "lower --batch-size, or make the network smaller (channels, resolution)")])


def _tensor_elements(graph: Graph, node: Node) -> int:
    ins = [graph.node(i).shape for i in graph.inputs(node.id)]
    tensors = node.opdef.tensors(node.attrs, ins, node.shape) or {}
    return sum(math.prod(shape) for shape in tensors.values())


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _rlimit_left() -> int | None:
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(0, soft - used)


def _cgroup_left() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
            used = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)

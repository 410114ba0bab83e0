"""`archdsl import`: a PyTorch module → an archdsl spec a person would write.

    >>> from archdsl.backends.pytorch.importer import from_torch
    >>> result = from_torch(torchvision.models.resnet50(), (3, 224, 224))
    >>> print(result.text)            # blocks, repetition, residuals; torchvision's names

The module is traced with torch.fx (modules archdsl maps one to one stay whole) and run once
on the meta device (shapes only); each node is mapped onto archdsl's op declarations
(modules.py, functions.py); structure recovery (archdsl.recover, no torch) writes the text.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from archdsl.errors import UsageError
from archdsl.recover import RecoverFailed, StructureError, recover
from archdsl.recover.flat import FlatNet, Unmapped
from archdsl.recover.result import Imported, ImportFailed, partial_comment, truncate

from . import modules as M
from .check import CountCheck, check_counts
from .mapping import build
from .modules import register_module
from .sources import build as build_source
from .trace import TraceFailed, on_meta, parameters_on_meta, record, trace

__all__ = ["CountCheck", "ImportFailed", "Imported", "TraceFailed", "Unmapped", "check_counts",
           "flat_net", "from_torch", "import_source", "parameters_on_meta", "register_module"]


def import_source(source: str, args: dict[str, Any] | None = None,
                  input_shape: tuple[int, ...] | None = None, name: str | None = None,
                  partial: bool = False) -> Imported:
    """`archdsl import SOURCE`: torchvision:NAME, timm:NAME or package.module:callable
    (which imports and runs that code)."""
    built = build_source(source, dict(args or {}))
    shape = input_shape or built.input_shape
    if shape is None:
        raise UsageError(f"{source} does not say what input it takes", None,
                         "give it: --input 3x224x224 (Python: input_shape=(3, 224, 224))")
    return from_torch(built.module, shape, name or built.name, partial, source)


def from_torch(module: nn.Module, input_shape: tuple[int, ...], name: str | None = None,
               partial: bool = False, source: str = "") -> Imported:
    """A PyTorch module → an archdsl spec (`Imported.text`). `input_shape` is per image
    (3, 224, 224). Raises ImportFailed when part of the network has no archdsl equivalent,
    unless `partial`: then the spec stops before the first such part and lists them all."""
    name = name or _snake(type(module).__name__)
    source = source or f"a {type(module).__name__} module"
    try:
        net = flat_net(module, tuple(input_shape), name, source)
    except TraceFailed as exc:
        ran = str(exc).startswith("running it")
        raise UsageError(f"cannot trace {source} with torch.fx: {exc}", None,
                         "is the input shape right? one image's, as 3x224x224 (--input)" if ran
                         else "archdsl import follows forward() symbolically; branches on "
                         "tensor values or Python data cannot be followed") from None
    header = [f"# {name}: imported from {source} by `archdsl import`"]
    notes = []
    if net.unmapped:
        if not partial or not net.cut:
            raise ImportFailed(source, net.unmapped)
        header += partial_comment(net, net.unmapped[0].where)
        net = truncate(net, net.cut)
    else:
        notes = _unused(module, net)
        header += [f"# {note}" for note in notes]
    try:
        rec = recover(net, header)
    except StructureError as exc:
        node = net.node(exc.node)
        where = node.name or ".".join(node.scope) or f"node {node.id}"
        raise ImportFailed(source, [Unmapped(where, node.op, "", str(exc),
                                             "archdsl's nesting writes series-parallel "
                                             "graphs: residual, concat and gate")]) from None
    except RecoverFailed as exc:
        raise UsageError(f"cannot import {source}: {exc}", None,
                         "this is a bug in archdsl import: please report it with the model")\
            from None
    return Imported(name, source, rec.text, list(net.unmapped), notes, rec.blocks,
                    tuple(input_shape), _used_params(module, net), module)


def _library_notrace(module: nn.Module) -> tuple[tuple[type, ...], tuple[Any, ...]]:
    """What the model's library says torch.fx cannot trace into (timm registers its modules
    and functions with data-dependent Python): traced whole, they are reported where archdsl
    has no op for them instead of stopping the trace. Modules archdsl traces into itself (a
    batch norm with its activation) stay out."""
    if not type(module).__module__.startswith("timm."):
        return (), ()
    try:
        from timm.layers import _fx
    except ImportError:
        return (), ()
    leaves = tuple(m for m in _fx.get_notrace_modules()
                   if not issubclass(m, nn.modules.batchnorm._BatchNorm))
    return leaves, tuple(_fx.get_notrace_functions())


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower() or "imported"


def _held(key: str, held: set[str]) -> bool:
    """Is this state_dict key a tensor of an imported layer (`attn.out_proj.weight` is
    one of `attn`'s)?"""
    parts = key.split(".")
    return any(".".join(parts[:k]) in held for k in range(1, len(parts) + 1))


def _used_params(module: nn.Module, net: FlatNet) -> int:
    held = {n.name for n in net.nodes if n.keep_name}
    return sum(p.numel() for key, p in module.named_parameters() if _held(key, held))


def _unused(module: nn.Module, net: FlatNet) -> list[str]:
    """Parameters the forward pass never reads (an auxiliary classifier, used in training
    only): they have no place in the spec."""
    held = {n.name for n in net.nodes if n.keep_name}
    missing: dict[str, int] = {}
    for key, tensor in module.state_dict().items():
        if not _held(key, held):
            top = key.split(".")[0]
            missing[top] = missing.get(top, 0) + tensor.numel()
    if not missing:
        return []
    parts = ", ".join(f"{k} ({v:,} values)" for k, v in missing.items())
    return [f"not used by the forward pass at inference, so not imported: {parts}"]


def flat_net(module: nn.Module, input_shape: tuple[int, ...], name: str = "imported",
             source: str = "") -> FlatNet:
    """The module as a flat graph of archdsl ops, with what could not be mapped."""
    import torch
    meta = on_meta(module)
    was_training = meta.training
    meta.eval()
    try:
        try:
            gm = trace(meta, tuple(M.MODULES), named=frozenset(M.NAMED_MODULES))
        except TraceFailed:
            leaves, functions = _library_notrace(meta)
            if not leaves and not functions:
                raise
            gm = trace(meta, tuple(M.MODULES), leaves, functions, frozenset(M.NAMED_MODULES))
        values = record(gm, torch.empty(2, *input_shape, device="meta"))
    finally:
        meta.train(was_training)
    original: Any = module if module is not meta else None
    net = build(gm, values, tuple(input_shape), name, original)
    net.classes = {path: type(m).__name__ for path, m in meta.named_modules() if path}
    net.source = source
    return net

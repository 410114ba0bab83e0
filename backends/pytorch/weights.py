"""Weights interop for built modules: load with a readable diff, transfer, freeze."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from archdsl.errors import ArchError


@dataclass
class StateDictDiff:
    """How a state_dict differs from a model's: what `load_state_dict` would complain about."""

    missing: list[str] = field(default_factory=list)  # in the model, not in the state_dict
    unexpected: list[str] = field(default_factory=list)  # in the state_dict, not in the model
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, model, given)
    # floating-point tensors given as bool, integer or complex ones: (key, dtype given)
    mistyped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.mistyped)

    def render(self, limit: int = 20) -> str:
        lines: list[str] = []
        for title, keys in (("missing from the state_dict", self.missing),
                            ("not in the model", self.unexpected)):
            if keys:
                lines.append(f"{len(keys)} key(s) {title}:")
                lines += [f"  {k}" for k in keys[:limit]]
                if len(keys) > limit:
                    lines.append(f"  ... and {len(keys) - limit} more")
        if self.mismatched:
            lines.append(f"{len(self.mismatched)} tensor(s) with another shape (model vs given):")
            lines += [f"  {k}: {list(a)} vs {list(b)}" for k, a, b in self.mismatched[:limit]]
            if len(self.mismatched) > limit:
                lines.append(f"  ... and {len(self.mismatched) - limit} more")
        if self.mistyped:
            lines.append(f"{len(self.mistyped)} tensor(s) that are not floating point:")
            lines += [f"  {k}: {t}" for k, t in self.mistyped[:limit]]
            if len(self.mistyped) > limit:
                lines.append(f"  ... and {len(self.mistyped) - limit} more")
        return "\n".join(lines) if lines else "state_dicts match"

    def __str__(self) -> str:
        return self.render()


class WeightsMismatch(ArchError):
    """A state_dict that does not fit the model built from a spec."""

    def __init__(self, diff: StateDictDiff) -> None:
        super().__init__("the weights do not fit this architecture:\n" + diff.render(), None,
                         "names come from the spec's labels (docs/language.md, 'names'); "
                         "load with strict=False to take what fits")
        self.diff = diff


def diff_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> StateDictDiff:
    own = model.state_dict()
    diff = StateDictDiff()
    diff.missing = [k for k in own if k not in state_dict]
    diff.unexpected = [k for k in state_dict if k not in own]
    diff.mismatched = [(k, tuple(own[k].shape), tuple(state_dict[k].shape))
                       for k in own if k in state_dict
                       and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    # load_state_dict would cast them silently (True → 1.0, a complex number's real part)
    diff.mistyped = [(k, str(state_dict[k].dtype).removeprefix("torch."))
                     for k in own if k in state_dict and own[k].is_floating_point()
                     and not state_dict[k].is_floating_point()]
    return diff


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                 strict: bool = True) -> StateDictDiff:
    """Load weights; strict raises WeightsMismatch with a per-tensor diff instead of
    PyTorch's raw error. Non-strict loads every tensor whose name and shape fit (transfer
    learning: a new head keeps its fresh initialisation) and returns what it skipped."""
    diff = diff_state_dict(model, state_dict)
    if strict and not diff.ok:
        raise WeightsMismatch(diff)
    skip = {k for k, _, _ in diff.mismatched} | {k for k, _ in diff.mistyped}
    fitting = {k: v for k, v in state_dict.items() if k not in skip and k not in diff.unexpected}
    model.load_state_dict(fitting, strict=False)
    return diff


def head_names(model: nn.Module) -> list[str]:
    """The classifier: the last module that holds parameters (its qualified name)."""
    names = [name for name, m in model.named_modules()
             if any(True for _ in m.parameters(recurse=False))]
    if not names:
        raise ValueError("the model has no parameters")
    return [names[-1]]


def freeze(model: nn.Module, train: Iterable[str] | None = None,
           last_stages: int = 0) -> list[str]:
    """Freeze every parameter except the head (or the modules named in `train`) and the last
    `last_stages` top-level stages that hold parameters. Returns the trainable parameter names.

    Only parameters are frozen: BatchNorm running statistics still update in train mode
    (call `.eval()` on those modules to keep them fixed too).
    """
    keep = list(train) if train is not None else head_names(model)
    if last_stages:
        heads = {k.split(".")[0] for k in keep}
        body = [n for n, m in model.named_children()
                if n not in heads and any(True for _ in m.parameters())]
        keep += body[-last_stages:]
    trainable = []
    for name, p in model.named_parameters():
        on = any(name == k or name.startswith(k + ".") for k in keep)
        p.requires_grad_(on)
        if on:
            trainable.append(name)
    return trainable


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """A state_dict from a `.safetensors` file (a training checkpoint gives its model's) or
    a `torch.save` file (loaded with weights_only=True, so no pickled code runs)."""
    from pathlib import Path

    from archdsl.inputs import check_regular
    p = Path(path)
    try:
        check_regular(p)  # torch.load would read a FIFO or /dev/zero until memory ran out
    except FileNotFoundError:
        raise ArchError(f"no such weights file: {p}", None) from None
    except OSError as exc:
        raise ArchError(f"cannot read weights from {p}: {exc.strerror or exc}", None) from None
    if p.suffix == ".safetensors":  # archdsl's weights and checkpoints, or anyone's
        from .checkpoint import model_state, read
        kind, _, tensors = read(p)
        return model_state(kind, tensors)
    try:
        data = torch.load(str(p), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArchError(f"no such weights file: {p}", None) from None
    except OSError as exc:
        raise ArchError(f"cannot read weights from {p}: {exc.strerror or exc}", None) from None
    except Exception as exc:  # corrupt or foreign files raise many types
        raise ArchError(f"cannot read weights from {p}: {type(exc).__name__}: {exc}", None,
                        "expected a state_dict saved with torch.save, or .safetensors") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ArchError(f"{p} does not hold a state_dict (a dict of tensors)", None)
    return data

"""Checkpoints and trained weights as safetensors, never pickles.

A checkpoint holds everything a run needs to continue exactly: tensors (the model's state,
the optimizer's per-parameter state, the random generators' states) in safetensors, and the
scalars (epoch and step, the optimizer's hyper-parameters, the scheduler, the loss scaler,
the run's settings and history) as JSON in the safetensors header's metadata. The trained
weights file is the model's state_dict under its plain keys (readable by `archdsl export`,
`compile` and `eval`, torch or numpy alike) with the facts needed to use it — classes,
pixel statistics, the graph's hash — in its metadata. Both are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from archdsl.atomic import atomic_path
from archdsl.errors import ArchError

CHECKPOINT = "archdsl-checkpoint"
WEIGHTS = "archdsl-weights"
VERSION = 1


class CheckpointError(ArchError):
    """A checkpoint or weights file that cannot be used for what was asked."""


def graph_hash(graph) -> str:
    """sha256 of the canonical spec text: the same network, however it was written."""
    from archdsl.formatter import format_graph
    return hashlib.sha256(format_graph(graph).encode()).hexdigest()


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def _write(path: Path, tensors: dict[str, torch.Tensor], kind: str, meta: dict) -> None:
    from safetensors.torch import save_file
    header = {"format": kind, "version": str(VERSION), "archdsl": json.dumps(meta)}
    with atomic_path(path) as tmp:
        save_file({k: _cpu(v) for k, v in tensors.items()}, str(tmp), metadata=header)


def save_weights(path: Path, model: torch.nn.Module, meta: dict) -> None:
    _write(path, model.state_dict(), WEIGHTS, meta)


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, scaler,
                    rng: dict[str, torch.Tensor], meta: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, state in opt["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    tensors.update({f"rng.{name}": t for name, t in rng.items()})
    meta = {**meta, "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None}
    _write(path, tensors, CHECKPOINT, meta)


def read_meta(path: Path) -> tuple[str, dict]:
    """(kind, metadata) without reading the tensors."""
    kind, meta, _ = read(path, tensors=False)
    return kind, meta


def read(path: Path, tensors: bool = True) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(kind, metadata, tensors) of a safetensors file; kind is "" for plain weights."""
    from safetensors import safe_open
    if not Path(path).is_file():
        raise CheckpointError(f"no such file: {path}", None)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            data = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as exc:  # safetensors raises several types for broken files
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}", None,
                              "expected a .safetensors file written by archdsl train") from None
    kind = header.get("format", "")
    if kind not in (CHECKPOINT, WEIGHTS):
        return "", {}, data
    try:
        meta = json.loads(header.get("archdsl", "{}"))
        version = int(header.get("version", "0"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({exc})", None) from None
    if version > VERSION or not isinstance(meta, dict):
        raise CheckpointError(f"{path} was written by a newer archdsl (format {version})", None)
    return kind, meta, data


def model_state(kind: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state_dict in a weights file or a checkpoint."""
    if kind != CHECKPOINT:
        return tensors
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def restore(path: Path, model, optimizer, scheduler, scaler) -> tuple[dict, dict]:
    """Load a checkpoint into the run's objects; returns (metadata, rng states)."""
    kind, meta, tensors = read(path)
    if kind != CHECKPOINT:
        raise CheckpointError(f"{path} is not a training checkpoint", None,
                              "--resume continues from the checkpoint.safetensors of a run")
    from .weights import load_weights
    load_weights(model, model_state(kind, tensors), strict=True)
    try:
        _load_optimizer(optimizer, meta["optimizer"], tensors)
        for obj, key in ((scheduler, "scheduler"), (scaler, "scaler")):
            if obj is not None and meta.get(key) is not None:
                # a scheduler's load_state_dict updates its __dict__ with what it is given:
                # only the fields it has, each of the kind it has
                _check_fits(obj.state_dict(), meta[key], key)
                obj.load_state_dict(meta[key])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: its optimizer or scheduler state does not fit this run "
                              f"({type(exc).__name__}: {exc})", None) from None
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return meta, rng


def _kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (tuple, list)):  # JSON has no tuples (AdamW's betas)
        return "list"
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _check_fits(own: dict, saved: Any, what: str) -> None:
    """`saved` (JSON from a checkpoint) has only keys `own` has, each value of the same kind."""
    if not isinstance(saved, dict):
        raise TypeError(f"the {what} state is a {type(saved).__name__}, not a dict")
    for key, value in saved.items():
        if key not in own or _kind(value) != _kind(own[key]):
            raise TypeError(f"the {what} state's `{str(key)[:40]}` is not one this run has")


def _load_optimizer(optimizer, opt: dict, tensors: dict[str, torch.Tensor]) -> None:
    """The optimizer's state_dict from its tensors (`optimizer.PARAM.NAME`) and scalars."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in opt["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    own = optimizer.state_dict()["param_groups"]
    if not isinstance(opt["param_groups"], list) or len(opt["param_groups"]) != len(own):
        raise ValueError("the optimizer's parameter groups are not this run's")
    for mine, saved in zip(own, opt["param_groups"], strict=True):
        _check_fits(mine, saved, "optimizer")
    optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})

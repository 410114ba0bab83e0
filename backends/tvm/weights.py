"""The weights a lowered graph takes: their keys and shapes (the ops' tensor declarations, keyed
like the PyTorch backend's state_dict), a check that given weights fit, and a deterministic random
set for benchmarks and tests. numpy only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from archdsl.backends.tvm.runtime import _to_numpy
from archdsl.ir import Graph, Node

__all__ = ["WeightsError", "random_weights", "weight_shapes"]


class WeightsError(ValueError):
    """Weights that do not fit the graph: missing, unexpected or wrongly shaped keys."""


# ---------------------------------------------------------------- weights

def _weighted_nodes(graph: Graph):
    """(node, {suffix: shape}) for every node that holds tensors (the op's declaration)."""
    for node in graph.nodes:
        ins = [graph.node(i).shape for i in graph.inputs(node.id)]
        tensors = node.opdef.tensors(node.attrs, ins, node.shape)
        if tensors:
            yield node, tensors


def _key(node: Node, suffix: str) -> str:
    return f"{node.name}.{suffix}" if suffix else node.name


def weight_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Every parameter/buffer the graph needs, with its shape, keyed like the PyTorch backend's
    `state_dict` (less `num_batches_tracked`, which inference does not use)."""
    return {_key(node, suffix): shape for node, params in _weighted_nodes(graph)
            for suffix, shape in params.items()}


# random_weights' ranges for the tensors of normalizations and embeddings; matrices and
# biases are uniform in ±1/sqrt(fan_in)
_NEAR_ONE, _SMALL = (0.5, 1.5), (-0.1, 0.1)
_RANGES = {
    "bn": {"weight": _NEAR_ONE, "bias": _SMALL, "running_mean": _SMALL, "running_var": _NEAR_ONE},
    "layernorm": {"weight": _NEAR_ONE, "bias": _SMALL},
    "layerscale": {"": _NEAR_ONE},
    "class_token": {"": _SMALL},
    "pos_embedding": {"": _SMALL},
    # a bias of the scores big enough to matter; Swin v2's logit scale starts at log(10)
    "window_attention": {"relative_position_bias_table": (-0.5, 0.5), "logit_scale": (1.0, 3.0)},
    "patch_merging": {"norm.weight": _NEAR_ONE, "norm.bias": _SMALL},
    "prelu": {"weight": (0.0, 0.5)},
}


def _fan_in_bound(params: dict[str, tuple[int, ...]], suffix: str) -> float | None:
    """1/sqrt(fan_in) of the matrix a tensor belongs to: itself, the `weight` beside a `bias`,
    else the op's first matrix; None for an op with no matrix (a user-defined op's vectors)."""
    shape = params[suffix]
    if len(shape) < 2:
        sibling = suffix[:-len("bias")] + "weight" if suffix.endswith("bias") else ""
        shape = params.get(sibling) or next((s for s in params.values() if len(s) >= 2), None)
    return None if shape is None else 1.0 / math.sqrt(math.prod(shape[1:]))


def _derived(graph: Graph) -> dict[str, np.ndarray]:
    """The tensors computed from attributes rather than learned (Swin's relative-position index
    and coordinates), keyed like the weights."""
    out: dict[str, np.ndarray] = {}
    for node, params in _weighted_nodes(graph):
        ins = [graph.node(i).shape for i in graph.inputs(node.id)]
        for suffix, values in node.opdef.derived(node.attrs, ins, node.shape).items():
            dtype = np.int64 if values and isinstance(values[0], int) else np.float32
            out[_key(node, suffix)] = np.asarray(values, dtype).reshape(params[suffix])
    return out


def random_weights(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic set of weights (numpy float32, seeded) for benchmarking and tests.

    Matrices and biases are uniform in ±1/sqrt(fan_in) (PyTorch's default range); norms get
    scales near 1, small shifts and means and variances near 1, so that activations keep a
    sensible range through deep networks; embeddings are small. Tensors computed from the
    attributes (`derived`) get their values."""
    rng = np.random.default_rng(seed)
    derived = _derived(graph)
    out: dict[str, np.ndarray] = {}
    for node, params in _weighted_nodes(graph):
        ranges = _RANGES.get(node.op, {})
        for suffix, shape in params.items():
            key = _key(node, suffix)
            if key in derived:
                out[key] = derived[key]
                continue
            bound = _fan_in_bound(params, suffix) if suffix not in ranges else 0.0
            low, high = ranges.get(suffix, (-bound, bound) if bound is not None else _NEAR_ONE)
            values = rng.random(shape, dtype=np.float32)  # float32 throughout: no float64 copy
            values *= high - low
            values += low
            out[key] = values
    return out


def _check_weights(graph: Graph, weights: Mapping[str, Any], strict: bool) -> dict[str, np.ndarray]:
    need = weight_shapes(graph)
    got = {k: _to_numpy(v) for k, v in weights.items() if not k.endswith(".num_batches_tracked")}
    missing = sorted(set(need) - set(got))
    unexpected = sorted(set(got) - set(need)) if strict else []
    wrong = sorted(f"{k}: expected {need[k]}, got {tuple(got[k].shape)}"
                   for k in set(need) & set(got) if tuple(got[k].shape) != need[k])
    # an index addresses a table: one that is not what the attributes make (another window
    # size, a hostile file) is refused, and the lowering uses its own
    derived = _derived(graph)
    foreign = sorted(k for k, v in derived.items() if k in got and not wrong
                     and not np.allclose(got[k].astype(v.dtype), v, atol=1e-6))
    # a bool or integer tensor where a weight belongs is a mistake, not something to cast
    # (indices, computed from the attributes, are integers)
    kind = sorted(f"{k} ({got[k].dtype})" for k in set(need) & set(got)
                  if k not in derived and got[k].dtype.kind != "f")
    if missing or unexpected or wrong or foreign or kind:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", wrong), ("not computed from the window", foreign),
                             ("not floating point", kind)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)"
                                                if len(items) > 8 else "")
                parts.append(f"{title}: {shown}")
        raise WeightsError(f"weights do not fit `{graph.name}`: " + "; ".join(parts))
    return {k: got[k] for k in need}

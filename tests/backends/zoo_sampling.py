"""Which networks of the zoo the backend tests build (importable by the tests beside it).

A backend test builds every network of the zoo once, less those an earlier network of the
same file stands for: one whose kinds of layer all appear in that earlier one (ShuffleNet V2
x0.5 ... x2.0 at other widths, MobileNetV3-Small beside Large, RegNetX beside RegNetY, the
deeper ResNets): a backend lowers each kind the same way whatever the widths and depth, and
ARCHDSL_FULL_ZOO=1 builds them all the same."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import archdsl
from archdsl.api import unique_archs
from archdsl.ir import Graph

FULL = os.environ.get("ARCHDSL_FULL_ZOO") == "1"
# attributes that are widths: a channel count, where a slice of the channels starts and ends
WIDTHS = ("out", "start", "end")


def layer_kinds(graph: Graph) -> frozenset:
    """What a backend lowers, without widths: each op with its attributes but the widths, a
    convolution's groups as plain, grouped or depthwise."""
    kinds = set()
    for node in graph.nodes:
        attrs = {k: v for k, v in node.attrs.items() if k not in WIDTHS and k != "shape"}
        if "groups" in attrs and node.op == "conv":
            cin = graph.node(graph.inputs(node.id)[0]).shape[0]
            attrs["groups"] = "depthwise" if attrs["groups"] == cin else attrs["groups"] > 1
        kinds.add((node.op, tuple(sorted((k, repr(v)) for k, v in attrs.items()))))
    return frozenset(kinds)


def sampled_zoo(specs: list[Path], skip_reason: Callable | None = None) -> list:
    """(spec, arch) params for the zoo; `skip_reason(arch, first_of_file)` may skip more."""
    params, kinds_by_file = [], {}
    for spec, name in unique_archs(specs, distinct=True):
        arch = archdsl.load(spec, arch=name)
        earlier = kinds_by_file.setdefault(spec, [])
        kinds = layer_kinds(arch.graph)
        reason = skip_reason(arch, not earlier) if skip_reason else None
        if reason is None and any(kinds <= other for other in earlier):
            reason = "an earlier network of its file has every kind of layer it has"
        earlier.append(kinds)
        marks = [] if FULL or reason is None else [
            pytest.mark.skip(reason=f"{reason}; set ARCHDSL_FULL_ZOO=1 to run it")]
        params.append(pytest.param(spec, name, id=f"{spec.stem}:{name}", marks=marks))
    return params

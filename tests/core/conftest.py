"""Shared by the zoo tests: what a spec's names say its state_dict is, and torchvision."""

from __future__ import annotations

import math

import pytest


def expected_state_dict(a) -> dict[str, tuple[int, ...]]:
    """The state_dict keys and shapes that our node names and attributes stand for, derived
    without torch (so the names can be checked against torchvision's independently)."""
    out: dict[str, tuple[int, ...]] = {}
    for n in a.graph.nodes:
        ins = [a.graph.node(i).shape for i in a.graph.inputs(n.id)]
        if n.op == "conv":
            cin = ins[0][0]
            out[f"{n.name}.weight"] = (n.attrs["out"], cin // n.attrs["groups"], n.attrs["k"],
                                       n.attrs["k"])
            if n.attrs["bias"]:
                out[f"{n.name}.bias"] = (n.attrs["out"],)
        elif n.op == "fc":
            out[f"{n.name}.weight"] = (n.attrs["out"], math.prod(ins[0]))
            if n.attrs["bias"]:
                out[f"{n.name}.bias"] = (n.attrs["out"],)
        elif n.op == "bn":
            c = ins[0][0]
            for key in ("weight", "bias", "running_mean", "running_var"):
                out[f"{n.name}.{key}"] = (c,)
            out[f"{n.name}.num_batches_tracked"] = ()
    return out


@pytest.fixture(scope="module")
def tv():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    return torch, torchvision


def assert_same_state_dict_as_torchvision(spec, name: str, params: int) -> None:
    """Our module's state_dict equals torchvision's `name` key for key, in order, shape for
    shape (both built on the meta device), and torchvision has `params` parameters."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    import archdsl
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)()
        ours = archdsl.load(spec, arch=name).to_torch()
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(mine) == list(theirs) and mine == theirs
    assert sum(p.numel() for p in reference.parameters()) == params

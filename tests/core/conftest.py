"""Shared by the zoo tests: what a spec's names say its state_dict is, and torchvision."""

from __future__ import annotations

import pytest


def expected_state_dict(a) -> dict[str, tuple[int, ...]]:
    """The state_dict keys and shapes that our node names and the ops' tensor declarations
    stand for, derived without torch (so they can be checked against torchvision's
    independently); PyTorch's BatchNorm adds its `num_batches_tracked` counter."""
    out: dict[str, tuple[int, ...]] = {}
    for n in a.graph.nodes:
        ins = [a.graph.node(i).shape for i in a.graph.inputs(n.id)]
        for suffix, shape in n.opdef.tensors(n.attrs, ins, n.shape).items():
            out[f"{n.name}.{suffix}" if suffix else n.name] = shape
        if n.op == "bn":
            out[f"{n.name}.num_batches_tracked"] = ()
    return out


@pytest.fixture(scope="module")
def tv():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    return torch, torchvision


def assert_same_state_dict_as_torchvision(spec, name: str, params: int, arch: str | None = None,
                                          settings: dict | None = None, **kwargs) -> None:
    """Our module's state_dict equals torchvision's `name` (built with `kwargs`) key for key,
    in order, shape for shape (both built on the meta device), and torchvision has `params`
    parameters. `arch` (default `name`) and its `settings` select ours."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    import archdsl
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)(**kwargs)
        ours = archdsl.load(spec, arch=arch or name, **(settings or {})).to_torch()
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(mine) == list(theirs) and mine == theirs
    assert sum(p.numel() for p in reference.parameters()) == params

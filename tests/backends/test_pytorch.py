"""The PyTorch backend against analysis (the contract) and against torchvision (the oracle)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import archdsl  # noqa: E402
from archdsl.backends import pytorch as backend  # noqa: E402
from archdsl.ops import OPS  # noqa: E402

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.arch"))


def _archs():
    for spec in SPECS:
        for name in archdsl.load_spec(spec).own:
            yield pytest.param(spec, name, id=f"{spec.stem}:{name}")


def test_every_op_is_lowered_or_marked_unsupported():
    covered = set(backend.MODULES) | set(backend.FUNCTIONS) | set(backend.UNSUPPORTED)
    ops = {name for name, op in OPS.items() if op.lowers_to is None and name != "input"}
    assert ops <= covered, f"ops without a PyTorch lowering: {sorted(ops - covered)}"
    assert all(reason for reason in backend.UNSUPPORTED.values())


@pytest.mark.parametrize("spec,name", list(_archs()))
def test_module_matches_analysis(spec, name):
    arch = archdsl.load(spec, arch=name)
    model = arch.to_torch().eval()
    assert sum(p.numel() for p in model.parameters()) == arch.stats().totals["params"]
    with torch.device("cpu"), torch.no_grad():
        for batch in (1, 2):
            x = torch.randn(batch, *arch.graph.input_shape)
            y = model(x)
            assert tuple(y.shape) == (batch, *arch.graph.output_shape)


# (spec, arch, torchvision constructor, does the spec end with the paper's softmax?)
TORCHVISION_TWINS = [
    ("resnet.arch", "resnet18", "resnet18", False),
    ("resnet.arch", "resnet50", "resnet50", False),
    ("alexnet.arch", "alexnet_1gpu", "alexnet", False),
    ("vgg_a.arch", "vgg_a", "vgg11", True),
    ("vgg_a.arch", "vgg11_bn", "vgg11_bn", True),
]


@pytest.mark.parametrize("spec,name,tv_name,softmax", TORCHVISION_TWINS,
                         ids=[t[1] for t in TORCHVISION_TWINS])
def test_loads_torchvision_weights_and_agrees(spec, name, tv_name, softmax):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = getattr(torchvision.models, tv_name)().eval()
    ours = archdsl.load(SPECS[0].parent / spec, arch=name).to_torch().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference(x)
        if softmax:
            expected = torch.softmax(expected, dim=1)
        got = ours(x)
    assert (got - expected).abs().max().item() < 1e-5

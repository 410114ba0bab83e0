"""RegNetX and RegNetY (specs/regnet.arch): the paper's width rule written in the language
(log, round, comprehensions over range/enumerate/zip), torchvision's `block1-0` names, and all
fifteen of torchvision's models equal to it: parameters, published GFLOPS, state_dict."""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path

import pytest

import archdsl

SPEC = Path(__file__).resolve().parents[2] / "specs" / "regnet.arch"

# torchvision *_Weights (IMAGENET1K_V1; regnet_y_128gf's only weights are IMAGENET1K_SWAG_E2E_V1,
# whose operations are counted at its 384x384 crop): num_params, _ops (GFLOPS = GMACs), crop
REFERENCE = {
    "regnet_y_400mf": (4_344_144, 0.402, 224),
    "regnet_y_800mf": (6_432_512, 0.834, 224),
    "regnet_y_1_6gf": (11_202_430, 1.612, 224),
    "regnet_y_3_2gf": (19_436_338, 3.176, 224),
    "regnet_y_8gf": (39_381_472, 8.473, 224),
    "regnet_y_16gf": (83_590_140, 15.912, 224),
    "regnet_y_32gf": (145_046_770, 32.28, 224),
    "regnet_y_128gf": (644_812_894, 374.57, 384),
    "regnet_x_400mf": (5_495_976, 0.414, 224),
    "regnet_x_800mf": (7_259_656, 0.8, 224),
    "regnet_x_1_6gf": (9_190_136, 1.603, 224),
    "regnet_x_3_2gf": (15_296_552, 3.177, 224),
    "regnet_x_8gf": (39_572_648, 7.995, 224),
    "regnet_x_16gf": (54_278_536, 15.941, 224),
    "regnet_x_32gf": (107_811_560, 31.736, 224),
}
NAMES = sorted(REFERENCE)


@pytest.mark.parametrize("name", NAMES)
def test_params_and_gflops_equal_torchvisions(name):
    params, gflops, crop = REFERENCE[name]
    totals = archdsl.load(SPEC, arch=name, resolution=crop).stats().totals
    assert totals["params"] == params
    assert round(totals["macs"] / 1e9, 3) == gflops


def test_the_width_rule_gives_torchvisions_stages():
    # torchvision's BlockParams for regnet_y_400mf: depths [1, 3, 6, 6], widths
    # [48, 104, 208, 440], group widths 8; regnet_x_400mf: [1, 2, 7, 12], [32, 64, 160, 400]
    for name, depths, widths in (("regnet_y_400mf", [1, 3, 6, 6], [48, 104, 208, 440]),
                                 ("regnet_x_400mf", [1, 2, 7, 12], [32, 64, 160, 400])):
        graph = archdsl.load(SPEC, arch=name).graph
        blocks: dict[int, set[str]] = {}
        out: dict[int, int] = {}
        for n in graph.nodes:
            m = re.match(r"trunk_output\.block(\d)\.(block\d-\d+)\.", n.name)
            if m:
                blocks.setdefault(int(m[1]), set()).add(m[2])
                out[int(m[1])] = n.shape[0]
        assert [len(blocks[k]) for k in sorted(blocks)] == depths
        assert [out[k] for k in sorted(out)] == widths


def _torchvision(name: str):
    """torchvision's model on the meta device: its widths are computed on the CPU first (the
    builder's BlockParams needs real tensors)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from torchvision.models import regnet
    source = inspect.getsource(getattr(regnet, name))
    args = re.search(r"from_init_params\((.*?)\)", source, re.S)[1].replace("**kwargs", "")
    kwargs = dict(re.findall(r"(\w+)=([\d.]+)", args))
    params = regnet.BlockParams.from_init_params(**{k: float(v) if "." in v else int(v)
                                                    for k, v in kwargs.items()})
    norm = functools.partial(torch.nn.BatchNorm2d, eps=1e-05, momentum=0.1)
    with torch.device("meta"):
        return regnet.RegNet(params, norm_layer=norm)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_equals_torchvisions(name):
    torch = pytest.importorskip("torch")
    reference = _torchvision(name)
    with torch.device("meta"):
        ours = archdsl.load(SPEC, arch=name).to_torch()
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(mine) == list(theirs) and mine == theirs
    assert any(".block1-0.f.b.0." in k for k in mine)

"""DenseNet-121/169/201/161 (specs/densenet.arch) against torchvision."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_same_state_dict_as_torchvision

import archdsl

SPEC = Path(__file__).resolve().parents[2] / "specs" / "densenet.arch"

# torchvision.models.densenet*: num_params and _ops (GFLOPS = MACs) of IMAGENET1K_V1
REFERENCE = {
    "densenet121": (7_978_856, 2.834),
    "densenet169": (14_149_480, 3.36),
    "densenet201": (20_013_928, 4.291),
    "densenet161": (28_681_000, 7.728),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_counts_equal_torchvision_published(name):
    totals = archdsl.load(SPEC, arch=name).stats().totals
    params, gmacs = REFERENCE[name]
    assert totals["params"] == params
    assert round(totals["macs"] / 1e9, 3) == pytest.approx(gmacs, abs=5e-4)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_state_dict_keys_and_shapes_equal_torchvision(name):
    assert_same_state_dict_as_torchvision(SPEC, name, REFERENCE[name][0])


def test_dense_layers_are_named_per_repetition():
    graph = archdsl.load(SPEC, arch="densenet121").graph
    names = {n.name for n in graph.nodes}
    assert "features.denseblock1.denselayer6.conv2" in names
    assert "features.denseblock1.denselayer7.conv2" not in names
    assert "features.denseblock4.denselayer16.norm1" in names
    # channels grow by k = 32 per layer: 64 + 6·32 = 256 after the first block
    shapes = {n.name: n.shape for n in graph.nodes}
    assert shapes["features.transition1.conv"] == (128, 56, 56)


def test_unknown_depth_is_the_specs_own_error():
    with pytest.raises(archdsl.ArchErrors, match="DenseNet depth must be 121, 169, 201 or 161"):
        archdsl.load(SPEC, arch="densenet", depth=100)

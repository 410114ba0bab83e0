"""SqueezeNet 1.0/1.1, MNASNet 0.5 ... 1.3 and EfficientNetV2-S/M/L: against torchvision's
published numbers (hard-coded, so the main assertions need no torch), its live models
(state_dict key for key, on the meta device) and the papers. Logits: tests/backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_same_state_dict_as_torchvision

import archdsl

SPECS = Path(__file__).resolve().parents[2] / "specs"

# torchvision *_Weights.IMAGENET1K_V1.meta: num_params and _ops (GFLOPS = GMACs, at the
# weights' evaluation crop, which is each spec's default resolution); our spec
REFERENCE = {
    "squeezenet1_0": (1_248_424, 0.819, "squeezenet.arch"),
    "squeezenet1_1": (1_235_496, 0.349, "squeezenet.arch"),
    "mnasnet0_5": (2_218_512, 0.104, "mnasnet.arch"),
    "mnasnet0_75": (3_170_208, 0.215, "mnasnet.arch"),
    "mnasnet1_0": (4_383_312, 0.314, "mnasnet.arch"),
    "mnasnet1_3": (6_282_256, 0.526, "mnasnet.arch"),
    "efficientnet_v2_s": (21_458_488, 8.366, "efficientnet_v2.arch"),
    "efficientnet_v2_m": (54_139_356, 24.582, "efficientnet_v2.arch"),
    "efficientnet_v2_l": (118_515_272, 56.08, "efficientnet_v2.arch"),
}
NAMES = sorted(REFERENCE)


def load(name: str, **settings) -> archdsl.Architecture:
    return archdsl.load(SPECS / REFERENCE[name][2], arch=name, **settings)


@pytest.mark.parametrize("name", NAMES)
def test_published_params_and_gflops(name):
    params, gflops, _ = REFERENCE[name]
    t = load(name).stats().totals
    assert t["params"] == params
    assert round(t["macs"] / 1e9, 3) == gflops


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_equals_torchvision(name):
    params, _, spec = REFERENCE[name]
    assert_same_state_dict_as_torchvision(SPECS / spec, name, params)


def test_squeezenet_fire_modules_and_sizes():
    # Iandola et al. 2016, Figure 1 and Table 1: fire2 squeezes to 16 and expands to 64 + 64;
    # SqueezeNet 1.0 pools after conv1, fire4 and fire8 (13x13 at fire9), 4.8 MB of weights
    graph = load("squeezenet1_0").graph
    nodes = {n.name: n for n in graph.nodes}
    assert nodes["features.3.squeeze"].shape == (16, 54, 54)
    assert [n.shape for n in graph.nodes if n.op == "concat"][0] == (128, 54, 54)
    assert nodes["features.12.expand3x3"].shape == (256, 13, 13)
    assert [n.name for n in graph.nodes if n.op == "maxpool"] == \
        ["features.2", "features.6", "features.11"]
    assert round(load("squeezenet1_0").stats().totals["param_bytes"] / 2**20, 1) == 4.8
    # 1.1: 64 3x3 filters in conv1, pooling after conv1, fire3 and fire5
    small = [n for n in load("squeezenet1_1").graph.nodes if n.op == "maxpool"]
    assert [n.name for n in small] == ["features.2", "features.5", "features.8"]


def test_mnasnet_widths_and_residuals():
    # channels alpha-scaled and rounded to multiples of 8, the stem included
    graph = load("mnasnet0_5").graph
    nodes = {n.name: n for n in graph.nodes}
    assert nodes["layers.0"].shape[0] == 16 and nodes["layers.6"].shape[0] == 8
    assert nodes["layers.13.0.layers.6"].shape == (160, 7, 7)
    # the residual only where stride 1 and equal channels: the first block of a stack has none
    adds = {n.name.rsplit(".", 1)[0] for n in graph.nodes if n.op == "add"}
    assert "layers.8.1" in adds and "layers.8.0" not in adds and "layers.11.0" not in adds
    assert nodes["layers.1"].attrs["momentum"] == pytest.approx(3e-4)


def test_efficientnet_v2_fused_and_mbconv_stages():
    # Tan & Le 2021, Table 4: stages 1-3 Fused-MBConv, 4-6 MBConv with SE; 1280 at the end
    graph = load("efficientnet_v2_s").graph
    nodes = {n.name: n for n in graph.nodes}
    assert nodes["features.1.0.block.0.0"].attrs["k"] == 3  # Fused-MBConv1: one 3x3 conv
    assert "features.1.0.block.1.0" not in nodes
    assert nodes["features.2.0.block.0.0"].shape == (96, 96, 96)  # expand 4x, stride 2
    assert nodes["features.2.0.block.1.0"].attrs["k"] == 1  # the linear projection
    assert nodes["features.4.0.block.2.fc1"].shape == (16, 1, 1)  # SE: 64 // 4
    assert nodes["features.7.0"].shape == (1280, 12, 12)
    assert nodes["features.0.1"].attrs["eps"] == 0.001
    with pytest.raises(archdsl.ArchErrors, match="variant is s, m or l"):
        load("efficientnet_v2_s", variant="xl")

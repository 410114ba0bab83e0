"""EfficientNet-B0 ... B7 (specs/efficientnet.arch) against torchvision."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import assert_same_state_dict_as_torchvision

import archdsl

SPEC = Path(__file__).resolve().parents[2] / "specs" / "efficientnet.arch"

# torchvision.models.efficientnet_b*: num_params and _ops (GFLOPS = MACs) of IMAGENET1K_V1,
# the _ops at torchvision's evaluation crop (B2's is 288; the paper's and ours, 260)
REFERENCE = {
    "efficientnet_b0": (5_288_548, 0.386, 224),
    "efficientnet_b1": (7_794_184, 0.687, 240),
    "efficientnet_b2": (9_109_994, 1.088, 288),
    "efficientnet_b3": (12_233_232, 1.827, 300),
    "efficientnet_b4": (19_341_616, 4.394, 380),
    "efficientnet_b5": (30_389_784, 10.266, 456),
    "efficientnet_b6": (43_040_704, 19.068, 528),
    "efficientnet_b7": (66_347_960, 37.746, 600),
}
# the paper's resolution per model (the spec's default input)
RESOLUTION = {f"efficientnet_b{v}": r
              for v, r in enumerate((224, 240, 260, 300, 380, 456, 528, 600))}
NAMES = sorted(REFERENCE)


@pytest.mark.parametrize("name", NAMES)
def test_params_equal_torchvision_published(name):
    assert archdsl.load(SPEC, arch=name).stats().totals["params"] == REFERENCE[name][0]


@pytest.mark.parametrize("name", NAMES)
def test_input_resolution_per_variant(name):
    graph = archdsl.load(SPEC, arch=name).graph
    r = RESOLUTION[name]
    assert graph.input_shape == (3, r, r)
    assert graph.output_shape == (1000,)


@pytest.mark.parametrize("name", NAMES)
def test_macs_equal_torchvision_published_at_its_crop(name):
    params, gmacs, crop = REFERENCE[name]
    totals = archdsl.load(SPEC, arch=name, resolution=crop).stats().totals
    assert totals["params"] == params
    assert round(totals["macs"] / 1e9, 3) == pytest.approx(gmacs, abs=5e-4)


def test_b0_macs_and_variant_parameter():
    b0 = archdsl.load(SPEC, arch="efficientnet_b0").stats().totals
    assert round(b0["macs"] / 1e9, 3) == 0.386
    # the derived archs are the base arch with `variant` set
    assert archdsl.load(SPEC, arch="efficientnet", variant=4).stats().totals == \
        archdsl.load(SPEC, arch="efficientnet_b4").stats().totals


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_and_shapes_equal_torchvision(name):
    assert_same_state_dict_as_torchvision(SPEC, name, REFERENCE[name][0])


@pytest.mark.parametrize("name", NAMES)
def test_dropout_and_stochastic_depth(name):
    """Classifier dropout per variant; stochastic depth on every residual branch with
    torchvision's rate for each block (0.2 · b / blocks, b counted over the network)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)()
        ours = archdsl.load(SPEC, arch=name).to_torch()
    assert ours.get_submodule("classifier.0").p == reference.classifier[0].p
    ref_sd = {k: m for k, m in reference.named_modules() if k.endswith("stochastic_depth")}
    our_sd = {k: m for k, m in ours.named_modules() if k.endswith("stochastic_depth")}
    # ours only where the residual is used (torchvision keeps an unused one in every block)
    used = {k for k in ref_sd if reference.get_submodule(k[: -len(".stochastic_depth")])
            .use_res_connect}
    assert set(our_sd) == used
    for key, module in our_sd.items():
        assert module.p == pytest.approx(ref_sd[key].p), key
    assert math.isclose(max(m.p for m in ref_sd.values()),
                        0.2 * (len(ref_sd) - 1) / len(ref_sd))


def test_mbconv_structure_b0():
    graph = archdsl.load(SPEC, arch="efficientnet_b0").graph
    shapes = {n.name: n.shape for n in graph.nodes}
    # t = 1: no expansion, block.0 is the depthwise conv
    assert shapes["features.1.0.block.0.0"] == (32, 112, 112)
    assert "features.1.0.block.3.0" not in shapes
    # SE squeezes to in_channels // 4 (16 // 4 = 4 on the 96-channel expansion)
    assert shapes["features.2.0.block.2.fc1"] == (4, 1, 1)
    assert shapes["features.8.0"] == (1280, 7, 7)


@pytest.mark.parametrize("name", ["efficientnet_b4", "efficientnet_b5"])
def test_batch_norms_are_torchvisions(name):
    # B5-B7 normalize as TensorFlow does (eps 1e-3, momentum 0.01), B0-B4 as PyTorch
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)()
        ours = archdsl.load(SPEC, arch=name).to_torch()

    def norms(model):
        return [(m.eps, m.momentum) for m in model.modules()
                if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms(ours) == norms(reference)
    assert len(set(norms(ours))) == 1

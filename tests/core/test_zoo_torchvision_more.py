"""ShuffleNet V2 (x0.5 ... x2.0), MobileNetV3 (Large, Small), Inception v3 and GoogLeNet as
torchvision builds it: against torchvision's published numbers (hard-coded, with their source,
so the main assertions need no torch), its live models (state_dict key for key, on the meta
device) and the papers."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_same_state_dict_as_torchvision

import archdsl

SPECS = Path(__file__).resolve().parents[2] / "specs"

# torchvision *_Weights.IMAGENET1K_V1.meta: num_params and _ops (GFLOPS = GMACs); ours:
# (spec, arch, torchvision keyword arguments for the model we equal)
REFERENCE = {
    "shufflenet_v2_x0_5": (1_366_792, 0.040, "shufflenet_v2.arch", "shufflenet_v2_x0_5", {}),
    "shufflenet_v2_x1_0": (2_278_604, 0.145, "shufflenet_v2.arch", "shufflenet_v2_x1_0", {}),
    "shufflenet_v2_x1_5": (3_503_624, 0.296, "shufflenet_v2.arch", "shufflenet_v2_x1_5", {}),
    "shufflenet_v2_x2_0": (7_393_996, 0.583, "shufflenet_v2.arch", "shufflenet_v2_x2_0", {}),
    "mobilenet_v3_large": (5_483_032, 0.217, "mobilenet_v3.arch", "mobilenet_v3_large", {}),
    "mobilenet_v3_small": (2_542_856, 0.057, "mobilenet_v3.arch", "mobilenet_v3_small", {}),
    # published with the auxiliary classifiers left out (they are training-time heads)
    "googlenet": (6_624_904, 1.498, "googlenet.arch", "googlenet_torchvision",
                  {"aux_logits": False, "init_weights": False}),
    # published with the auxiliary classifier: 27,161,264 = ours + its 3,326,696
    "inception_v3": (27_161_264, 5.713, "inception_v3.arch", "inception_v3",
                     {"aux_logits": False, "init_weights": False}),
}
INCEPTION_AUX_PARAMS = 3_326_696  # AuxLogits: conv0 (768→128), conv1 (128→768, 5×5), fc
NAMES = sorted(REFERENCE)


def totals(name: str, **settings) -> dict[str, int]:
    _, _, spec, arch, _ = REFERENCE[name]
    return archdsl.load(SPECS / spec, arch=arch, **settings).stats().totals


@pytest.mark.parametrize("name", NAMES)
def test_published_params_and_gflops(name):
    params, gflops = REFERENCE[name][:2]
    t = totals(name)
    extra = INCEPTION_AUX_PARAMS if name == "inception_v3" else 0
    assert t["params"] + extra == params
    assert round(t["macs"] / 1e9, 3) == gflops


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_equals_torchvision(name):
    params, _, spec, arch, kwargs = REFERENCE[name]
    expected = params - (INCEPTION_AUX_PARAMS if name == "inception_v3" else 0)
    assert_same_state_dict_as_torchvision(SPECS / spec, name, expected, arch, **kwargs)


def test_inception_v3_aux_classifier_is_what_the_published_count_adds(tv):
    torch, torchvision = tv
    with torch.device("meta"):
        full = torchvision.models.inception_v3(aux_logits=True, init_weights=False)
    assert sum(p.numel() for p in full.AuxLogits.parameters()) == INCEPTION_AUX_PARAMS


@pytest.mark.parametrize("name,settings", [
    ("mobilenet_v3_large", {"width_mult": 0.75}),
    ("mobilenet_v3_large", {"reduced_tail": True, "dilated": True}),
    ("mobilenet_v3_small", {"width_mult": 1.25, "reduced_tail": True}),
    ("inception_v3", {"transform_input": True}),
    ("googlenet", {"transform_input": True}),
])
def test_options_equal_torchvisions(name, settings):
    _, _, spec, arch, kwargs = REFERENCE[name]
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        live = getattr(torchvision.models, name)(**kwargs, **settings)
    params = sum(p.numel() for p in live.parameters())
    assert_same_state_dict_as_torchvision(SPECS / spec, name, params, arch, settings,
                                          **kwargs, **settings)


def test_shufflenet_v2_paper_table5():
    # Ma et al. 2018, Table 5: complexity 41, 146, 299, 591 MFLOPs (multiply-adds) at
    # widths 0.5, 1, 1.5, 2; ours count conv and FC MACs only, 1.3-1.5% fewer
    paper = {"x0_5": 41e6, "x1_0": 146e6, "x1_5": 299e6, "x2_0": 591e6}
    for width, mflops in paper.items():
        macs = totals(f"shufflenet_v2_{width}")["macs"]
        assert 0.98 < macs / mflops < 1.0, width
    # Table 5's output sizes: stage 2 28x28, stage 3 14x14, stage 4 7x7, channels at 1.0x
    graph = archdsl.load(SPECS / "shufflenet_v2.arch", arch="shufflenet_v2_x1_0").graph
    last = {}
    for n in graph.nodes:
        last[n.name.split(".")[0]] = n.shape
    assert last["stage2"] == (116, 28, 28) and last["stage3"] == (232, 14, 14)
    assert last["stage4"] == (464, 7, 7) and last["conv5"] == (1024, 7, 7)


def test_shufflenet_v2_units_split_shuffle_and_downsample():
    graph = archdsl.load(SPECS / "shufflenet_v2.arch", arch="shufflenet_v2_x1_0").graph
    nodes = {n.name: n for n in graph.nodes}
    # a basic unit: half the channels pass, the other half go through branch2
    slices = [n for n in graph.nodes if n.name.startswith("stage2.1.") and n.op == "slice"]
    assert [(s.attrs["start"], s.attrs["end"]) for s in slices] == [(0, 58), (58, 116)]
    assert nodes["stage2.1.3"].op == "channel_shuffle"
    assert nodes["stage2.0.branch1.0"].attrs["groups"] == 24  # depthwise, stride 2
    assert nodes["stage2.0.branch1.0"].attrs["stride"] == 2


def test_mobilenet_v3_paper():
    # Howard et al. 2019, Table 3: Large 219 M MAdds, 5.4 M params; Table 4: Small 56 M, 2.5 M
    large, small = totals("mobilenet_v3_large"), totals("mobilenet_v3_small")
    assert abs(large["macs"] / 219e6 - 1) < 0.015 and round(large["params"] / 1e6, 1) == 5.5
    assert abs(small["macs"] / 56e6 - 1) < 0.015 and round(small["params"] / 1e6, 1) == 2.5
    graph = archdsl.load(SPECS / "mobilenet_v3.arch", arch="mobilenet_v3_large").graph
    nodes = {n.name: n for n in graph.nodes}
    assert nodes["features.4.block.2.fc2_hardsigmoid"].op == "hardsigmoid"  # the SE gate
    assert nodes["features.4.block.2.fc1"].shape == (24, 1, 1)  # make_divisible(72 // 4)
    assert nodes["features.0.1"].attrs == {"eps": 0.001, "momentum": 0.01}


def test_inception_v3_factorized_convolutions():
    graph = archdsl.load(SPECS / "inception_v3.arch").graph
    nodes = {n.name: n for n in graph.nodes}
    conv = nodes["Mixed_6b.branch7x7_2.conv"]
    assert conv.attrs["k"] == (1, 7) and conv.attrs["pad"] == (0, 3)
    assert nodes["Mixed_6b.branch7x7_3.conv"].attrs["k"] == (7, 1)
    assert nodes["Mixed_7b.branch3x3_2a.conv"].attrs["k"] == (1, 3)
    # Table 1's grid sizes: what each module ends with
    last = {}
    for n in graph.nodes:
        last[n.name.split(".")[0]] = n.shape
    assert last["maxpool2"] == (192, 35, 35) and last["Mixed_5d"] == (288, 35, 35)
    assert last["Mixed_6e"] == (768, 17, 17) and last["Mixed_7c"] == (2048, 8, 8)

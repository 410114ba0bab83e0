"""ConvNeXt (specs/convnext.arch) and the Vision Transformers (specs/vit.arch) against
torchvision: parameters, MACs (attention's QKᵀ and A·V included), state_dict keys and shapes,
and the sequence ops' shape rules and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_same_state_dict_as_torchvision

import archdsl
from archdsl.errors import ArchErrors

SPECS = Path(__file__).resolve().parents[2] / "specs"
CONVNEXT, VIT = SPECS / "convnext.arch", SPECS / "vit.arch"

# torchvision *_Weights metadata: num_params and _ops (GFLOPS = MACs) at the crop given
REFERENCE = {
    # arch: (spec, params, GFLOPS, resolution)
    "convnext_tiny": (CONVNEXT, 28_589_128, 4.456, 224),
    "convnext_small": (CONVNEXT, 50_223_688, 8.684, 224),
    "convnext_base": (CONVNEXT, 88_591_464, 15.355, 224),
    "convnext_large": (CONVNEXT, 197_767_336, 34.361, 224),
    "vit_b_16": (VIT, 86_567_656, 17.564, 224),
    "vit_b_32": (VIT, 88_224_232, 4.409, 224),
    "vit_l_16": (VIT, 304_326_632, 61.555, 224),
    "vit_l_32": (VIT, 306_535_400, 15.378, 224),
    "vit_h_14": (VIT, 632_045_800, 167.295, 224),
}
# SWAG end-to-end weights at larger crops: a longer position embedding, more tokens
AT_CROP = {("vit_b_16", 384): (86_859_496, 55.484), ("vit_h_14", 518): (633_470_440, 1016.717)}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_params_and_macs_equal_torchvision(name):
    spec, params, gflops, resolution = REFERENCE[name]
    a = archdsl.load(spec, arch=name)
    assert a.graph.input_shape == (3, resolution, resolution)
    totals = a.stats().totals
    assert totals["params"] == params
    assert round(totals["macs"] / 1e9, 3) == gflops


@pytest.mark.parametrize("name,crop", sorted(AT_CROP))
def test_vit_at_larger_crops(name, crop):
    params, gflops = AT_CROP[name, crop]
    totals = archdsl.load(VIT, arch=name, resolution=crop).stats().totals
    assert totals["params"] == params
    assert round(totals["macs"] / 1e9, 3) == gflops


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_base", "vit_b_16", "vit_l_16"])
def test_state_dict_equals_torchvision(name):
    spec, params, _, _ = REFERENCE[name]
    assert_same_state_dict_as_torchvision(spec, name, params)


def test_torchvision_metadata_is_what_we_compare_with():
    tv = pytest.importorskip("torchvision")
    for name, (_, params, gflops, _) in REFERENCE.items():
        enum = tv.models.get_model_weights(name)
        metas = [w.meta for w in enum if w.transforms.keywords["crop_size"] == 224]
        assert (params, gflops) in [(m["num_params"], m["_ops"]) for m in metas], name
    for (name, crop), (params, gflops) in AT_CROP.items():
        metas = [w.meta for w in tv.models.get_model_weights(name)
                 if w.transforms.keywords["crop_size"] == crop]
        assert (params, gflops) in [(m["num_params"], m["_ops"]) for m in metas], name


def test_vit_b_16_tokens_and_attention_counts():
    a = archdsl.load(VIT, arch="vit_b_16")
    nodes = {n.name: n for n in a.graph.nodes}
    assert nodes["conv_proj"].shape == (768, 14, 14)
    assert nodes["class_token"].shape == (197, 768)
    layer = "encoder.layers.encoder_layer_11"
    assert nodes[f"{layer}.self_attention"].shape == (197, 768)
    assert nodes[f"{layer}.mlp.0"].shape == (197, 3072)
    assert a.graph.output_shape == (1000,)
    rows = {r.name: r for r in a.stats().rows}
    attention = rows[f"{layer}.self_attention"]
    n, d = 197, 768
    # projections 4·L·D², scores and weighted sum L²·D each
    assert attention.macs == 4 * n * d * d + 2 * n * n * d
    assert attention.params == 4 * d * d + 4 * d
    assert rows["encoder.pos_embedding"].params == 197 * 768
    assert rows["class_token"].params == 768


def test_convnext_block_structure():
    a = archdsl.load(CONVNEXT, arch="convnext_tiny")
    nodes = {n.name: n for n in a.graph.nodes}
    assert nodes["features.0.0"].shape == (96, 56, 56)
    assert nodes["features.1.0.block.0"].attrs["groups"] == 96
    assert nodes["features.1.0.block.3"].shape == (384, 56, 56)  # linear over channels
    assert nodes["features.6.1"].shape == (768, 7, 7)             # last downsampling conv
    rows = {r.name: r for r in a.stats().rows}
    # a linear layer over the channels of every pixel costs what a 1x1 convolution does
    assert rows["features.1.0.block.3"].macs == 56 * 56 * 96 * 384
    assert rows["features.1.0.layer_scale"].params == 96


def test_convnext_stochastic_depth_equals_torchvision():
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        reference = tv.models.convnext_small()
        ours = archdsl.load(CONVNEXT, arch="convnext_small").to_torch()
    ref = {k: m.p for k, m in reference.named_modules() if k.endswith("stochastic_depth")}
    got = {k: m.p for k, m in ours.named_modules() if k.endswith("stochastic_depth")}
    assert set(got) == set(ref) and len(ref) == 36
    for key, p in got.items():
        assert p == pytest.approx(ref[key]), key


def test_variant_errors_name_the_choices():
    with pytest.raises(ArchErrors, match="tiny, small, base and large"):
        archdsl.load(CONVNEXT, arch="convnext", variant="huge")


def _errors(text: str, tmp_path) -> str:
    path = tmp_path / "t.arch"
    path.write_text(text)
    with pytest.raises(ArchErrors) as info:
        archdsl.load(path)
    return str(info.value)


def test_sequence_ops_check_their_shapes(tmp_path):
    head = "arch t\ninput 3x32x32\nconv-64/16 k=16 pad=0\n"
    assert "12 heads must divide the 64 features" in _errors(
        head + "tokens\nattention(12)\n", tmp_path)
    assert "needs a sequence of tokens (L×D), got 64×2×2" in _errors(
        head + "class_token\n", tmp_path)
    assert "token 4 does not exist: the sequence has 4 tokens" in _errors(
        head + "tokens\ntoken(4)\n", tmp_path)
    assert "tokens needs a C×H×W input, got 256" in _errors(
        head + "flatten\ntokens\n", tmp_path)


def test_linear_and_layernorm_work_per_position(tmp_path):
    path = tmp_path / "t.arch"
    path.write_text("arch t\ninput 8x4x4\nlinear-16; layernorm; tokens; linear-5; "
                    "layernorm; pos_embedding; token(0); linear-3\n")
    a = archdsl.load(path)
    rows = [(r.op, r.shape, r.params, r.macs) for r in a.stats().rows]
    assert rows == [("linear", (16, 4, 4), 8 * 16 + 16, 16 * 8 * 16),
                    ("layernorm", (16, 4, 4), 32, 0),
                    ("tokens", (16, 16), 0, 0),
                    ("linear", (16, 5), 16 * 5 + 5, 16 * 16 * 5),
                    ("layernorm", (16, 5), 10, 0),
                    ("pos_embedding", (16, 5), 80, 0),
                    ("token", (5,), 0, 0),
                    ("linear", (3,), 18, 15)]

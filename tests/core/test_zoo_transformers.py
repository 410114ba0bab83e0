"""ConvNeXt (specs/convnext.arch), the Vision Transformers (specs/vit.arch) and the Swin
Transformers (specs/swin.arch) against torchvision: parameters, MACs (attention's QKᵀ and A·V
included), state_dict keys and shapes, and the sequence ops' shape rules and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_same_state_dict_as_torchvision

import archdsl
from archdsl.errors import ArchErrors

SPECS = Path(__file__).resolve().parents[2] / "specs"
CONVNEXT, VIT, SWIN = SPECS / "convnext.arch", SPECS / "vit.arch", SPECS / "swin.arch"
SWIN_V2, MAXVIT = SPECS / "swin_v2.arch", SPECS / "maxvit.arch"

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
    # window attention's MACs: projections, QKᵀ and A·V over the map padded to whole windows
    "swin_t": (SWIN, 28_288_354, 4.491, 224),
    "swin_s": (SWIN, 49_606_258, 8.741, 224),
    "swin_b": (SWIN, 87_768_224, 15.431, 224),
    # v2 at 256×256: its position-bias MLP counted too
    "swin_v2_t": (SWIN_V2, 28_351_570, 5.940, 256),
    "swin_v2_s": (SWIN_V2, 49_737_442, 11.546, 256),
    "swin_v2_b": (SWIN_V2, 87_930_848, 20.325, 256),
    # MaxViT: block and grid attention (window_attention partition=window/grid) and MBConv
    "maxvit_t": (MAXVIT, 30_919_624, 5.558, 224),
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


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_base", "vit_b_16", "vit_l_16",
                                  "swin_t", "swin_b", "maxvit_t"])
def test_state_dict_equals_torchvision(name):
    spec, params, _, _ = REFERENCE[name]
    assert_same_state_dict_as_torchvision(spec, name, params)


def test_torchvision_metadata_is_what_we_compare_with():
    tv = pytest.importorskip("torchvision")
    for name, (_, params, gflops, crop) in REFERENCE.items():
        enum = tv.models.get_model_weights(name)
        metas = [w.meta for w in enum if w.transforms.keywords["crop_size"] == crop]
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


def _both_on_meta(spec, name: str):
    """torchvision's `name` and ours, built on the meta device (no memory, no arithmetic)."""
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        return getattr(tv.models, name)(), archdsl.load(spec, arch=name).to_torch()


def test_convnext_stochastic_depth_equals_torchvision():
    reference, ours = _both_on_meta(CONVNEXT, "convnext_small")
    ref = {k: m.p for k, m in reference.named_modules() if k.endswith("stochastic_depth")}
    got = {k: m.p for k, m in ours.named_modules() if k.endswith("stochastic_depth")}
    assert set(got) == set(ref) and len(ref) == 36
    for key, p in got.items():
        assert p == pytest.approx(ref[key]), key


def test_swin_stochastic_depth_and_shifts_equal_torchvision():
    reference, ours = _both_on_meta(SWIN, "swin_s")
    ref = {k: m for k, m in reference.named_modules() if k.endswith("attn")}
    got = dict(ours.named_modules())
    assert len(ref) == 24 and set(ref) <= set(got)
    for key, attn in ref.items():
        block = key.removesuffix(".attn")
        mine = got[key]
        assert list(mine.plan.window) == attn.window_size, key
        assert list(mine.plan.requested_shift) == attn.shift_size, key
        assert mine.heads == attn.num_heads, key
        # torchvision applies one StochasticDepth to both branches; the spec names each use
        p = got[f"{block}.stochastic_depth"].p
        assert p == pytest.approx(reference.get_submodule(f"{block}.stochastic_depth").p), key
        assert got[f"{block}.stochastic_depth_mlp"].p == p


@pytest.mark.parametrize("name", ["swin_v2_t", "swin_v2_b"])
def test_swin_v2_state_dict_holds_torchvisions_keys(name):
    """The same keys and shapes as torchvision's; only the order within a block differs:
    torchvision registers norm1 (norm2) before attn (mlp) but applies it after them."""
    reference, ours = _both_on_meta(SWIN_V2, name)
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs

    assert _parts_in_torchvision_order(list(mine)) == list(theirs)


def _parts_in_torchvision_order(keys: list[str]) -> list[str]:
    """Each block's keys reordered norm1, attn, norm2, mlp (a stable sort: nothing else moves)."""
    rank = {"norm1": 0, "attn": 1, "norm2": 2, "mlp": 3}

    def block(key: str) -> str | None:
        parts = key.split(".")
        in_stage = len(parts) > 3 and parts[1] in ("1", "3", "5", "7") and parts[3] in rank
        return ".".join(parts[:3]) if in_stage else None

    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(block(key) or key, i)
    return sorted(keys, key=lambda k: (first[block(k) or k], rank[k.split(".")[3]]
                                       if block(k) else 0))


def test_swin_stages():
    a = archdsl.load(SWIN, arch="swin_t")
    shapes = {n.name: n.shape for n in a.graph.nodes}
    assert shapes["features.0.0"] == (96, 56, 56)
    assert shapes["features.1.1.attn"] == (96, 56, 56)
    assert shapes["features.2"] == (192, 28, 28)      # patch merging
    assert shapes["features.7.1.mlp.3"] == (768, 7, 7)
    attrs = {n.name: n.attrs for n in a.graph.nodes if n.op == "window_attention"}
    assert attrs["features.1.0.attn"]["shift"] == 0 and attrs["features.1.1.attn"]["shift"] == 3
    assert attrs["features.5.5.attn"]["heads"] == 12
    rows = {r.name: r for r in a.stats().rows}
    # stage 4's 7×7 map is one window: no shift, no mask; 49 tokens attend to each other
    c = 768
    assert rows["features.7.1.attn"].macs == 49 * (4 * c * c + 2 * 49 * c)


def test_swin_at_other_resolutions():
    # windows pad the maps that 7 does not divide (torchvision's rule): 96 → 24, 12, 6, 3
    a = archdsl.load(SWIN, arch="swin_t", resolution=96)
    rows = {r.name: r for r in a.stats().rows}
    assert rows["features.1.0.attn"].macs == 28 * 28 * (4 * 96 * 96 + 2 * 49 * 96)
    assert a.stats().totals["params"] == 28_288_354  # the tables depend on the window only


def test_variant_errors_name_the_choices():
    with pytest.raises(ArchErrors, match="tiny, small, base and large"):
        archdsl.load(CONVNEXT, arch="convnext", variant="huge")
    with pytest.raises(ArchErrors, match="the Swin variants are t, s and b"):
        archdsl.load(SWIN, arch="swin", variant="l")


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


def test_grid_attention_shapes_and_errors():
    """Grid attention strides windows across the whole map: it keeps the map's shape, and a map
    the grid does not divide, or a shift, is a user error naming both."""
    spec = "arch t\ninput 8x14x14\nop: window_attention(2) window={w} partition=grid{extra}\n"
    a = archdsl.load(spec.format(w=7, extra=""))
    row = {r.name: r for r in a.stats().rows}["op"]
    assert a.graph.output_shape == (8, 14, 14)
    assert row.macs == 14 * 14 * (4 * 8 * 8 + 2 * 49 * 8)  # as block attention's
    with pytest.raises(ArchErrors, match="does not divide the map's height 14"):
        archdsl.load(spec.format(w=4, extra=""))
    with pytest.raises(ArchErrors, match="grid attention is not shifted"):
        archdsl.load(spec.format(w=7, extra=" shift=3"))

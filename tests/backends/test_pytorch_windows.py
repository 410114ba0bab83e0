"""Swin's ops in the PyTorch backend against torchvision's own modules (the oracle): window
attention with every kind of window and shift, v1 and v2, and patch merging — same state_dict
keys in the same order, torchvision's tensors loaded strictly, the same outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
swin = pytest.importorskip("torchvision.models.swin_transformer")

import archdsl  # noqa: E402

maxvit = pytest.importorskip("torchvision.models.maxvit")
SPECS = Path(__file__).resolve().parents[2] / "specs"


def _ours(c: int, h: int, w: int, line: str):
    return archdsl.load(f"arch t\ninput {c}x{h}x{w}\nop: {line}\n").to_torch().eval()


def _load_and_compare(ours, reference, c, h, w, batch=2, run=None):
    """`reference`'s tensors loaded into ours; both run on the same map (`run`, default
    `reference` itself, takes it channels-last)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in reference.parameters():  # nothing near its (constant or tiny) initial value
            p.normal_(0.0, 0.5)
    state = {f"op.{k}": v for k, v in reference.state_dict().items()}
    assert list(ours.state_dict()) == list(state)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(batch, c, h, w)
    with torch.no_grad():
        want = (run or reference)(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        got = ours(x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-6 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("h,w,window,shift,heads", [
    (14, 14, [7, 7], [3, 3], 2),    # Swin's shifted blocks
    (14, 14, [7, 7], [0, 0], 2),    # and the others
    (10, 13, [4, 4], [2, 2], 4),    # windows that do not divide the map: padded
    (10, 13, [3, 5], [1, 2], 4),    # non-square windows and shifts
    (5, 5, [7, 7], [3, 3], 1),      # a window bigger than the map: padded, not shifted
    (12, 7, [4, 7], [2, 3], 2),     # one axis covered by one window: shifted along the other
])
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_window_attention_equals_torchvision(h, w, window, shift, heads, v2):
    c = 8
    extra = " position_bias=mlp cosine=true" if v2 else ""
    ours = _ours(c, h, w, f"window_attention({heads}) window={{{window}}} shift={{{shift}}}{extra}")
    cls = swin.ShiftedWindowAttentionV2 if v2 else swin.ShiftedWindowAttention
    _load_and_compare(ours, cls(c, window, shift, heads).eval(), c, h, w)


@pytest.mark.parametrize("h,w", [(8, 8), (7, 5)])
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_patch_merging_equals_torchvision(h, w, v2):
    ours = _ours(6, h, w, "patch_merging post_norm=true" if v2 else "patch_merging")
    cls = swin.PatchMergingV2 if v2 else swin.PatchMerging
    _load_and_compare(ours, cls(6).eval(), 6, h, w)


def test_an_index_for_another_window_is_refused():
    ours = _ours(8, 14, 14, "window_attention(2) window=7")
    state = ours.state_dict()
    state["op.relative_position_index"] = state["op.relative_position_index"].flip(0)
    with pytest.raises(RuntimeError, match="relative_position_index is not the 7×7 window's"):
        ours.load_state_dict(state)


def test_token_pooling_and_grid():
    arch = archdsl.load("arch t\ninput 6x4x5\ntokens\nlinear-3\ngrid(4, 5)\ntokens\ngap\n")
    model = arch.to_torch().eval()
    x = torch.randn(2, 6, 4, 5)
    lin = model.get_submodule("1")
    with torch.no_grad():
        tokens = lin(x.flatten(2).transpose(1, 2))  # the map back and forth is the identity
        assert torch.allclose(model(x), tokens.mean(dim=1), atol=1e-6)


class _Partitioned(torch.nn.Module):
    """torchvision's MaxViT attention on a map: partition (into P×P windows, or a P×P grid
    of windows strided across the map), attention, departition — its PartitionAttentionLayer
    without the norms and the MLP."""

    def __init__(self, c: int, heads: int, p: int, grid: bool, h: int, w: int) -> None:
        super().__init__()
        self.attention = maxvit.RelativePositionalMultiHeadAttention(c, c // heads, p * p)
        self.cut = h // p if grid else p
        self.grid, self.h, self.w = grid, h, w

    def forward(self, x):
        t = maxvit.WindowPartition()(x.permute(0, 3, 1, 2), self.cut)
        t = self.attention(t.swapaxes(-2, -3) if self.grid else t)
        t = t.swapaxes(-2, -3) if self.grid else t
        y = maxvit.WindowDepartition()(t, self.cut, self.h // self.cut, self.w // self.cut)
        return y.permute(0, 2, 3, 1)


@pytest.mark.parametrize("h,w,window,heads,grid", [
    (14, 14, 7, 2, False), (14, 14, 7, 2, True),  # MaxViT's last stage: 7×7 blocks, 7×7 grid
    (12, 8, 4, 4, False),                          # non-square maps (block attention)
    (6, 6, 3, 1, True), (8, 8, 2, 2, True),        # a grid of 3×3 and of 2×2
])
def test_maxvit_attention_equals_torchvision(h, w, window, heads, grid):
    c = 8
    kind = "grid" if grid else "window"
    ours = _ours(c, h, w, f"window_attention({heads}) window={window} partition={kind} "
                          "scale=channels keys=maxvit")
    reference = _Partitioned(c, heads, window, grid, h, w).eval()
    _load_and_compare(ours, reference.attention, c, h, w, run=reference)


# torchvision's MaxVit at 32 pixels: two stages of one layer, 2×2 windows and grids
SMALL = {"input_size": (32, 32), "stem_channels": 8, "partition_size": 2,
         "block_channels": [8, 16], "block_layers": [1, 1], "head_dim": 4,
         "stochastic_depth_prob": 0.2}
OURS_SMALL = {"resolution": 32, "stem_channels": 8, "window": 2, "channels": [8, 16],
              "depths": [1, 1], "head_dim": 4}


def _maxvit_logits(reference, ours, resolution):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if "relative_position_bias_table" in name:  # torchvision starts it near 0
                p.normal_(0.0, 0.5)
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, resolution, resolution)
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


def test_small_maxvit_logits_equal_torchvision():
    reference = maxvit.MaxVit(**SMALL).eval()
    ours = archdsl.load(SPECS / "maxvit.arch", arch="maxvit", **OURS_SMALL).to_torch().eval()
    _maxvit_logits(reference, ours, 32)


@pytest.mark.skipif(os.environ.get("ARCHDSL_FULL_ZOO") != "1",
                    reason="maxvit_t at 224 pixels takes seconds; ARCHDSL_FULL_ZOO=1 runs it")
def test_maxvit_t_logits_equal_torchvision():
    ours = archdsl.load(SPECS / "maxvit.arch", arch="maxvit_t").to_torch().eval()
    _maxvit_logits(maxvit.maxvit_t().eval(), ours, 224)

"""Swin's ops in the PyTorch backend against torchvision's own modules (the oracle): window
attention with every kind of window and shift, v1 and v2, and patch merging — same state_dict
keys in the same order, torchvision's tensors loaded strictly, the same outputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
swin = pytest.importorskip("torchvision.models.swin_transformer")

import archdsl  # noqa: E402


def _ours(c: int, h: int, w: int, line: str):
    return archdsl.load(f"arch t\ninput {c}x{h}x{w}\nop: {line}\n").to_torch().eval()


def _load_and_compare(ours, reference, c, h, w, batch=2):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in reference.parameters():  # nothing near its (constant or tiny) initial value
            p.normal_(0.0, 0.5)
    state = {f"op.{k}": v for k, v in reference.state_dict().items()}
    assert list(ours.state_dict()) == list(state)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(batch, c, h, w)
    with torch.no_grad():
        want = reference(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
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

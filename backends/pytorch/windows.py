"""Swin's modules: (shifted) window attention and patch merging, on N×C×H×W maps.

The geometry (padding, shift, window order, mask regions, relative-position index) is
`archdsl.windows`'; these modules hold the tensors the op declares, named and ordered as
torchvision's `ShiftedWindowAttention(V2)` and `PatchMerging(V2)` hold theirs, so torchvision's
weights load strictly. They work channels-last inside (one permute in, one out): a map that
arrives channels-last in memory (from a LayerNorm2d or a previous block) costs no copy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from archdsl.ir import Node
from archdsl.ops.swin import PROJECTIONS
from archdsl.windows import MASKED, WindowPlan, pair


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows (Liu et al. 2021, Section 3.2), with a cyclic
    shift and its mask, and a relative position bias (a learned table, or Swin v2's MLP over
    log-spaced offsets with cosine attention)."""

    def __init__(self, node: Node, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        a = node.attrs
        c, h, w = in_shape
        self.plan = WindowPlan((h, w), pair(a["window"]), pair(a["shift"]), a["partition"])
        self.heads, self.cosine, self.position = a["heads"], a["cosine"], a["position_bias"]
        self.scale = (c if a["scale"] == "channels" else c // a["heads"]) ** -0.5
        self.dropout, self.proj_dropout = a["dropout"], a["proj_dropout"]
        tensors = node.opdef.tensors(a, [in_shape], node.shape)
        self._derived = node.opdef.derived(a, [in_shape], node.shape)
        for key, shape in tensors.items():  # in the declared (state_dict) order
            if key in self._derived:
                self.register_buffer(key, _tensor(self._derived[key], shape))
        if "relative_position_bias_table" in tensors:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(tensors["relative_position_bias_table"]))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        if self.cosine:
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(self.heads, 1, 1)))
        # named as the op's `keys` say (torchvision's Swin or MaxViT modules)
        self._qkv_name, self._proj_name = PROJECTIONS[a["keys"]]
        setattr(self, self._qkv_name, nn.Linear(c, 3 * c, bias=a["bias"]))
        setattr(self, self._proj_name, nn.Linear(c, c, bias=a["bias"]))
        if self.position == "mlp":
            self.cpb_mlp = nn.Sequential(nn.Linear(2, a["mlp_hidden"]), nn.ReLU(inplace=True),
                                         nn.Linear(a["mlp_hidden"], self.heads, bias=False))
        self._regions = self.plan.regions() if self.plan.shifted else None
        # the map's rows and columns split into (window, token) or, for a grid, (token, window)
        # factors, and the permutations to b, windows down, across, tokens down, across and back
        (gh, gw), (wh, ww) = self.plan.grid, self.plan.window
        if a["partition"] == "grid":
            self._split, self._order, self._back = (wh, gh, ww, gw), (0, 2, 4, 1, 3, 5), \
                (0, 3, 1, 4, 2, 5)
        else:
            self._split, self._order, self._back = (gh, wh, gw, ww), (0, 1, 3, 2, 4, 5), \
                (0, 1, 3, 2, 4, 5)

    def position_bias(self) -> torch.Tensor | None:
        """heads × N × N: each pair of a window's tokens looks up its offset's bias."""
        if self.position == "none":
            return None
        table = (self.relative_position_bias_table if self.position == "table"
                 else self.cpb_mlp(self.relative_coords_table).view(-1, self.heads))
        n = self.plan.tokens
        bias = table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias) if self.position == "mlp" else bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan
        (h, w), (ph, pw), (gh, gw), (wh, ww) = plan.size, plan.padded, plan.grid, plan.window
        b, c = x.shape[:2]
        x = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, pw - w, 0, ph - h))
        if plan.shifted:
            x = torch.roll(x, (-plan.shift[0], -plan.shift[1]), (1, 2))
        x = x.reshape(b, *self._split, c).permute(self._order).reshape(-1, plan.tokens, c)
        x = self._attend(x)
        x = x.view(b, gh, gw, wh, ww, c).permute(self._back).reshape(b, ph, pw, c)
        if plan.shifted:
            x = torch.roll(x, plan.shift, (1, 2))
        return x[:, :h, :w].permute(0, 3, 1, 2)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """Attention within each window of a (batch·windows) × N × C tensor."""
        bw, n, c = x.shape
        qkv, proj = getattr(self, self._qkv_name), getattr(self, self._proj_name)
        bias = qkv.bias
        if self.cosine and bias is not None:  # Swin v2 has no key bias (torchvision zeroes it)
            bias = torch.cat([bias[:c], torch.zeros_like(bias[c:2 * c]), bias[2 * c:]])
        qkv = F.linear(x, qkv.weight, bias).reshape(bw, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.cosine:
            scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * scale
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
        position = self.position_bias()
        if position is not None:
            attn = attn + position
        if self._regions is not None:
            regions = torch.tensor(self._regions, device=x.device)
            mask = torch.zeros(regions.shape + (n,), dtype=attn.dtype, device=x.device)
            mask = mask.masked_fill(regions.unsqueeze(1) != regions.unsqueeze(2), MASKED)
            windows = mask.shape[0]
            attn = (attn.view(-1, windows, self.heads, n, n) + mask.unsqueeze(1)).view(bw, -1, n, n)
        attn = F.dropout(attn.softmax(dim=-1), self.dropout, self.training)
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return F.dropout(proj(x), self.proj_dropout, self.training)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # the index addresses the table: one that is not this window's (another window size,
        # or a hostile file) is refused rather than read out of bounds or silently wrong
        for key in self._derived:
            given, own = state_dict.get(prefix + key), getattr(self, key)
            if given is None or given.shape != own.shape or own.is_meta or given.is_meta:
                continue
            if not torch.allclose(given.to(own.dtype), own.to(given.device), atol=1e-6):
                error_msgs.append(f"{prefix}{key} is not the {self.plan.window[0]}×"
                                  f"{self.plan.window[1]} window's (it is computed from the "
                                  "window; weights from another window size do not fit)")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def _tensor(values: tuple, shape: tuple[int, ...]) -> torch.Tensor:
    dtype = torch.int64 if values and isinstance(values[0], int) else torch.float32
    return torch.tensor(values, dtype=dtype).reshape(shape)


class PatchMerging(nn.Module):
    """Each 2×2 neighbourhood concatenated (rows then columns: (0,0), (1,0), (0,1), (1,1)),
    odd sizes zero-padded; LayerNorm over the 4C features then a linear reduction (v1), or the
    reduction then LayerNorm (v2)."""

    def __init__(self, node: Node, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        a = node.attrs
        c, out = in_shape[0], a["out"]
        self.post_norm = a["post_norm"]
        self.reduction = nn.Linear(4 * c, out, bias=False)
        self.norm = nn.LayerNorm(out if self.post_norm else 4 * c, eps=a["eps"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)
        x = self.norm(self.reduction(x)) if self.post_norm else self.reduction(self.norm(x))
        return x.permute(0, 3, 1, 2)

"""The geometry of windowed attention (Swin): how a map is cut into windows, shifted and masked,
and how tokens index the relative-position tables. Pure Python, shared by the op declarations
(shapes, counts, tensors) and both backends, so the rules live in one place.

Z. Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
ICCV 2021, Sections 3.2 (shifted windows, the cyclic shift and its mask) and 3.2 "Relative
position bias"; torchvision's `shifted_window_attention` is the reference for the details the
paper leaves open (zero padding to whole windows, no shift along an axis one window covers, the
region labels of the mask), which archdsl follows exactly so that its numbers and weights
match torchvision's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

Pair = tuple[int, int]


def pair(value: int | tuple[int, int] | list[int]) -> Pair:
    """A window or shift attribute as (height, width): `7` means 7×7."""
    if isinstance(value, int):
        return (value, value)
    h, w = value
    return (h, w)


@dataclass(frozen=True)
class WindowPlan:
    """How attention windows tile an H×W map.

    The map is zero-padded at the bottom and right to whole windows; the padded positions take
    part in attention like any other (torchvision does not mask them). It is then shifted
    cyclically up and left by `shift` — except along an axis that one window covers whole, where
    a shift would only move the mask — and cut into windows, row-major."""

    size: Pair  # the map's H, W
    window: Pair
    requested_shift: Pair
    # "window": each window a block of adjacent positions (Swin; MaxViT's block attention);
    # "grid": window (a, b) holds the positions (a + i·H/Wh, b + j·W/Ww), a Wh×Ww grid that
    # strides across the whole map (MaxViT's grid attention; the map must divide evenly)
    partition: str = "window"

    @property
    def padded(self) -> Pair:
        (h, w), (wh, ww) = self.size, self.window
        return (-(-h // wh) * wh, -(-w // ww) * ww)

    @property
    def shift(self) -> Pair:
        (sh, sw), (wh, ww), (ph, pw) = self.requested_shift, self.window, self.padded
        return (0 if wh >= ph else sh, 0 if ww >= pw else sw)

    @property
    def grid(self) -> Pair:
        """Windows down and across."""
        (ph, pw), (wh, ww) = self.padded, self.window
        return (ph // wh, pw // ww)

    @property
    def windows(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def tokens(self) -> int:
        """Tokens per window."""
        return self.window[0] * self.window[1]

    @property
    def shifted(self) -> bool:
        return any(self.shift)

    def _cells(self):
        """(window, row, column) of every token, in window order then row-major within one:
        the row and column of the shifted, padded map."""
        (gh, gw), (wh, ww) = self.grid, self.window
        dilated = self.partition == "grid"
        for i in range(gh):
            for j in range(gw):
                for a in range(wh):
                    for b in range(ww):
                        if dilated:  # token (a, b) of window (i, j) strides by the grid
                            yield i * gw + j, a * gh + i, b * gw + j
                        else:
                            yield i * gw + j, i * wh + a, j * ww + b

    def positions(self) -> list[int]:
        """For each token (window order), the row-major index in the padded, unshifted map that
        it reads: the cyclic shift and the window (or grid) partition as one gather."""
        (ph, pw), (sh, sw) = self.padded, self.shift
        return [((r + sh) % ph) * pw + (c + sw) % pw for _, r, c in self._cells()]

    def regions(self) -> list[list[int]]:
        """Per window, the region label of each of its tokens: after the cyclic shift, tokens
        from different regions of the original map share a window, and may attend only to
        tokens of their own region (the mask is −100 between regions, 0 within one)."""
        (ph, pw), (wh, ww), (sh, sw) = self.padded, self.window, self.shift
        out: list[list[int]] = [[] for _ in range(self.windows)]
        for k, r, c in self._cells():
            out[k].append(3 * _region(r, ph, wh, sh) + _region(c, pw, ww, sw))
        return out


def _region(x: int, size: int, window: int, shift: int) -> int:
    """Which of the three bands [0, size−window), [size−window, size−shift), [size−shift, size)
    position `x` of a shifted axis falls in (one band when the axis is not shifted)."""
    if shift == 0 or x < size - window:
        return 0
    return 1 if x < size - shift else 2


MASKED = -100.0  # what the mask adds to scores between regions (torchvision's value)


# A window's relative-position index has N² entries for N tokens, made here in plain Python:
# windows are bounded (torchvision's are 7×7 and 8×8, Swin V2's at 384 pixels 24×24) so that a
# spec cannot ask for billions of them.
MAX_WINDOW_TOKENS = 4096


@functools.lru_cache(maxsize=16)  # every block of a stage has the same window
def relative_position_index(window: Pair) -> tuple[int, ...]:
    """For every pair (p, q) of a window's tokens (row-major, p·N + q), the row of the
    (2·Wh−1)·(2·Ww−1) relative-position table that holds their bias: the offset
    (Δrow, Δcolumn) = p − q, shifted to start at 0 — (Δrow + Wh − 1)·(2·Ww − 1) + Δcol + Ww − 1,
    which is p's cell offset minus q's plus the offset of (Wh − 1, Ww − 1)."""
    wh, ww = window
    cells = [a * (2 * ww - 1) + b for a in range(wh) for b in range(ww)]
    zero = (wh - 1) * (2 * ww - 1) + ww - 1
    return tuple(zero + p - q for p in cells for q in cells)


def table_rows(window: Pair) -> int:
    return (2 * window[0] - 1) * (2 * window[1] - 1)


@functools.lru_cache(maxsize=16)
def relative_coords_table(window: Pair) -> tuple[float, ...]:
    """Swin v2's log-spaced relative coordinates, the input of its continuous position bias
    MLP (Liu et al., "Swin Transformer V2", CVPR 2022, Eq. 4): every offset (Δrow, Δcolumn)
    of the table, each scaled to [−8, 8] by the window and mapped to sign(x)·log2(1 + |x|)/3;
    flat, shaped 1 × (2·Wh−1) × (2·Ww−1) × 2."""
    out: list[float] = []
    wh, ww = window
    for dh in range(-(wh - 1), wh):
        for dw in range(-(ww - 1), ww):
            for d, w in ((dh, wh), (dw, ww)):
                x = 8.0 * d / (w - 1) if w > 1 else 0.0
                out.append(math.copysign(math.log2(abs(x) + 1.0) / 3.0, x) if x else 0.0)
    return tuple(out)

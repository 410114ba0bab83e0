"""How numbers are written for people: every digit (`138,357,544`) or papers' style (`138.4M`).

The renderers (tables, diffs, drawings, error messages) share these; analysis only counts.
"""

from __future__ import annotations

_SCALES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def grouped(n: int | float) -> str:
    """Every digit, in groups of three: 138,357,544."""
    return f"{n:,}"


def human(n: float, unit: str = "") -> str:
    """12_345_678 → 12.35M (papers' style, two decimals)."""
    for scale, suffix in _SCALES:
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def compact(n: int | float) -> str:
    """A count for a narrow column, to four significant digits with its scale: 138.4M,
    11.69M, 4.089G, 950 (rounded and labelled, never cut)."""
    if abs(n) < 1000:
        return f"{n:,}" if isinstance(n, int) else f"{n:.4g}"
    for scale, suffix in reversed(_SCALES):  # K, M, G, T: the largest that keeps v < 1000
        v = n / scale
        text = _four_digits(v)
        if abs(float(text)) < 1000 or suffix == "T":
            return text + suffix
    raise AssertionError("unreachable")


def _four_digits(v: float) -> str:
    for decimals, bound in ((3, 10), (2, 100), (1, 1000)):
        text = f"{v:.{decimals}f}"
        if abs(float(text)) < bound:
            return text
    return f"{v:.0f}"

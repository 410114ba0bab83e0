"""Matching two sequences (of layers, of names) in bounded time, for `diff` and `table`.

difflib's SequenceMatcher finds the longest common runs, but takes time in proportion to the
product of the lengths where keys repeat: `archdsl diff` of two 24,000-layer specs took almost 3
minutes (issue #13). Above MAX_PAIRS the match is made on the keys that occur once on each side
(patience diff, O(n log n)): coarser, as a diff of such sizes may well be.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Hashable, Sequence
from difflib import SequenceMatcher

MAX_PAIRS = 4_000_000  # len(a) * len(b) above which difflib's matching is not used


def matching_pairs(ka: Sequence[Hashable], kb: Sequence[Hashable]) -> list[tuple[int, int]]:
    """Index pairs of equal keys, increasing on both sides: where keys are unique on both
    sides (names), or the sequences are long, the longest such chain of unique keys;
    otherwise difflib's matching (longest common runs first)."""
    unique = len(set(ka)) == len(ka) and len(set(kb)) == len(kb)
    if unique or len(ka) * len(kb) > MAX_PAIRS:
        once_a, once_b = Counter(ka), Counter(kb)
        where = {k: j for j, k in enumerate(kb) if once_b[k] == 1}
        return increasing([(i, where[k]) for i, k in enumerate(ka)
                           if once_a[k] == 1 and k in where])
    sm = SequenceMatcher(None, ka, kb, autojunk=False)
    return [(p + t, q + t) for p, q, n in sm.get_matching_blocks() for t in range(n)]


def increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest subsequence of (i, j) pairs (sorted by i) whose j increase."""
    tails: list[int] = []  # smallest last j of an increasing run of each length
    ends: list[int] = []  # index in pairs of that last element
    prev = [-1] * len(pairs)
    for n, (_, j) in enumerate(pairs):
        k = bisect_left(tails, j)
        if k == len(tails):
            tails.append(j)
            ends.append(n)
        else:
            tails[k], ends[k] = j, n
        prev[n] = ends[k - 1] if k else -1
    out = []
    n = ends[-1] if ends else -1
    while n >= 0:
        out.append(pairs[n])
        n = prev[n]
    return out[::-1]


def merge_order(a: Sequence[Hashable], b: Sequence[Hashable]) -> list:
    """The keys of both sequences, each once, in an order that respects both."""
    seen = set(a)
    out: list = []
    pi = pj = 0
    for i, j in matching_pairs(a, b) + [(len(a), len(b))]:
        out += a[pi:i]
        for key in b[pj:j]:
            if key not in seen:
                seen.add(key)
                out.append(key)
        if i < len(a):
            out.append(a[i])
        pi, pj = i + 1, j + 1
    return out

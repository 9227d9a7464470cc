"""How concentrated posting is among posters: top-k shares, Gini, absence factor.

Inputs are post counts per poster (posters with zero posts are not posters).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate
from operator import mul
from typing import NamedTuple


def top_share(counts: Iterable[int], k: int) -> float:
    """Share of all posts made by the ``k`` most active posters (0 when no posts)."""
    values = sorted(counts, reverse=True)
    total = sum(values)
    return sum(values[:k]) / total if total else 0.0


def gini(counts: Iterable[int]) -> float:
    """Gini coefficient of posts over posters: 0 = everyone posts equally, ->1 = one poster.

    Sorted-rank form of sum_i sum_j |x_i - x_j| / (2 n^2 mean); 0 for fewer than 2 posters.
    """
    values = sorted(c for c in counts if c > 0)
    n = len(values)
    total = sum(values)
    if n < 2 or total == 0:
        return 0.0
    weighted = sum(rank * x for rank, x in enumerate(values, start=1))
    return max(0.0, (2.0 * weighted) / (n * total) - (n + 1.0) / n)


def absence_factor(counts: Iterable[int]) -> int:
    """Smallest number of posters who together made >= 50 % of the posts (0 when no posts)."""
    values = sorted((c for c in counts if c > 0), reverse=True)
    total = sum(values)
    running = 0
    for k, x in enumerate(values, start=1):
        running += x
        if 2 * running >= total:  # integer form of running >= 0.5 * total
            return k
    return 0


class Concentration(NamedTuple):
    top1_share: float
    top3_share: float
    gini: float
    absence_factor: int


def concentration(counts: Iterable[int]) -> Concentration:
    """``top_share(counts, 1)``, ``top_share(counts, 3)``, ``gini`` and ``absence_factor``
    from one sort, with the same integer sums: a window row needs all four, and its day's
    posters are sorted at every change of the row."""
    values = sorted(c for c in counts if c > 0)
    n = len(values)
    total = sum(values)
    if total == 0:
        return Concentration(0.0, 0.0, 0.0, 0)
    top1 = values[-1] / total
    top3 = sum(values[-3:]) / total
    if n < 2:
        g = 0.0
    else:
        weighted = sum(map(mul, range(1, n + 1), values))
        g = max(0.0, (2.0 * weighted) / (n * total) - (n + 1.0) / n)
    # the most active first: the first running sum with 2 * running >= total
    absence = bisect_left(list(accumulate(reversed(values))), (total + 1) // 2) + 1
    return Concentration(top1, top3, g, absence)

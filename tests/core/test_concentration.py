"""Concentration metrics against brute-force definitions."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.concentration import absence_factor, concentration, gini, top_share

counts_st = st.lists(st.integers(min_value=1, max_value=50), min_size=0, max_size=12)


def brute_gini(xs: list[int]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mean = sum(xs) / n
    return sum(abs(a - b) for a in xs for b in xs) / (2 * n * n * mean)


def brute_absence(xs: list[int]) -> int:
    total = sum(xs)
    if total == 0:
        return 0
    for k in range(1, len(xs) + 1):
        if any(2 * sum(c) >= total for c in itertools.combinations(xs, k)):
            return k
    raise AssertionError("unreachable")


@given(counts_st)
def test_gini_equals_pairwise_definition(xs: list[int]) -> None:
    assert math.isclose(gini(xs), brute_gini(xs), abs_tol=1e-9)


@given(st.lists(st.integers(min_value=1, max_value=30), max_size=8))
def test_absence_factor_equals_smallest_subset_with_half_the_posts(xs: list[int]) -> None:
    assert absence_factor(xs) == brute_absence(xs)


@given(counts_st, st.integers(min_value=1, max_value=5))
def test_top_share_is_a_share_and_the_best_k_subset(xs: list[int], k: int) -> None:
    share = top_share(xs, k)
    assert 0.0 <= share <= 1.0
    if xs:
        best = max(sum(c) for c in itertools.combinations(xs, min(k, len(xs))))
        assert math.isclose(share, best / sum(xs))
    else:
        assert share == 0.0


@given(counts_st)
def test_shares_are_ordered(xs: list[int]) -> None:
    assert top_share(xs, 1) <= top_share(xs, 3) <= 1.0
    assert 0.0 <= gini(xs) < 1.0


def test_extremes() -> None:
    assert gini([5, 5, 5, 5]) == 0.0
    assert math.isclose(gini([0, 0, 0, 10]), 0.0)  # zero-post members are not posters
    assert math.isclose(gini([1, 1, 1, 97]), brute_gini([1, 1, 1, 97]))
    assert absence_factor([10]) == 1
    assert absence_factor([1, 1, 1, 1]) == 2
    assert absence_factor([]) == 0


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=300))
def test_concentration_is_the_four_figures_exactly(xs: list[int]) -> None:
    # exactly, not close: window rows computed by either must be the same bytes
    got = concentration(xs)
    assert got == (top_share(xs, 1), top_share(xs, 3), gini(xs), absence_factor(xs))
    assert type(got.absence_factor) is int


def test_concentration_of_nothing_and_of_one() -> None:
    assert concentration([]) == (0.0, 0.0, 0.0, 0)
    assert concentration([0, 0]) == (0.0, 0.0, 0.0, 0)
    assert concentration([7]) == (1.0, 1.0, 0.0, 1)
    assert concentration([1, 1, 1, 97]) == (0.97, 0.99, gini([1, 1, 1, 97]), 1)
    assert concentration([1, 1, 1, 1]).absence_factor == 2  # 2 * 2 >= 4: the boundary counts

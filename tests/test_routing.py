"""Colex ranks (MATH.md §2) against itertools and the closed form Σ C(s_i, i)."""

import itertools
import math

import numpy as np
import pytest
import reference

from moecover import routing


@pytest.mark.parametrize("experts", range(1, 13))
def test_subsets_rank_unrank_round_trip(experts):
    for top_k in range(1, experts + 1):
        table = routing.subsets(experts, top_k)
        # colex order: compare by the largest element first
        want = sorted(itertools.combinations(range(experts), top_k), key=lambda s: s[::-1])
        np.testing.assert_array_equal(table, np.array(want, dtype=np.uint32).reshape(-1, top_k))
        for r, subset in enumerate(want):
            assert routing.rank(subset) == r == reference.colex_rank(subset)
            assert routing.unrank(r, top_k) == subset


def test_rank_accepts_any_order_and_rejects_bad_sets():
    assert routing.rank([3, 0]) == routing.rank((0, 3)) == math.comb(3, 2)
    for bad in ([], [1, 1], [-1, 2]):
        with pytest.raises(ValueError, match="subset"):
            routing.rank(bad)


def test_sizes_that_do_not_fit_uint32_are_refused():
    with pytest.raises(ValueError, match="top_k"):
        routing.subsets(64, 16)
    with pytest.raises(ValueError, match="top_k"):
        routing.subsets(3, 4)

"""Colex ranks (definitions §2) against itertools and the closed form Σ C(s_i, i)."""

import itertools
import math

import numpy as np
import pytest
import reference

from moecover import MoESpec, routing


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


@pytest.mark.timeout(10)
def test_large_ranks_are_exact_or_refused_never_slow_or_wrapped():
    # ranks of large expert indices against the closed form Σ C(s_i, i) in Python integers
    big = (7, 1_000_000, 2_000_000)  # C(2e6, 3) ≈ 1.3e18 < 2^64
    assert routing.rank(big) == reference.colex_rank(big)
    assert routing.unrank(reference.colex_rank(big), 3) == big
    assert routing.unrank(2**32 - 1, 1) == (2**32 - 1,)
    # past that an expert index would need 33 bits: a linear search would run for 2^63 steps
    for rank, top_k in ((2**32, 1), (2**63, 1), (2**64 - 1, 2)):
        with pytest.raises(ValueError, match="rank"):
            routing.unrank(rank, top_k)
    # C(2^32 − 1, 4) > 2^64: refused, not saturated to a wrong value
    with pytest.raises(ValueError, match="subset"):
        routing.rank([1, 2, 3_000_000_000, 2**32 - 1])
    with pytest.raises(ValueError, match="top_k"):
        routing.unrank(0, 10**12)


def test_sizes_that_do_not_fit_uint32_are_refused():
    with pytest.raises(ValueError, match="top_k"):
        routing.subsets(64, 16)
    with pytest.raises(ValueError, match="top_k"):
        routing.subsets(3, 4)


def unique_ids_in_first_appearance_order(rows):
    """NumPy reference: ids of rows numbered by first appearance, and the number of distinct rows."""
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse.ravel()], len(first)


@pytest.mark.parametrize(("m", "n", "layers", "seq_len", "levels"), [(500, 6, 1, 1, 3), (2000, 4, 2, 2, 2), (300, 1, 1, 3, 5), (1, 3, 1, 1, 4), (800, 5, 2, 3, 2)])
def test_count_patterns_matches_numpy_unique(m, n, layers, seq_len, levels):
    rng = np.random.default_rng(m + n)
    routes = rng.integers(0, levels, size=(m, n, layers, seq_len)).astype(np.uint32)
    counts = routing.count_patterns(routes, n_threads=2)
    for i in range(n):
        assert counts.per_input[i] == len(np.unique(routes[:, i].reshape(m, -1), axis=0))
    ids, distinct = unique_ids_in_first_appearance_order(routes.reshape(m, -1))
    assert counts.dataset == distinct
    np.testing.assert_array_equal(counts.group, ids)
    np.testing.assert_array_equal(counts.group_sizes, np.bincount(ids))
    for prefix in range(1, n + 1):
        assert counts.growth[prefix - 1] == len(np.unique(routes[:, :prefix].reshape(m, -1), axis=0))
    for samples, seen in zip(counts.discovery_samples, counts.discovery):
        assert seen == len(np.unique(routes[:samples].reshape(samples, -1), axis=0))
    assert counts.discovery_samples[-1] == m


def test_bounds_by_hand_and_covers_count():
    # Cover (1965): N points in general position in R^D have 2 Σ_{i≤D} C(N−1, i) affine dichotomies
    assert routing.arrangement_bound(2, 2, 8) == 2 * (1 + 7 + 21)
    assert routing.arrangement_bound(2, 1, 5) == 2 * (1 + 4)
    # M = 3, D = 1, 2 tokens: H = 2·3 = 6 hyperplanes in p = 2·2 = 4 dims: 2 Σ_{i<4} C(5, i)
    assert routing.arrangement_bound(3, 1, 2) == 2 * (1 + 5 + 10 + 10)


@pytest.mark.parametrize(("n", "d_model"), [(3, 2), (4, 1), (5, 2)])
def test_sampled_router_patterns_reach_but_never_exceed_covers_count(n, d_model):
    from moecover import MoESpec, evaluate_sampled

    spec = MoESpec(experts=2, top_k=1, d_model=d_model, expert="constant")
    inputs = np.random.default_rng(n).normal(size=(n, 1, d_model))
    counts = routing.count_patterns(evaluate_sampled(spec, inputs, 200_000, rng=1).routes, spec)
    cover_count = 2 * sum(math.comb(n - 1, i) for i in range(d_model + 1))
    assert counts.arrangement_bound == cover_count
    assert counts.union_bound_per_input == 2
    assert counts.dataset == cover_count  # small cases: every dichotomy is hit by 2·10^5 samples


BAD_ROUTES = [np.zeros((3, 2, 1)), np.zeros((3, 2, 1, 1), dtype=float), np.full((2, 2, 1, 1), -1)]


@pytest.mark.parametrize("routes", BAD_ROUTES)
def test_count_patterns_rejects_bad_routes(routes):
    with pytest.raises(ValueError, match="routes"):
        routing.count_patterns(routes)


@pytest.mark.parametrize(("n", "d_model"), [(5, 1), (7, 2), (8, 3), (12, 2)])
def test_exact_two_expert_patterns_are_covers_count(n, d_model):
    from moecover import MoESpec

    spec = MoESpec(experts=2, top_k=1, d_model=d_model, expert="constant")
    inputs = np.random.default_rng(n * d_model).normal(size=(n, 1, d_model))
    exact = routing.exact_patterns(spec, inputs)
    assert exact.count == 2 * sum(math.comb(n - 1, i) for i in range(d_model + 1))
    assert exact.count <= exact.arrangement_bound


@pytest.mark.parametrize(("experts", "top_k", "d_model", "n", "seq_len"), [(3, 1, 1, 4, 1), (3, 2, 2, 3, 1), (4, 2, 1, 2, 2)])
def test_exact_contains_every_sampled_pattern_and_equals_on_small_cases(experts, top_k, d_model, n, seq_len):
    from moecover import MoESpec, evaluate_sampled

    spec = MoESpec(experts=experts, top_k=top_k, d_model=d_model, seq_len=seq_len, expert="constant")
    inputs = np.random.default_rng(experts + n).normal(size=(n, seq_len, d_model))
    exact = routing.exact_patterns(spec, inputs, return_patterns=True, n_threads=2)
    assert exact.patterns is not None and exact.patterns.shape == (exact.count, n, 1, seq_len)
    assert len({p.tobytes() for p in exact.patterns}) == exact.count  # listed once each
    sampled = evaluate_sampled(spec, inputs, 300_000, rng=0).routes
    seen = {row.tobytes() for row in np.unique(sampled.reshape(len(sampled), -1), axis=0)}
    listed = {p.reshape(-1).tobytes() for p in exact.patterns}
    assert seen <= listed  # every sampled pattern is realisable
    assert len(seen) == exact.count  # and, on these small cases, every realisable one is sampled
    assert exact.count <= exact.arrangement_bound


def test_exact_patterns_same_for_one_and_two_threads():
    from moecover import MoESpec

    spec = MoESpec(experts=3, top_k=1, d_model=2, expert="constant")
    inputs = np.random.default_rng(1).normal(size=(7, 1, 2))
    one = routing.exact_patterns(spec, inputs, return_patterns=True, n_threads=1)
    two = routing.exact_patterns(spec, inputs, return_patterns=True, n_threads=2)
    assert one.count == two.count
    np.testing.assert_array_equal(one.patterns, two.patterns)


def test_exact_patterns_refuses_specs_outside_its_scope_and_overflows():
    from moecover import MoESpec

    x = np.zeros((3, 1, 2))
    for spec in (MoESpec(layers=2), MoESpec(heads=1)):
        with pytest.raises(ValueError, match="one layer without attention"):
            routing.exact_patterns(spec, x)
    spec = MoESpec(experts=3, d_model=2)
    with pytest.raises(ValueError, match="max_patterns"):
        routing.exact_patterns(spec, np.random.default_rng(0).normal(size=(8, 1, 2)), max_patterns=5)


@pytest.mark.parametrize("junk", [[0.5, 2.7], "02", [True, 2], None, 5])
def test_rank_refuses_what_is_not_a_set_of_integer_indices(junk):
    # [0.5, 2.7] once ranked as [0, 2] and "02" as {0, 2}
    with pytest.raises(TypeError, match="^subset:"):
        routing.rank(junk)


def test_rank_takes_numpy_integers():
    assert routing.rank(np.array([0, 2], dtype=np.int64)) == routing.rank([0, 2]) == routing.rank((np.uint8(2), 0))


def test_arrangement_bound_refuses_sizes_it_would_take_hours_on():
    with pytest.raises(ValueError, match="^experts:"):
        routing.arrangement_bound(2**31, 2, 5)
    with pytest.raises(ValueError, match="^experts, d_model:"):
        routing.arrangement_bound(60_000, 60_000, 5)
    assert routing.arrangement_bound(2, 1, 3) == 2 * (1 + 2)  # Cover: 2 Σ_{i ≤ D} C(N − 1, i)


@pytest.mark.parametrize("scale", [1e308, 1e200, 1e-300])
def test_exact_patterns_do_not_depend_on_the_inputs_scale(scale):
    # at 1e200 the LP solver panicked on an overflowing norm; patterns on c·x equal those on x
    spec = MoESpec(experts=3, top_k=1, d_model=2, heads=0)
    x = np.random.default_rng(3).uniform(-1, 1, (5, 1, 2))
    x /= np.abs(x).max()
    reference = routing.exact_patterns(spec, x, return_patterns=True)
    scaled = routing.exact_patterns(spec, x * scale, return_patterns=True)
    assert scaled.count == reference.count
    rows = lambda found: {tuple(row) for row in found.patterns.reshape(found.count, -1).tolist()}  # noqa: E731
    assert rows(scaled) == rows(reference)

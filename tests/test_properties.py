"""Property tests (hypothesis) for the invariants of definitions §2–§3 and for input rejection."""

import numpy as np
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import moecover
from moecover import routing

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# points on a coarse grid (exact ties at δ happen) or arbitrary finite floats
coarse = st.integers(-6, 6).map(lambda v: v / 4)
points_strategy = st.integers(1, 5).flatmap(
    lambda d: arrays(np.float64, st.tuples(st.integers(0, 60), st.just(d)), elements=coarse)
)
deltas_strategy = st.lists(st.sampled_from([0.25, 0.5, 0.75, 1.0, 1.7]), min_size=1, max_size=4, unique=True)


@SETTINGS
@given(points=points_strategy, delta=st.sampled_from([0.25, 0.5, 1.0, 1.3]), threads=st.sampled_from([1, 2]))
def test_net_equals_the_sequential_definition_and_is_a_cover_and_packing(points, delta, threads):
    net = moecover.greedy_net(points, delta, n_threads=threads)
    centres, assignment = reference.greedy_net(points, delta)
    np.testing.assert_array_equal(net.centers, centres)
    np.testing.assert_array_equal(net.assignment, assignment)
    if len(points):
        c = points[net.centers]
        assert (np.abs(points - c[net.assignment]).max(axis=1) <= delta).all()
        gaps = np.abs(c[:, None] - c[None]).max(axis=2) + np.eye(len(c)) * 1e9
        assert (gaps > delta).all()


@SETTINGS
@given(points=points_strategy, deltas=deltas_strategy, cuts=st.lists(st.integers(0, 60), max_size=5))
def test_stream_is_invariant_to_chunking(points, deltas, cuts):
    stream = moecover.CoverStream(deltas, dim=points.shape[1])
    bounds = [0, *sorted(min(c, len(points)) for c in cuts), len(points)]
    for lo, hi in zip(bounds, bounds[1:]):
        stream.add(points[lo:hi])
    got, want = stream.result(), moecover.cover(points, deltas)
    np.testing.assert_array_equal(got.net_sizes, want.net_sizes)
    np.testing.assert_array_equal(got.tail_discovery, want.tail_discovery)


@SETTINGS
@given(st.integers(1, 20).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, m))).flatmap(
    lambda mk: st.tuples(st.just(mk[1]), st.sets(st.integers(0, mk[0] - 1), min_size=mk[1], max_size=mk[1]))))
def test_rank_and_unrank_are_inverse(case):
    top_k, subset = case
    assert routing.unrank(routing.rank(subset), top_k) == tuple(sorted(subset))


SPEC = moecover.MoESpec(experts=3, d_model=2, seq_len=2)
junk = st.one_of(
    arrays(st.sampled_from([np.float64, np.float32, np.int64, np.complex128, np.bool_]),
           st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple),
           elements=st.just(0) | st.just(1)),
    arrays(np.float64, st.just((2, 2, 2)), elements=st.sampled_from([0.0, np.nan, np.inf])),
    st.none(), st.text(max_size=3), st.integers(-3, 3), st.lists(st.floats(), max_size=3),
)


@SETTINGS
@given(params=junk, inputs=junk)
def test_rejected_inputs_raise_value_or_type_errors_only(params, inputs):
    try:
        moecover.evaluate(SPEC, params, inputs)
    except (ValueError, TypeError):
        pass


@SETTINGS
@given(points=junk, deltas=st.one_of(junk, st.lists(st.floats(allow_nan=True), max_size=3)))
def test_cover_rejects_junk_with_value_or_type_errors_only(points, deltas):
    try:
        moecover.cover(points, deltas)
    except (ValueError, TypeError):
        pass


ESTIMATE_SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ESTIMATE_SETTINGS
@given(
    experts=st.integers(2, 4),
    top_k=st.integers(1, 2),
    d_model=st.integers(1, 2),
    n=st.integers(1, 5),
    seed=st.integers(0, 2**32),
)
def test_sampled_routing_patterns_never_exceed_the_exact_count(experts, top_k, d_model, n, seed):
    spec = moecover.MoESpec(experts=experts, top_k=min(top_k, experts), d_model=d_model, expert="constant")
    x = np.random.default_rng(seed).normal(size=(n, 1, d_model))
    routes = moecover.evaluate_sampled(spec, x, 3000, rng=seed).routes
    sampled = routing.count_patterns(routes, spec).dataset
    exact = routing.exact_patterns(spec, x, n_threads=1)
    assert 1 <= sampled <= exact.count <= exact.arrangement_bound


@ESTIMATE_SETTINGS
@given(experts=st.integers(1, 3), n=st.integers(2, 6), seed=st.integers(0, 2**32))
def test_estimate_is_a_function_of_the_seed_alone(experts, n, seed):
    spec = moecover.MoESpec(experts=experts, top_k=1, d_model=2, expert_hidden=2)
    x = moecover.inputs.box(n, d_model=2, rng=seed)
    runs = [
        moecover.estimate_entropy(spec, x, 1500, deltas=[2.0, 1.0, 0.5], replicates=2, rng=seed, n_threads=threads)
        for threads in (1, 2, 1)
    ]
    dicts = [run.to_dict() for run in runs]
    for d in dicts:
        d["provenance"].pop("seconds")
        d["provenance"].pop("n_threads")
    assert dicts[0] == dicts[1] == dicts[2]

"""Exploration (definitions §7): samplers, the search, the classes of known image, and the
diagnostics that see what a sampler misses."""

import numpy as np
import pytest

import moecover
from moecover import CoverStream, added_centres, explore, image_coverage, known_image_class

# Classes whose image is a box known in closed form, at a scale where N(δ) is 3 375–4 096, and
# where uniform pushforwards are bell-shaped: each output a sum of d_model + 1 uniform coordinates.
KNOWN = [(4, 2, 0.32), (3, 4, 0.2), (6, 4, 0.75)]


@pytest.mark.parametrize("experts, d_model, delta", KNOWN)
def test_known_image_classes_have_the_image_they_claim(experts, d_model, delta):
    known = known_image_class(experts, d_model)
    assert 1000 <= known.covering_number(delta) <= 10_000
    spec, x = known.spec, known.inputs
    theta = moecover.sample_params(spec, 2000, rng=1, pinned=known.pinned, sampler="uniform")
    out = moecover.evaluate(spec, theta, x)
    values = out.values.reshape(2000, -1)
    assert (values >= known.low - 1e-12).all() and (values <= known.high + 1e-12).all()
    # input i reaches expert i under every θ: the pinned router's margin holds
    np.testing.assert_array_equal(out.routes[:, :, 0, 0], np.tile(np.arange(experts), (2000, 1)))
    # the box's corners are images: θ on the faces with the signs of each input's coordinates
    for sign in (1.0, -1.0):
        corner = theta[0].copy()
        for i in range(experts):
            weight = spec.param_block(f"layers.0.experts.{i}.weight")
            bias = spec.param_block(f"layers.0.experts.{i}.bias")
            corner[weight.offset : weight.offset + d_model] = sign * np.sign(x[i, 0])  # row 0 of A_i
            corner[bias.offset] = sign  # a_i[0]
        reached = moecover.evaluate(spec, corner, x).values.ravel()
        np.testing.assert_allclose(reached, known.high if sign > 0 else known.low, atol=1e-12)


def test_known_image_class_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="d_model"):
        known_image_class(2, 3)
    with pytest.raises(ValueError, match="experts"):
        known_image_class(5, 2)


def test_image_coverage_is_the_fraction_within_delta():
    centres = np.array([[0.0, 0.0], [3.0, 0.0]])
    points = np.array([[0.5, 0.5], [3.4, -0.9], [1.5, 0.0], [10.0, 0.0]])
    assert image_coverage(centres, points, 1.0) == 0.5
    with pytest.raises(ValueError, match="packing"):
        image_coverage(np.array([[0.0], [0.5]]), np.array([[0.0]]), 1.0)


def _assert_valid(found, spec, x, pinned):
    """Every row is f_θ of its θ, in the box, pins kept, rows pairwise farther than δ apart."""
    assert len(found) == len(found.params) == len(found.source)
    out = moecover.evaluate(spec, found.params, x)
    np.testing.assert_array_equal(found.values, out.values.reshape(len(found), -1))
    free = np.ones(spec.total_params, dtype=bool)
    for name, value in (pinned or {}).items():
        block = spec.param_block(name)
        free[block.offset : block.offset + block.size] = False
    assert np.abs(found.params[:, free]).max() <= spec.param_bound
    for name, value in (pinned or {}).items():
        block = spec.param_block(name)
        np.testing.assert_array_equal(found.params[:, block.offset : block.offset + block.size], np.tile(np.ravel(value), (len(found), 1)))
    # a packing: each row is farther than δ from every earlier one, so each opens its own centre
    net = moecover.greedy_net(found.values, found.delta)
    np.testing.assert_array_equal(net.centers, np.arange(len(found)))
    gaps = np.abs(found.values[:200, None, :] - found.values[None, :200, :]).max(axis=2)
    assert (gaps[~np.eye(len(gaps), dtype=bool)] > found.delta).all()


@pytest.mark.parametrize("experts, d_model, delta", KNOWN)
def test_the_search_covers_a_known_image_that_uniform_sampling_does_not(experts, d_model, delta):
    known = known_image_class(experts, d_model)
    points = known.uniform_points(20_000, rng=2)
    found = explore(known.spec, known.inputs, delta, 1_000_000, rng=0, pinned=known.pinned, sampler="uniform")
    _assert_valid(found, known.spec, known.inputs, known.pinned)
    assert found.evaluations <= 1_000_000
    searched = image_coverage(found.values, points, delta)
    values = moecover.evaluate_sampled(known.spec, known.inputs, 1_000_000, rng=0, pinned=known.pinned, sampler="uniform").values
    uniform = moecover.greedy_net(values.reshape(1_000_000, -1), delta)
    sampled = image_coverage(values.reshape(1_000_000, -1)[uniform.centers], points, delta)
    assert searched >= 0.95, (searched, sampled)
    assert sampled < 0.9, sampled  # the same budget of uniform samples leaves a tenth uncovered
    # every member is a certified packing point: the packing number is at least this, and so is N(δ/2)
    assert len(found) <= known.covering_number(delta / 2)


def test_exploration_is_the_same_for_any_thread_count_and_records_its_growth():
    spec = moecover.MoESpec(experts=4, top_k=1, d_model=2, expert="mlp", expert_hidden=2)
    x = moecover.inputs.box(8, seq_len=1, d_model=2, rng=0)
    one = explore(spec, x, 1.0, 30_000, rng=5, n_threads=1, batch=1000)
    two = explore(spec, x, 1.0, 30_000, rng=5, n_threads=2, batch=1000)
    np.testing.assert_array_equal(one.values, two.values)
    np.testing.assert_array_equal(one.params, two.params)
    assert one.evaluations == two.evaluations <= 30_000
    _assert_valid(one, spec, x, None)
    sizes = one.growth[:, 1]
    assert (np.diff(sizes) >= 0).all() and sizes[-1] == len(one)
    assert (np.diff(one.growth[:, 0]) >= 0).all() and one.growth[-1, 0] == one.evaluations
    assert sum(one.found_by.values()) == len(one)
    # patterns: every source's count is at most the union, which the sampler alone does not reach
    assert max(v for k, v in one.patterns.items() if k != "all") <= one.patterns["all"]
    assert one.patterns["all"] >= one.patterns["sampler"] > 0
    assert "members=" in repr(one)
    plain = one.to_dict()
    assert plain["evaluations"] == one.evaluations and len(plain["values"]) == len(one)


def test_a_pinned_search_keeps_its_pins_and_stops_when_nothing_is_left():
    # Constant experts, router pinned so input i reaches expert i: the image is a translate of the
    # cube [-1, 1]^3, whose δ-packings (δ = 0.45) have at most N_cov(δ/2) = ⌈1/0.225⌉^3 = 125 points,
    # and a packing that leaves no point of the cube farther than δ is a δ-cover: at least
    # ⌈1/0.45⌉^3 = 27. The search must stop by itself, long before its budget.
    spec = moecover.MoESpec(experts=3, top_k=1, d_model=1, expert="constant")
    x = moecover.inputs.one_per_expert(spec)
    pinned = moecover.inputs.one_per_expert_router(spec)
    found = explore(spec, x, 0.45, 10**6, rng=1, pinned=pinned, batch=256)
    _assert_valid(found, spec, x, pinned)
    assert found.stopped == "no new centres" and found.evaluations < 10**6
    assert 27 <= len(found) <= 125
    cube = np.random.default_rng(0).uniform(-1, 1, size=(20_000, 3)) + x[:, 0, 0]
    # what is left uncovered when it stops is slivers between balls, too small to hit by chance
    assert image_coverage(found.values, cube, 0.45) > 0.995


@pytest.mark.parametrize(
    "change, match",
    [
        ({"delta": 0.0}, "delta"),
        ({"delta": [1.0, 2.0]}, "delta"),
        ({"delta": float("nan")}, "delta"),
        ({"budget": 0}, "budget"),
        ({"budget": 2.5}, "budget"),
        ({"sampler": "gauss"}, "sampler"),
        ({"batch": 0}, "batch"),
        ({"progress": "yes"}, "progress"),
        ({"pinned": {"nope": [1.0]}}, "pinned|nope"),
    ],
)
def test_explore_names_its_bad_arguments(change, match):
    spec = moecover.MoESpec(experts=2, top_k=1, d_model=2, expert="linear")
    args = {"spec": spec, "inputs": np.zeros((2, 1, 2)), "delta": 1.0, "budget": 100, **change}
    with pytest.raises((ValueError, TypeError), match=match):
        explore(**args)


def test_rarefaction_and_singletons_follow_their_definitions():
    # m distinct far-apart points: every point opens a centre, so |net| = m and γ = 1, f1 = m
    far = np.arange(64, dtype=float)[:, None] * 10.0
    result = moecover.cover(far, [1.0])
    assert result.rarefaction[0] == pytest.approx(1.0)
    assert result.singletons[0] == 64 and result.unseen_mass[0] == 1.0
    # the same point 64 times: one centre from the start, γ = 0, and f1 = 0 (it has 63 companions)
    same = np.zeros((64, 3))
    result = moecover.cover(same, [1.0])
    assert result.rarefaction[0] == 0.0 and result.singletons[0] == 0
    # a net that doubles at every doubling of the points (n points at 16, 32, 64: sizes 4, 8, 16)
    doubling = np.zeros((64, 1))
    doubling[[0, 1, 2, 3]] = [[0], [10], [20], [30]]
    doubling[16:20] = [[40], [50], [60], [70]]
    doubling[32:40] = np.arange(80, 160, 10)[:, None]
    result = moecover.cover(doubling, [1.0])
    assert result.net_sizes[0] == 16 and result.rarefaction[0] == pytest.approx(1.0)
    # growth in the first doubling only (sizes 4, 8, 8 at 16, 32, 64): the slope over both doublings
    # is log(8/4) / log(64/16) = 1/2
    early = doubling.copy()
    early[32:] = 0.0
    assert moecover.cover(early, [1.0]).rarefaction[0] == pytest.approx(0.5)
    # too few points for three budgets: NaN, not a number the data cannot support
    assert np.isnan(moecover.cover(far[:7], [1.0]).rarefaction[0])


def test_singletons_and_rarefaction_are_the_same_for_any_chunking():
    points = np.random.default_rng(3).normal(size=(20_000, 3))
    whole = moecover.cover(points, [0.5, 1.0])
    stream = CoverStream([0.5, 1.0], 3)
    for chunk in np.array_split(points, 7):
        stream.add(chunk)
    parts = stream.result()
    np.testing.assert_array_equal(whole.singletons, parts.singletons)
    np.testing.assert_array_equal(whole.rarefaction, parts.rarefaction)
    # a chunk that fails leaves the singletons as they were
    bad = points[:10].copy()
    bad[5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        stream.add(bad)
    np.testing.assert_array_equal(stream.result().singletons, parts.singletons)


def test_rarefaction_sees_growth_that_tail_discovery_misses():
    # The quickstart class with 4 experts, top-1: at δ = 2 the last tenth of 500 000 uniform samples
    # opens almost no centre, yet the net still grows by a third per doubling of the samples.
    spec = moecover.MoESpec(experts=4, top_k=1, d_model=2, expert="mlp", expert_hidden=2)
    x = moecover.inputs.box(16, seq_len=1, d_model=2, rng=0)
    values = moecover.evaluate_sampled(spec, x, 500_000, rng=0, sampler="uniform").values.reshape(500_000, -1)
    result = moecover.cover(values, [2.0])
    assert result.tail_discovery[0] < 0.001 and result.unseen_mass[0] < 0.001
    assert result.rarefaction[0] > 0.2 and result.still_growing[0]
    # and the face sampler adds centres that no uniform sample came near
    faces = moecover.evaluate_sampled(spec, x, 100_000, rng=1, sampler="faces").values.reshape(100_000, -1)
    added = added_centres(values, faces, [2.0])
    assert added[0] > result.net_sizes[0]


def test_added_centres_counts_what_the_second_set_reaches_alone():
    first = np.zeros((10, 2))
    second = np.array([[0.5, 0.5], [5.0, 5.0], [5.2, 5.0], [9.0, 0.0]])
    np.testing.assert_array_equal(added_centres(first, second, [1.0, 0.1]), [2, 4])
    with pytest.raises(ValueError, match="columns"):
        added_centres(first, np.zeros((1, 3)), [1.0])


def test_estimates_record_their_sampler_and_diagnostics():
    spec = moecover.MoESpec(experts=2, top_k=1, d_model=2, expert="mlp", expert_hidden=2)
    x = moecover.inputs.box(6, seq_len=1, d_model=2, rng=0)
    for sampler in ("uniform", "faces"):
        estimate = moecover.estimate_entropy(spec, x, 4000, deltas=[2.0, 1.0, 0.5], replicates=2, rng=1, sampler=sampler)
        assert estimate.provenance["sampler"] == sampler
        assert estimate.rarefaction.shape == estimate.net_sizes.shape == estimate.unseen_mass.shape
        again = moecover.EntropyEstimate.from_dict(estimate.to_dict())
        np.testing.assert_array_equal(again.rarefaction, estimate.rarefaction)
    with pytest.raises(ValueError, match="sampler"):
        moecover.estimate_entropy(spec, x, 100, sampler="normal")

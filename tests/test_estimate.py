"""estimate_entropy: the definitions §4 contrast, regimes and extrapolation on known truths, the
union-bound table against nets built group by group, determinism, export, bad input."""

import json
import math
import warnings

import numpy as np
import pytest

from moecover import MoESpec, cover, evaluate_sampled, inputs, known_image_class, theory
from moecover.estimate import EntropyEstimate, EstimateWarning, estimate_entropy


def constant_experts_all_used(experts):
    """definitions §4: constant experts, k = 1, d_model = 1, the router pinned so input i reaches expert i."""
    spec = MoESpec(experts=experts, top_k=1, d_model=1, expert="constant")
    j = np.arange(experts, dtype=float)
    pinned = {"layers.0.router.weight": j.reshape(experts, 1), "layers.0.router.bias": -(j**2) * 0.1 / 2}
    return spec, pinned, (j * 0.1).reshape(experts, 1, 1)


@pytest.mark.parametrize("experts", [2, 3])
def test_slope_follows_the_total_not_the_active_count(experts):
    spec, pinned, x = constant_experts_all_used(experts)
    est = estimate_entropy(spec, x, 60_000, replicates=3, rng=0, pinned=pinned)
    assert abs(est.slope - experts) <= 0.2 * experts
    # the image is the cube [-1, 1]^M: r* = M, the nets resolve it, the extrapolation finds it
    assert est.functional_dimension == experts
    assert est.regime in ("pre_asymptotic", "asymptotic")
    assert abs(est.extrapolated_slope / experts - 1) <= 0.10
    lo, hi = est.extrapolated_interval
    assert lo <= experts <= hi
    assert est.predicted_slopes["paper"] == 1
    assert est.predicted_slopes["parametric"] == experts == est.predicted_slopes["data_dependent"]
    assert est.predicted_slopes["functional"] == experts and est.predicted_slopes["ambient"] == experts
    assert est.routing["dataset"] == 1  # the pinned router sends every sample the same way
    assert est.union_bound["patterns_exact"] == 1
    np.testing.assert_allclose(est.union_ratio, 1.0)
    np.testing.assert_allclose(est.union_bound["routing_overhead"], 0.0)
    assert est.warnings == []


@pytest.fixture(scope="module")
def small():
    spec = MoESpec(experts=3, top_k=1, d_model=2, expert_hidden=2)
    x = inputs.box(6, d_model=2, rng=1)
    with pytest.warns(EstimateWarning):  # 8 000 samples leave this class sample-limited
        est = estimate_entropy(spec, x, 8_000, replicates=2, rng=5, n_threads=1)
    return spec, x, est


def test_fields_have_documented_shapes_and_invariants(small):
    spec, x, est = small
    s = len(est.deltas)
    assert (np.diff(est.deltas) < 0).all()
    assert est.net_sizes.shape == est.tail_discovery.shape == est.rarefaction.shape == (2, s)
    assert (np.diff(est.net_sizes, axis=1) >= 0).mean() > 0.9  # finer scales, bigger nets (mostly)
    assert (est.log_covering_min <= est.log_covering).all() and (est.log_covering <= est.log_covering_max).all()
    assert est.local_slopes.shape == (s - 1,)
    lo, hi = est.slope_interval
    assert lo <= est.slope <= hi or np.isnan(est.slope)
    assert set(est.slope_scales) <= set(est.deltas)
    # complete scales are those whose nets stopped growing in every replicate
    complete = np.isin(est.deltas, est.slope_scales)
    assert (np.nan_to_num(est.rarefaction[:, complete]) <= 0.1).all()
    assert np.isnan(est.log_content[~complete]).all() and np.isfinite(est.log_content[complete]).all()
    assert set(est.theory_curves) == {"paper", "parametric", "data_dependent"}
    assert all(c.shape == (s,) for c in est.theory_curves.values())
    assert est.predicted_slopes["paper"] == spec.active_params
    assert est.predicted_slopes["parametric"] == spec.total_params
    assert est.predicted_slopes["ambient"] == 6
    assert 0 < est.functional_dimension <= 6 and len(est.rank_by_inputs) == 6
    assert (np.diff(est.rank_by_inputs) >= 0).all() and est.rank_by_inputs[-1] == est.functional_dimension
    assert est.regime in ("sample_limited", "pre_asymptotic", "asymptotic")
    assert (est.union_ratio >= 1.0 - 1e-12).all()  # a union of group nets is never smaller
    assert est.provenance["samples"] == 8_000 and est.provenance["seed"] == 5


def test_union_bound_table_equals_nets_built_group_by_group(small):
    """Recomputed from replicate 0's samples with NumPy grouping and one `cover` per group."""
    spec, x, est = small
    out = evaluate_sampled(spec, x, 8_000, rng=est.provenance["replicate_seeds"][0])
    values = out.values.reshape(8_000, -1)
    patterns, group = np.unique(out.routes.reshape(8_000, -1), axis=0, return_inverse=True)
    group = group.ravel()
    union = sum(cover(values[group == g], est.deltas).net_sizes for g in range(len(patterns)))
    largest = np.max([cover(values[group == g], est.deltas).net_sizes for g in range(len(patterns))], axis=0)
    table = est.union_bound
    assert table["patterns_sampled"] == len(patterns) == est.routing["dataset"]
    np.testing.assert_array_equal(table["union_sizes"], union)
    np.testing.assert_array_equal(table["largest_group_sizes"], largest)
    np.testing.assert_allclose(table["union_ratio"], union / est.net_sizes[0])
    np.testing.assert_allclose(table["routing_overhead"], np.log(union) - np.log(largest))
    assert np.isfinite(table["union_ratio"]).all()
    assert table["paper_routing_term"] == pytest.approx(math.log(math.e * 3))  # L_T ℓ k log(eM/k)
    assert table["log_patterns_per_input"] == pytest.approx(math.log(3))  # log C(3, 1)
    # exact enumeration applies (one layer, no attention): the samples realise some of the patterns
    assert table["patterns_exact"] is not None and table["patterns_sampled"] <= table["patterns_exact"]
    # the data-dependent slope is the largest count any realised pattern uses (definitions §4)
    used = [theory.used_params(spec, p.reshape(6, 1, 1)) for p in patterns]
    assert est.predicted_slopes["data_dependent"] == max(used)
    assert theory.used_params(spec, est.data_dependent_pattern) == max(used)


def test_without_routing_groups_the_patterns_are_still_counted(small):
    spec, x, est = small
    with pytest.warns(EstimateWarning):
        plain = estimate_entropy(spec, x, 8_000, replicates=1, rng=5, by_routing=False)
    assert np.isnan(plain.union_ratio).all() and plain.group_net_sizes == {}
    assert plain.routing["dataset"] == est.routing["dataset"]
    assert plain.predicted_slopes["data_dependent"] == est.predicted_slopes["data_dependent"]
    np.testing.assert_array_equal(plain.net_sizes[0], est.net_sizes[0])


def test_a_sample_limited_estimate_warns_and_keeps_its_warnings(small):
    spec, x, est = small
    assert est.regime == "sample_limited"
    assert np.isnan(est.extrapolated_slope) or est.warnings
    assert est.warnings and all(isinstance(w, str) for w in est.warnings)
    assert not est.ratio_meaningful


def test_explored_members_come_first_and_are_recorded(small):
    spec, x, _ = small
    with pytest.warns(EstimateWarning):
        est = estimate_entropy(spec, x, 2_000, replicates=1, rng=3, explore=3_000, functional_samples=20)
    assert est.provenance["explore"] == 3_000 and est.provenance["explored_members"][0] > 0
    # the search's members join the samples in both the nets and the routing groups
    assert est.routing["samples_grouped"] == 2_000 + est.provenance["explored_members"][0]


def test_replicates_are_independent_samples(small):
    spec, x, est = small
    seeds = est.provenance["replicate_seeds"]
    assert len(set(seeds)) == len(seeds) == 2 and est.provenance["seed"] not in seeds
    # different samples give different nets at some scale (equal everywhere would mean the
    # replicates re-ran the same samples, and the error bars would be zero by construction)
    assert (est.net_sizes[0] != est.net_sizes[1]).any()
    assert est.log_covering_min.sum() < est.log_covering_max.sum()


def test_same_seed_same_estimate_for_one_and_two_threads(small):
    spec, x, est = small
    with pytest.warns(EstimateWarning):
        again = estimate_entropy(spec, x, 8_000, replicates=2, rng=5, n_threads=2)
    np.testing.assert_array_equal(again.net_sizes, est.net_sizes)
    np.testing.assert_array_equal(again.deltas, est.deltas)
    np.testing.assert_equal((again.slope, again.lipschitz), (est.slope, est.lipschitz))  # NaN equals NaN here
    np.testing.assert_array_equal(again.union_ratio, est.union_ratio)
    np.testing.assert_array_equal(again.union_bound["union_sizes"], est.union_bound["union_sizes"])
    assert again.functional_dimension == est.functional_dimension and again.regime == est.regime


def test_to_dict_survives_a_json_round_trip(small):
    _, _, est = small
    data = json.loads(json.dumps(est.to_dict()))
    back = EntropyEstimate.from_dict(data)
    np.testing.assert_array_equal(back.net_sizes, est.net_sizes)
    np.testing.assert_array_equal(back.union_ratio, est.union_ratio)
    np.testing.assert_equal(back.slope, est.slope)
    assert back.predicted_slopes == est.predicted_slopes
    assert back.regime == est.regime and back.warnings == est.warnings
    assert json.loads(json.dumps(back.to_dict())) == data


def test_an_estimate_stored_before_regimes_still_loads(small):
    _, _, est = small
    data = json.loads(json.dumps(est.to_dict()))
    for key in ("regime", "functional_dimension", "extrapolated_slope", "union_bound", "warnings", "log_content"):
        del data[key]
    old = EntropyEstimate.from_dict(data)
    assert old.regime == "unknown" and old.functional_dimension == -1 and old.union_bound == {}


def known_truth(r, expert, samples, seed):
    """An estimate on the image of known dimension r (a box; bell-shaped pushforward with linear
    experts, uniform with constant ones), on 13 scales from half its side down by √2 steps."""
    known = known_image_class(experts=r, d_model=4, expert=expert)
    side = float((known.high - known.low).max())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        return estimate_entropy(known.spec, known.inputs, samples, deltas=side / 2 * 2.0 ** (-np.arange(13) / 2),
                                rng=seed, pinned=known.pinned, functional_samples=20)


@pytest.mark.parametrize(("r", "expert", "samples"), [(1, "linear", 30_000), (2, "linear", 60_000), (2, "constant", 30_000)])
def test_extrapolated_slope_finds_known_dimensions(r, expert, samples):
    """definitions §8 on 20 seeds: wherever the regime is not sample-limited, the extrapolated
    slope is within 10 % of r, and its interval holds r in at least 90 % of the 20 seeds
    (the larger r are in benches/known_truths.py)."""
    estimates = [known_truth(r, expert, samples, seed) for seed in range(20)]
    measured = [e for e in estimates if e.regime != "sample_limited"]
    assert len(measured) >= 15, [e.regime for e in estimates]
    assert all(e.functional_dimension == r for e in estimates)
    for e in measured:
        assert abs(e.extrapolated_slope / r - 1) <= 0.10, (e.extrapolated_slope, e.extrapolated_interval)
    held = sum(e.extrapolated_interval[0] <= r <= e.extrapolated_interval[1] for e in estimates)
    assert held >= 18, [e.extrapolated_interval for e in estimates]


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(samples=0), ValueError, "samples"),
        (dict(replicates=0), ValueError, "replicates"),
        (dict(deltas=[1.0, -0.5]), ValueError, "deltas"),
        (dict(deltas=[]), ValueError, "deltas"),
        (dict(inputs=np.zeros((4, 1, 3))), ValueError, "inputs"),
        (dict(pinned={"layers.0.router.bias": np.zeros(2)}), ValueError, "pinned"),
        (dict(explore=-1), ValueError, "explore"),
        (dict(functional_samples=0), ValueError, "functional_samples"),
    ],
)
def test_bad_input(kwargs, error, name):
    args = dict(spec=MoESpec(experts=3, d_model=2), inputs=np.zeros((4, 1, 2)), samples=100, rng=0)
    args.update(kwargs)
    with pytest.raises(error, match=name):
        estimate_entropy(**args)


def test_plot_writes_a_png(small, tmp_path):
    import matplotlib.image

    _, _, est = small
    path = tmp_path / "estimate.png"
    est.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(str(path))
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not blank


def test_to_frame_has_one_row_per_scale(small):
    _, _, est = small
    frame = est.to_frame()
    assert len(frame) == len(est.deltas)
    np.testing.assert_array_equal(frame["delta"], est.deltas)
    assert frame["in_slope_fit"].sum() == len(est.slope_scales)
    np.testing.assert_array_equal(frame["theory_paper"], est.theory_curves["paper"])


@pytest.mark.parametrize(("argument", "value"), [("samples", 2**64), ("replicates", 2**31)])
def test_sizes_that_would_never_finish_are_refused_at_once(argument, value):
    from moecover import MoESpec, estimate_entropy, inputs

    spec = MoESpec(experts=2, d_model=2, expert_hidden=2)
    kwargs = {"samples": 100, "replicates": 1, argument: value}
    with pytest.raises(ValueError, match=f"^{argument}: (at most|must be <=)"):
        estimate_entropy(spec, inputs.box(4, d_model=2, rng=0), kwargs.pop("samples"), rng=0, **kwargs)


def test_extrapolation_recovers_the_exclusion_model_exactly_and_its_interval_holds_each_window():
    """On N(δ) = ρ (D/δ + 1)^r exactly, the fit is r; with the coarsest scale disturbed, the
    interval still holds the fits without the coarsest and without the finest scale (by NumPy's
    polyfit here), and at least ±MODEL_ERROR."""
    from moecover import _fit

    deltas = 3.0 * 2.0 ** (-np.arange(8) / 2)
    z = np.log(6.0 / deltas + 1.0)
    exact = np.log(0.7) + 3.0 * z
    fitted = np.ones(8, dtype=bool)
    clean = _fit.extrapolate(deltas, np.vstack([exact, exact]), fitted, diameter=6.0)
    assert clean.slope == pytest.approx(3.0, rel=1e-12)
    assert clean.interval[0] <= 3.0 * (1 - _fit.MODEL_ERROR) + 1e-9 and clean.interval[1] >= 3.0 * (1 + _fit.MODEL_ERROR) - 1e-9
    disturbed = exact.copy()
    disturbed[0] += 1.5  # a coarse net far above the model
    result = _fit.extrapolate(deltas, np.vstack([disturbed, disturbed]), fitted, diameter=6.0)
    for window in (slice(1, None), slice(None, -1)):
        slope = np.polyfit(z[window], disturbed[window], 1)[0]
        assert result.interval[0] <= slope <= result.interval[1]
    # too few scales, or too narrow a span: no extrapolation
    assert _fit.extrapolate(deltas, np.vstack([exact]), np.arange(8) < 4, diameter=6.0) is None
    assert _fit.extrapolate(deltas, np.vstack([exact]), np.arange(8) < 5, diameter=6.0) is None  # span 4 < 5

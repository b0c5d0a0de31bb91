"""estimate_entropy: the definitions §4 contrast, determinism, fields, export, bad input."""

import json

import numpy as np
import pytest

from moecover import MoESpec, inputs
from moecover.estimate import EntropyEstimate, estimate_entropy


def constant_experts_all_used(experts):
    """definitions §4: constant experts, k = 1, d_model = 1, the router pinned so input i reaches expert i."""
    spec = MoESpec(experts=experts, top_k=1, d_model=1, expert="constant")
    j = np.arange(experts, dtype=float)
    pinned = {"layers.0.router.weight": j.reshape(experts, 1), "layers.0.router.bias": -(j**2) * 0.1 / 2}
    return spec, pinned, (j * 0.1).reshape(experts, 1, 1)


@pytest.mark.parametrize("experts", [2, 3])
def test_slope_follows_the_total_not_the_active_count(experts):
    spec, pinned, x = constant_experts_all_used(experts)
    est = estimate_entropy(spec, x, 60_000, replicates=2, rng=0, pinned=pinned)
    assert abs(est.slope - experts) <= 0.2 * experts
    assert est.predicted_slopes["paper"] == 1
    assert est.predicted_slopes["parametric"] == experts == est.predicted_slopes["data_dependent"]
    assert est.routing["dataset"] == 1  # the pinned router sends every sample the same way
    np.testing.assert_allclose(est.union_ratio, 1.0)


@pytest.fixture(scope="module")
def small():
    spec = MoESpec(experts=3, top_k=1, d_model=2, expert_hidden=2)
    x = inputs.box(6, d_model=2, rng=1)
    # at most 3^6 = 729 routing groups: keep a net for each
    return spec, x, estimate_entropy(spec, x, 8_000, replicates=2, rng=5, n_threads=1, max_groups=729)


def test_fields_have_documented_shapes_and_invariants(small):
    spec, x, est = small
    s = len(est.deltas)
    assert (np.diff(est.deltas) < 0).all()
    assert est.net_sizes.shape == est.tail_discovery.shape == (2, s)
    assert (np.diff(est.net_sizes, axis=1) >= 0).mean() > 0.9  # finer scales, bigger nets (mostly)
    assert (est.log_covering_min <= est.log_covering).all() and (est.log_covering <= est.log_covering_max).all()
    assert est.local_slopes.shape == (s - 1,)
    lo, hi = est.slope_interval
    assert lo <= est.slope <= hi or np.isnan(est.slope)
    assert set(est.slope_scales) <= set(est.deltas)
    assert set(est.theory_curves) == {"paper", "parametric", "data_dependent"}
    assert all(c.shape == (s,) for c in est.theory_curves.values())
    assert est.predicted_slopes["paper"] == spec.active_params
    assert est.predicted_slopes["parametric"] == spec.total_params
    assert (est.union_ratio >= 1.0 - 1e-12).all()  # a union of group nets is never smaller
    assert est.routing["dataset"] <= est.routing["dataset_all_samples"]
    assert est.provenance["samples"] == 8_000 and est.provenance["seed"] == 5


def test_replicates_are_independent_samples(small):
    spec, x, est = small
    seeds = est.provenance["replicate_seeds"]
    assert len(set(seeds)) == len(seeds) == 2 and est.provenance["seed"] not in seeds
    # different samples give different nets at some scale (equal everywhere would mean the
    # replicates re-ran the same samples, and the error bars would be zero by construction)
    assert (est.net_sizes[0] != est.net_sizes[1]).any()
    assert est.log_covering_min.sum() < est.log_covering_max.sum()


def test_too_many_groups_leave_the_union_ratio_unknown(small):
    spec, x, est = small
    assert est.routing["dataset_all_samples"] > 3
    capped = estimate_entropy(spec, x, 8_000, replicates=1, rng=5, max_groups=3)
    assert np.isnan(capped.union_ratio).all() and capped.group_net_sizes == {}
    np.testing.assert_array_equal(capped.net_sizes[0], est.net_sizes[0])


def test_same_seed_same_estimate_for_one_and_two_threads(small):
    spec, x, est = small
    again = estimate_entropy(spec, x, 8_000, replicates=2, rng=5, n_threads=2, max_groups=729)
    np.testing.assert_array_equal(again.net_sizes, est.net_sizes)
    np.testing.assert_array_equal(again.deltas, est.deltas)
    assert again.slope == est.slope and again.lipschitz == est.lipschitz
    np.testing.assert_array_equal(again.union_ratio, est.union_ratio)


def test_to_dict_survives_a_json_round_trip(small):
    _, _, est = small
    data = json.loads(json.dumps(est.to_dict()))
    back = EntropyEstimate.from_dict(data)
    np.testing.assert_array_equal(back.net_sizes, est.net_sizes)
    np.testing.assert_array_equal(back.union_ratio, est.union_ratio)
    assert back.slope == est.slope and back.predicted_slopes == est.predicted_slopes
    assert json.loads(json.dumps(back.to_dict())) == data


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(samples=0), ValueError, "samples"),
        (dict(replicates=0), ValueError, "replicates"),
        (dict(deltas=[1.0, -0.5]), ValueError, "deltas"),
        (dict(deltas=[]), ValueError, "deltas"),
        (dict(inputs=np.zeros((4, 1, 3))), ValueError, "inputs"),
        (dict(pinned={"layers.0.router.bias": np.zeros(2)}), ValueError, "pinned"),
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

"""Targets of known d and β (`moecover.targets`) and the estimators of d and β (`moecover.manifold`),
at sizes small enough for the test suite; the full validation is examples/manifold_study.py."""

import math
import sys

import numpy as np
import pytest

from moecover import inputs, manifold
from moecover.targets import RegressionProblem

# --- targets ---------------------------------------------------------------------------------


def test_a_one_term_weierstrass_target_is_the_cosine_it_names():
    problem = RegressionProblem("box", 2, 2, beta=0.5, terms=1)
    x = problem.inputs(50, rng=3)
    g = np.random.default_rng([0, 0x7A12])  # the problem's coefficients, drawn as documented
    u = g.normal(size=(1, 2))
    u /= np.linalg.norm(u)
    phase = g.uniform(0, 2 * np.pi, size=1)
    # one term, amplitude normalised to variance 1 over phases: √2 cos(⟨u, x⟩ + φ)
    np.testing.assert_allclose(problem.target(x), math.sqrt(2) * np.cos(x @ u[0] + phase[0]), rtol=1e-12)


def test_a_kink_sum_has_its_kinks_where_the_offsets_are():
    problem = RegressionProblem("box", 1, 1, beta=0.5, kind="kinks", terms=1)
    g = np.random.default_rng([0, 0x7A12])
    u = g.normal(size=(1, 1))
    u /= np.abs(u)
    offset = g.uniform(-0.5, 0.5, size=1)[0]
    weight = g.normal(size=1)[0]
    x = np.linspace(-1, 1, 41)[:, None]
    np.testing.assert_allclose(problem.target(x), weight * np.abs(u[0, 0] * x[:, 0] - offset) ** 0.5, rtol=1e-12)


def test_draws_lie_on_one_manifold_and_the_target_does_not_depend_on_the_ambient():
    low = RegressionProblem("sphere", 2, 3, beta=0.6, seed=4)
    high = RegressionProblem("sphere", 2, 30, beta=0.6, seed=4)
    a, b = high.sample(200, rng=1), high.sample(200, rng=2)
    assert np.linalg.matrix_rank(np.vstack([a.x, b.x]), tol=1e-9) == 3  # both draws in one 3-space
    np.testing.assert_allclose(np.linalg.norm(a.x, axis=1), 1, atol=1e-12)
    # the same points in the native space give the same values: the target is the manifold's
    native = low.inputs(200, rng=np.random.default_rng([1, 1]))
    np.testing.assert_allclose(low.target(native), a.f, atol=1e-10)


def test_weierstrass_targets_have_variance_of_order_one_and_the_noise_its_sigma():
    problem = RegressionProblem("sphere", 1, 2, beta=0.4, noise=0.3)
    sample = problem.sample(20_000, rng=0)
    assert 0.4 < sample.f.var() < 1.1  # Σ a_k²/2 = 1, less what the slow terms do not oscillate
    assert abs(np.std(sample.y - sample.f) - 0.3) < 0.01
    again = problem.sample(20_000, rng=0)
    assert np.array_equal(again.y, sample.y)
    assert problem.theory_exponent == pytest.approx(0.8 / 1.8)


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"manifold": "sphere", "d": 3, "ambient": 3}, "d"),
        ({"manifold": "box", "d": 4, "ambient": 2}, "d"),
        ({"manifold": "torus", "d": 3, "ambient": 6}, "d"),
        ({"beta": 0.0}, "beta"),
        ({"beta": -1.0}, "beta"),
        ({"beta": 1.0}, "beta"),  # Weierstrass sums need beta < 1
        ({"noise": -0.1}, "noise"),
        ({"kind": "smooth"}, "kind"),
        ({"manifold": "cube"}, "manifold"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_problems_are_refused_naming_the_argument(arguments, name):
    with pytest.raises((ValueError, TypeError), match=f"^{name}:"):
        RegressionProblem(**arguments)


def test_inputs_of_another_shape_are_refused():
    with pytest.raises(ValueError, match="^x:"):
        RegressionProblem("sphere", 1, 2).target(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="^x:"):
        RegressionProblem("sphere", 1, 2).target(np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="^n:"):
        RegressionProblem("sphere", 1, 2).sample(0)


# --- intrinsic dimension ---------------------------------------------------------------------


@pytest.mark.parametrize(("points", "d"), [
    (lambda: inputs.sphere(1500, d_model=3, rng=1), 2),
    (lambda: inputs.sphere(1500, d_model=12, dim=1, rng=2), 1),
    (lambda: inputs.torus(1500, d_model=10, rng=3), 2),
])
def test_a_known_dimension_is_recovered_by_every_method(points, d):
    estimate = manifold.intrinsic_dimension(points(), subsamples=3, rng=0)
    assert set(estimate.estimates) == {"mle", "twonn", "corrint"}
    for method, (value, low, high) in estimate.estimates.items():
        assert abs(value - d) < 0.3, (method, value)
        assert low < value < high
    # rows against scale: every (method, size, neighbourhood) asked for
    assert {(r.method, r.n, r.neighbours) for r in estimate.rows} >= {("mle", estimate.points, 10), ("twonn", estimate.points, None)}


def test_moecover_inputs_give_their_tokens_as_points():
    x = inputs.sphere(400, seq_len=3, d_model=3, rng=5)
    estimate = manifold.intrinsic_dimension(x, methods=("mle",), subsamples=0, rng=0)
    assert estimate.points == 1200 and estimate.ambient == 3
    assert math.isnan(estimate.estimates["mle"][1])  # no intervals asked for: NaN, documented


def test_duplicates_are_removed_and_counted_never_a_nan():
    x = inputs.sphere(800, d_model=3, rng=1)
    doubled = np.vstack([x, x[:300]])
    estimate = manifold.intrinsic_dimension(doubled, methods=("twonn", "mle"), subsamples=2, rng=0)
    assert estimate.duplicates == 300 and estimate.points == 800
    assert all(np.isfinite(v) for values in estimate.estimates.values() for v in values)
    assert "300 duplicates removed" in repr(estimate)


def test_a_lattice_is_refused_for_twonn_instead_of_an_estimate_of_zero():
    line = np.zeros((300, 3))
    line[:, 0] = np.arange(300)
    with pytest.raises(ValueError, match="^points: .*lattice"):
        manifold.intrinsic_dimension(line, methods=("twonn",), subsamples=0)
    assert manifold.intrinsic_dimension(line, methods=("mle",), subsamples=0).estimates["mle"][0] > 0.5


def test_the_same_seed_gives_the_same_estimate():
    x = inputs.torus(600, d_model=4, rng=2)
    a = manifold.intrinsic_dimension(x, subsamples=2, rng=7)
    b = manifold.intrinsic_dimension(x, subsamples=2, rng=7)
    assert a.to_dict() == b.to_dict()


def test_bad_dimension_input_is_refused_naming_the_argument():
    x = inputs.sphere(300, d_model=3, rng=1).reshape(300, 3)
    with pytest.raises(ValueError, match="^points:"):
        manifold.intrinsic_dimension(np.vstack([x[:5], [[np.nan, 0, 0]]]))
    with pytest.raises(ValueError, match="^sizes:"):
        manifold.intrinsic_dimension(x[:30], neighbours=(20,))
    with pytest.raises(ValueError, match="^methods:"):
        manifold.intrinsic_dimension(x, methods=("pca",))
    with pytest.raises(ValueError, match="^points:"):
        manifold.intrinsic_dimension(np.zeros((1, 3)))


# --- smoothness ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "d", "ambient", "beta"), [("sphere", 1, 2, 0.4), ("sphere", 2, 3, 0.6)])
def test_increments_recover_beta_on_a_noiseless_rough_target(kind, d, ambient, beta):
    problem = RegressionProblem(kind, d, ambient, beta)
    sample = problem.sample(2000, rng=1)
    estimate = manifold.smoothness(sample.x, sample.y, bootstrap=40, rng=0)
    assert abs(estimate.beta - beta) < 0.1
    assert estimate.interval[0] <= estimate.beta <= estimate.interval[1]
    assert estimate.noise_variance < 1e-3


def test_increments_read_the_noise_floor():
    problem = RegressionProblem("sphere", 1, 2, 0.5, noise=0.1)
    sample = problem.sample(4000, rng=1)
    estimate = manifold.smoothness(sample.x, sample.y, bootstrap=0, rng=0)
    assert estimate.noise_variance == pytest.approx(0.01, rel=0.2)
    assert abs(estimate.beta - 0.5) < 0.15


def test_a_kink_sum_reads_smoother_than_a_rough_target_of_the_same_beta():
    rough = RegressionProblem("sphere", 1, 2, 0.5).sample(2000, rng=1)
    kinks = RegressionProblem("sphere", 1, 2, 0.5, kind="kinks").sample(2000, rng=1)
    assert manifold.smoothness(kinks.x, kinks.y, bootstrap=0).beta > manifold.smoothness(rough.x, rough.y, bootstrap=0).beta + 0.2


def test_the_learning_curve_inversion_recovers_beta_roughly_and_the_exponent_its_theory():
    problem = RegressionProblem("sphere", 1, 2, 0.5, noise=0.5)
    sample = problem.sample(8000, rng=2)
    estimate = manifold.smoothness(sample.x, sample.y, d=1, method="learning_curve", targets=sample.f, rng=0)
    assert abs(estimate.exponent - problem.theory_exponent) < 0.1
    assert abs(estimate.beta - 0.5) < 0.25  # inversion amplifies the exponent's error
    assert estimate.exponent_interval[0] < estimate.exponent < estimate.exponent_interval[1]
    assert len(estimate.details["ns"]) == 6


def test_a_learning_curve_on_the_data_alone_subtracts_the_noise_it_reads():
    problem = RegressionProblem("sphere", 1, 2, 0.3, noise=0.5)
    sample = problem.sample(8000, rng=3)
    curve = manifold.knn_learning_curve(sample.x, sample.y, ns=[100, 300, 1000], rng=0)
    assert curve.noise_variance == pytest.approx(0.25, rel=0.1)
    assert (np.diff(curve.risks.mean(1)) < 0).all()  # risk falls with n
    assert 0.2 < curve.exponent < 0.7


def test_bad_smoothness_input_is_refused_naming_the_argument():
    x = inputs.sphere(200, d_model=3, rng=1).reshape(200, 3)
    y = np.zeros(200)
    with pytest.raises(ValueError, match="^d:"):
        manifold.smoothness(x, y, d=4)
    with pytest.raises(ValueError, match="^d:"):
        manifold.smoothness(x, y, d=0)
    with pytest.raises(ValueError, match="^points:"):
        manifold.smoothness(x[:5], y[:5], neighbours=10)
    with pytest.raises(ValueError, match="^values:"):
        manifold.smoothness(x, y[:10])
    with pytest.raises(ValueError, match="^values:"):
        manifold.smoothness(x, np.full(200, np.nan))
    with pytest.raises(ValueError, match="^method:"):
        manifold.smoothness(x, y, method="wavelets")
    with pytest.raises(ValueError, match="^ns:"):
        manifold.knn_learning_curve(x, y, ns=[100, 150])


def test_without_scikit_dimension_the_error_says_what_to_install(monkeypatch):
    from moecover._checks import MissingDependency

    monkeypatch.setitem(sys.modules, "skdim", None)
    with pytest.raises(MissingDependency, match=r'pip install "moecover\[manifold\]"'):
        manifold.intrinsic_dimension(np.random.default_rng(0).normal(size=(100, 2)))

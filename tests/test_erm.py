"""Least squares over the class (`moecover.erm`): the JAX model equals `moecover.evaluate` on every
option combination, fits are deterministic and stay in the box, learning curves fall with n, the
k-NN calibration recovers a known exponent, and bad input is refused."""

import numpy as np
import pytest

import moecover
from moecover import erm
from moecover.targets import RegressionProblem
from reference import OPTIONS, option_case


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_the_jax_model_equals_evaluate(options):
    _, spec, theta, x = option_case(options)
    reference = moecover.evaluate(spec, theta, x)
    values, routes = erm.evaluate(spec, theta, x)
    np.testing.assert_allclose(values, reference.values, rtol=0, atol=1e-10)
    assert routes.dtype == reference.routes.dtype and np.array_equal(routes, reference.routes)


def test_routes_agree_at_exact_router_ties():
    spec = moecover.MoESpec(experts=4, top_k=2, d_model=2, expert="linear")
    theta = moecover.sample_params(spec, 1, rng=3, sampler="uniform")[0]
    router = spec.param_block("layers.0.router.weight")
    bias = spec.param_block("layers.0.router.bias")
    weights = theta[router.offset: router.offset + router.size].reshape(router.shape)
    weights[2] = weights[1]  # experts 1 and 2 score the same on every input
    theta[router.offset: router.offset + router.size] = weights.ravel()
    theta[bias.offset + 2] = theta[bias.offset + 1]
    x = np.random.default_rng(0).uniform(-1, 1, (40, 1, 2))
    reference = moecover.evaluate(spec, theta, x)
    values, routes = erm.evaluate(spec, theta, x)
    assert np.array_equal(routes, reference.routes)
    np.testing.assert_allclose(values, reference.values, rtol=0, atol=1e-12)


SMALL = moecover.MoESpec(experts=2, top_k=1, d_model=2, expert="mlp", expert_hidden=3)


def test_a_fit_is_deterministic_stays_in_the_box_and_beats_its_start():
    problem = RegressionProblem("sphere", 1, 2, 0.8, noise=0.1)
    sample = problem.sample(200, rng=1)
    one = erm.fit(SMALL, sample.x, sample.y, starts=2, steps=300, rng=5)
    two = erm.fit(SMALL, sample.x, sample.y, starts=2, steps=300, rng=5)
    assert np.array_equal(one.theta, two.theta) and np.array_equal(one.trace, two.trace)
    assert np.abs(one.theta).max() <= SMALL.param_bound
    assert one.theta.shape == (1, SMALL.total_params)
    start = moecover.sample_params(SMALL, 2, rng=5, sampler="uniform")
    start_risk = min(np.mean((moecover.evaluate(SMALL, t, sample.x[:, None, :]).values[:, 0] - sample.y) ** 2) for t in start)
    assert one.train_risk[0] < 0.5 * start_risk
    # the fitted θ is a θ of the class: moecover's own evaluation gives the same function
    np.testing.assert_allclose(one.predict(sample.x), moecover.evaluate(SMALL, one.theta[0], sample.x[:, None, :]).values,
                               rtol=0, atol=1e-10)


def test_risks_fall_with_n_on_an_easy_problem():
    problem = RegressionProblem("sphere", 1, 2, 0.9, noise=1.0, terms=2)  # two slow cosines: easy to fit
    curve = erm.learning_curve(SMALL, problem, [20, 1000], seeds=3, rng=0, steps=600, starts=6, test_size=500)
    assert curve.risks[1].mean() < 0.7 * curve.risks[0].mean()  # on average over seeds: one fit can stall
    assert curve.exponent > 0 and curve.theory_exponent == pytest.approx(problem.theory_exponent)


def test_a_curve_keeps_its_fitted_thetas_which_moecover_evaluates_to_its_risks():
    problem = RegressionProblem("sphere", 1, 2, 0.9, noise=1.0, terms=2)
    curve = erm.learning_curve(SMALL, problem, [20, 60], seeds=2, rng=1, steps=100, starts=1, test_size=300)
    test = problem.sample(300, rng=np.random.default_rng([curve.seed, 1]))  # the curve's test set, as documented
    for row, record in enumerate(curve.details["fits"]):
        theta = np.asarray(record["theta"])
        assert theta.shape == (2, SMALL.total_params)
        for s in range(2):
            values = moecover.evaluate(SMALL, theta[s], test.x[:, None, :]).values[:, 0]
            assert np.mean((values - test.f) ** 2) == pytest.approx(curve.risks[row, s], rel=1e-9)


def test_sigint_stops_a_fit_within_a_second():
    from interrupts import seconds_to_stop

    setup = """
    import numpy as np, moecover
    from moecover import erm
    spec = moecover.MoESpec(experts=2, top_k=1, d_model=2, expert="mlp", expert_hidden=3)
    x = np.random.default_rng(0).uniform(-1, 1, (2000, 2)); y = x[:, 0]
    erm.fit(spec, x[:50], y[:50], steps=50)  # compiled once, so that the interrupt meets the loop
    """
    assert seconds_to_stop(setup, "erm.fit(spec, x, y, steps=10**7, patience=10**9)", delay=3.0) < 1.0


def test_knn_calibration_recovers_the_minimax_exponent():
    # k-NN with k = n^(2β/(2β+d)) attains n^(-2β/(2β+d)) for β ≤ 1: the harness must find it
    problem = RegressionProblem("sphere", 1, 2, 0.8, noise=0.5)
    curve = erm.learning_curve("knn", problem, [250, 1000, 4000, 16000], seeds=3, rng=0, test_size=4000)
    assert abs(curve.exponent - problem.theory_exponent) < 0.08
    assert curve.interval[0] < curve.exponent < curve.interval[1]
    assert curve.sizes == [int(np.ceil(n ** problem.theory_exponent)) for n in curve.ns]


def test_the_schedule_follows_section_four():
    problem = RegressionProblem("sphere", 1, 2, 0.5)
    schedule = erm.neff_schedule(problem)
    sizes = [moecover.theory.paper_slope(schedule(n)) for n in (100, 1000, 10000, 100000)]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    targets = [moecover.theory.optimal_active_params(n, 0.5, 1) for n in (100, 1000, 10000, 100000)]
    assert all(abs(s - t) <= 0.5 * t + 8 for s, t in zip(sizes, targets))


def test_bad_input_is_refused_naming_the_argument():
    problem = RegressionProblem("sphere", 1, 2, 0.5, noise=0.1)
    with pytest.raises(ValueError, match="^ns:"):
        erm.learning_curve("knn", problem, [1, 10])
    with pytest.raises(ValueError, match="^ns:"):
        erm.learning_curve("knn", problem, [100])
    with pytest.raises(ValueError, match="^model:"):
        erm.learning_curve("svm", problem, [10, 20])
    with pytest.raises(ValueError, match="^problem:"):
        erm.learning_curve("knn", RegressionProblem("sphere", 1, 2, 0.5), [10, 20])
    with pytest.raises(TypeError, match="^problem:"):
        erm.learning_curve("knn", "circle", [10, 20])
    with pytest.raises(ValueError, match="^model:"):
        erm.learning_curve(moecover.MoESpec(d_model=3), problem, [10, 20])
    with pytest.raises(ValueError, match="^x:"):
        erm.fit(SMALL, np.zeros((10, 3)), np.zeros(10))
    with pytest.raises(ValueError, match="^y:"):
        erm.fit(SMALL, np.zeros((10, 2)), np.full(10, np.nan))
    with pytest.raises(ValueError, match="^validation:"):
        erm.fit(SMALL, np.zeros((10, 2)), np.zeros(10), validation=1.5)
    with pytest.raises(ValueError, match="^theta:"):
        erm.evaluate(SMALL, np.zeros(3), np.zeros((2, 1, 2)))
    # problems of impossible d or β are refused where they are made
    with pytest.raises(ValueError, match="^d:"):
        RegressionProblem("sphere", 3, 2, 0.5)
    with pytest.raises(ValueError, match="^beta:"):
        RegressionProblem("sphere", 1, 2, 0.0)


# --- learning-curve grids in the batch runner --------------------------------------------------

ERM_GRID = """
[erm]
model = "knn"
beta = [0.4, 0.8]
ns = [200, 800, 3200]
seeds = 2
test_size = 1000
"""


def test_an_erm_grid_runs_resumes_and_reports(tmp_path):
    import subprocess
    import sys

    from moecover import batch
    from moecover.report import write_report

    config = tmp_path / "curves.toml"
    config.write_text(ERM_GRID)
    points = batch.expand_config(batch.load_config(config))
    assert len(points) == 2 and all(batch.is_learning_curve(p) for p in points)
    command = [sys.executable, "-m", "moecover", "run", str(config), "--quiet"]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "2 learning curve(s) run, 0 already stored" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True)
    assert "0 learning curve(s) run, 2 already stored" in again.stdout
    db = config.with_suffix(".db")
    stored = batch.stored_curves(db)
    assert [r.settings["erm"]["beta"] for r in stored] == [0.4, 0.8]  # grid order
    # the stored curve is the one the library computes for the same settings
    direct = erm.learning_curve("knn", batch.make_problem(points[0]), [200, 800, 3200], seeds=2, rng=0, test_size=1000)
    assert np.array_equal(stored[0].curve.risks, direct.risks)
    report = write_report(db, tmp_path / "report")
    text = report.markdown.read_text()
    assert "## Learning curves" in text and f"{direct.exponent:.3f}" in text
    assert all((tmp_path / "report" / f"curve_{r.key}.png").stat().st_size > 0 for r in stored)
    shown = subprocess.run([sys.executable, "-m", "moecover", "show", str(db)], capture_output=True, text=True)
    assert all(r.key in shown.stdout for r in stored)


def test_a_grid_over_experts_and_top_k_draws_the_risk_against_them(tmp_path):
    from moecover import batch
    from moecover.report import write_report

    config = tmp_path / "km.toml"
    config.write_text('[erm]\nmodel = "fixed_neff"\nneff = 24\nns = [40, 160]\nseeds = 2\nsteps = 100\nstarts = 1\n'
                      'test_size = 200\n[spec]\nd_model = 2\nexperts = [2, 4]\ntop_k = [1, 2]\n')
    points = batch.expand_config(batch.load_config(config))
    assert len(points) == 4
    # the active parameter count held near 24 while k varies: expert_hidden follows
    specs = [batch.erm_spec(p) for p in points]
    assert all(abs(moecover.theory.paper_slope(s) - 24) <= 4 for s in specs)
    assert len({s.expert_hidden for s in specs}) > 1
    run = batch.run_grid(points, tmp_path / "km.db", progress=False)
    assert run.ran == 4 and not run.failed
    report = write_report(tmp_path / "km.db", tmp_path / "report")
    assert (tmp_path / "report" / "risk_vs_experts_and_top_k.png").stat().st_size > 0
    assert "spec experts=4, top_k=2, N_eff≈24" in report.markdown.read_text()


@pytest.mark.parametrize(("config", "key"), [
    ({"erm": {"d": 3}}, "erm.d"),
    ({"erm": {"beta": 0.0}}, "erm.beta"),
    ({"erm": {"noise": 0.0}}, "erm.noise"),
    ({"erm": {"ns": [1, 10]}}, "erm.ns"),
    ({"erm": {"ns": [100]}}, "erm.ns"),
    ({"erm": {"model": "svm"}}, "erm.model"),
    ({"erm": {"seeds": 1}}, "erm.seeds"),
    ({"erm": {"stepz": 1}}, "erm.stepz"),
    ({"erm": {}, "estimate": {}}, "beside"),
    ({"erm": {"model": "spec"}, "spec": {"d_model": 3}}, "spec"),
    ({"erm": {}, "spec": {"experts": 2}}, "spec"),
    ({"erm": {"model": "fixed_neff"}, "spec": {"d_model": 2}}, "erm.neff"),
    ({"erm": {"model": "fixed_neff", "neff": 20}, "spec": {"d_model": 2, "expert": "linear"}}, "spec"),
])
def test_erm_config_errors_name_the_key(config, key):
    from moecover import batch

    with pytest.raises(batch.ConfigError, match=key.replace(".", r"\.")):
        batch.expand_config(config)

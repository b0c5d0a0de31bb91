"""moecover.theory: each formula against values computed by hand here (not by calling itself)."""

import math

import numpy as np
import pytest

from moecover import MoESpec
from moecover import theory as T

# layers 2, seq_len 3, M = 8, k = 2, D = 2, mlp h = 4, no attention:
# Π_exp = 2·2·4 + 4 + 2 = 22, N_eff = 2·2·22 = 88.
SPEC = MoESpec(layers=2, seq_len=3, experts=8, top_k=2)


def test_paper_terms_by_hand():
    assert T.paper_slope(SPEC) == 88
    # 2·3·2·log(e·8/2) = 12·(1 + log 4)
    assert T.routing_term(SPEC) == pytest.approx(12 * (1 + 1.3862943611198906), rel=1e-14)
    # 2·3·log C(8,2) = 6·log 28
    assert T.exact_routing_term(SPEC) == pytest.approx(6 * 3.332204510175204, rel=1e-14)
    # 2·(88·log 10 + 28.635532333438686)
    assert T.paper_log_covering(SPEC, 0.1, constant=2.0) == pytest.approx(2 * (88 * 2.302585092994046 + 28.635532333438686))
    many = T.paper_log_covering(SPEC, np.array([1.0, 0.1]))
    np.testing.assert_allclose(many, [28.635532333438686, 88 * 2.302585092994046 + 28.635532333438686])


def test_paper_bound_is_clamped_at_zero_where_its_formula_goes_negative():
    spec = MoESpec(experts=4, top_k=1, d_model=2, expert_hidden=2)
    # N_eff log(1/δ) + routing < 0 once δ > exp(routing / N_eff); a log covering number is >= 0
    turn = np.exp(T.routing_term(spec) / T.paper_slope(spec))
    assert T.paper_log_covering(spec, 2.0 * turn) == 0.0
    assert T.paper_log_covering(spec, 2.0) == 0.0  # the formula gives −12.9 here
    below = T.paper_log_covering(spec, 0.5 * turn)
    assert below == pytest.approx(T.paper_slope(spec) * np.log(2.0))


def test_union_bound_term_is_below_its_closed_form_bound():
    # C(M,k) <= (eM/k)^k, so the exact term never exceeds the paper's
    for m, k in [(2, 1), (8, 2), (16, 4), (5, 5)]:
        spec = MoESpec(experts=m, top_k=k, seq_len=2)
        assert T.exact_routing_term(spec) <= T.routing_term(spec) + 1e-12


def test_parametric_by_hand():
    spec = MoESpec()  # P = router 4·3 = 12 + 4·22 = 100
    pinned = ["layers.0.router.weight", "layers.0.router.bias"]
    assert T.parametric_slope(spec) == 100
    assert T.parametric_slope(spec, pinned) == 88
    assert T.parametric_slope(spec, {"layers.0.router.bias": np.zeros(4)}) == 96
    # B·Lip/δ = 30 -> 88·log 30
    assert T.parametric_log_covering(spec, 0.1, 3.0, pinned) == pytest.approx(88 * 3.4011973816621555)
    # fewer than one cell: nothing to pay
    assert T.parametric_log_covering(spec, 0.1, 0.01) == 0.0


def test_data_dependent_by_hand():
    # log 5 + 10·log ⌈1·2/0.1⌉ = log 5 + 10 log 20
    assert T.data_dependent_log_covering(5, 10, 0.1, 2.0, 1.0) == pytest.approx(1.6094379124341003 + 29.957322735539908)


def test_used_params_counts_the_experts_a_pattern_reaches():
    spec = MoESpec(experts=3, top_k=1, d_model=1, expert="constant")
    routes = np.array([[[0]], [[2]], [[2]]])  # experts 0 and 2 used, 1 each
    assert T.used_params(spec, routes) == 2  # top-1 renormalized gate is constant: router not used
    full = MoESpec(experts=3, top_k=1, d_model=1, expert="constant", gate="full_softmax")
    assert T.used_params(full, routes) == 2 + 3 * 2  # + router weight and bias
    assert T.used_params(full, routes, pinned=["layers.0.router.weight"]) == 2 + 3
    pair = MoESpec(experts=4, top_k=2, d_model=1, expert="constant")
    # rank 1 = {0, 2}, rank 3 = {0, 3}: experts 0, 2, 3 and the router (k >= 2 renormalized)
    assert T.used_params(pair, np.array([[[1]], [[3]]])) == 3 + 4 * 2
    uniform = MoESpec(experts=4, top_k=2, d_model=1, expert="constant", gate="uniform")
    assert T.used_params(uniform, np.array([[[1]], [[3]]])) == 3


def isometric_example(experts):
    """definitions §4: constant experts, k = 1, d_model = 1, the router pinned so input i reaches expert i."""
    spec = MoESpec(experts=experts, top_k=1, d_model=1, expert="constant")
    # scores w_j x + b_j with w_j = j, b_j = -j²s/2: at x = j·s the argmax is j (tangents of a
    # parabola); small inputs (s = 0.1) keep rounding in x + c far below the 1e-12 tolerance
    j = np.arange(experts, dtype=float)
    pinned = {"layers.0.router.weight": j.reshape(experts, 1), "layers.0.router.bias": -(j**2) * 0.1 / 2}
    inputs = (j * 0.1).reshape(experts, 1, 1)
    return spec, pinned, inputs


@pytest.mark.parametrize("experts", [2, 3, 5])
def test_isometry_example_lipschitz_and_parametric_cover(experts):
    spec, pinned, inputs = isometric_example(experts)
    estimate = T.estimate_lipschitz(spec, inputs, samples=500, rng=0, pinned=pinned)
    assert estimate.lipschitz == pytest.approx(1.0, abs=1e-12)
    assert (estimate.pairs, estimate.switched) == (500, 0)
    for delta in (0.9, 0.3, 0.1, 0.07, 0.013):
        exact = math.log(math.ceil(1 / delta) ** experts)  # ℓ∞ cover of [−1, 1]^M (definitions §5)
        assert T.parametric_log_covering(spec, delta, estimate.lipschitz, pinned) == pytest.approx(exact, rel=1e-12)


def test_lipschitz_reports_routing_switches_separately():
    spec = MoESpec(experts=3, top_k=1, d_model=1, expert="constant")
    inputs = np.linspace(-1, 1, 20).reshape(20, 1, 1)
    estimate = T.estimate_lipschitz(spec, inputs, samples=2000, rng=1, radius=0.05)
    assert estimate.switched > 0 and estimate.pairs + estimate.switched == 2000
    assert estimate.max_ratio_all >= estimate.lipschitz


def test_rates_by_hand():
    assert T.approximation_rate(100, 10, beta=1.0, d=2.0) == pytest.approx(0.01)
    assert T.approximation_rate(4, 100, beta=1.0, d=2.0) == pytest.approx(0.01)
    bound = T.generalization_bound(MoESpec(), n=1000, beta=1.0, d=2.0)  # N_eff = 22
    assert bound.approximation == pytest.approx(1 / 22)
    assert bound.estimation == pytest.approx(0.022)
    assert bound.routing == pytest.approx((1 + math.log(4)) / 1000)
    assert bound.total == pytest.approx(1 / 22 + 0.022 + (1 + math.log(4)) / 1000)
    assert T.optimal_active_params(10**4, beta=1.0, d=2.0) == pytest.approx(100.0)
    assert T.optimal_error_exponent(1.0, 2.0) == pytest.approx(0.5)


# Ludziejewski et al. 2025, Table 4: E -> (m, μ, n, ν)
TABLE_4 = {
    1: (30.364, -0.1817, 53.98, -0.1965),
    2: (27.798, -0.1780, 66.84, -0.2065),
    4: (24.846, -0.1731, 87.70, -0.2192),
    8: (21.833, -0.1676, 119.91, -0.2338),
    16: (19.016, -0.1617, 167.51, -0.2494),
    32: (16.542, -0.1557, 234.67, -0.2652),
}


@pytest.mark.parametrize("experts", sorted(TABLE_4))
def test_jmsl_reproduces_table_4(experts):
    form = T.jmsl_chinchilla_form(experts)
    for key, want in zip(("m", "mu", "n", "nu"), TABLE_4[experts]):
        assert form[key] == pytest.approx(want, rel=5e-3), key


def test_jmsl_loss_is_the_chinchilla_form_at_fixed_experts():
    m, mu, n, nu = TABLE_4[8]
    want = m * 1e9**mu + n * 2e10**nu + 1.3637
    assert T.jmsl_loss(1e9, 2e10, 8) == pytest.approx(want, rel=1e-2)
    # more data and more active parameters lower the loss
    assert T.jmsl_loss(2e9, 2e10, 8) < T.jmsl_loss(1e9, 2e10, 8)
    assert T.jmsl_loss(1e9, 4e10, 8) < T.jmsl_loss(1e9, 2e10, 8)


BAD = [
    (lambda: T.paper_log_covering(SPEC, 0.0), "delta"),
    (lambda: T.paper_log_covering(SPEC, -1.0), "delta"),
    (lambda: T.parametric_log_covering(SPEC, 0.0, 1.0), "delta"),
    (lambda: T.parametric_log_covering(SPEC, 0.1, -1.0), "lipschitz"),
    (lambda: T.parametric_slope(SPEC, ["layers.0.router.gain"]), "pinned"),
    (lambda: T.data_dependent_log_covering(0, 3, 0.1, 1.0, 1.0), "n_patterns"),
    (lambda: T.approximation_rate(10, 4, beta=0.0, d=2), "beta"),
    (lambda: T.approximation_rate(10, 4, beta=1.0, d=0), "d"),
    (lambda: T.generalization_bound(SPEC, n=0, beta=1.0, d=2), "n"),
    (lambda: T.generalization_bound(SPEC, n=10, beta=-1.0, d=2), "beta"),
    (lambda: T.optimal_active_params(0, 1.0, 2.0), "n"),
    (lambda: T.optimal_error_exponent(1.0, -2.0), "d"),
    (lambda: T.jmsl_loss(1e9, 1e10, 0.5), "experts"),
    (lambda: T.used_params(SPEC, np.zeros((3, 1, 3), dtype=int)), "routes_of_one_pattern"),
    (lambda: T.used_params(SPEC, np.full((3, 2, 3), 99)), "routes_of_one_pattern"),
    (lambda: T.estimate_lipschitz(SPEC, np.zeros((2, 3, 2)), samples=0), "samples"),
]


@pytest.mark.parametrize(("call", "name"), BAD)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_bounds_stay_exact_at_the_smallest_positive_scales():
    # log(1/δ) overflowed to inf at δ = 1e-310; −log δ is finite, and so is the ceiling's log
    spec = MoESpec(experts=4, top_k=1, d_model=2)
    delta = 1e-310
    assert T.paper_log_covering(spec, delta) == pytest.approx(
        T.paper_slope(spec) * -math.log(delta) + T.routing_term(spec), rel=1e-12)
    assert T.parametric_log_covering(spec, delta, 2.0) == pytest.approx(
        T.parametric_slope(spec) * (math.log(2.0) - math.log(delta)), rel=1e-12)
    assert T.data_dependent_log_covering(3, 5, delta, 1.0, 1.0) == pytest.approx(
        math.log(3) - 5 * math.log(delta), rel=1e-12)


@pytest.mark.parametrize("junk", ["0.25", True, 0.5 + 0j, np.array(["1"]), None])
def test_theory_functions_refuse_strings_bools_and_complex(junk):
    spec = MoESpec()
    with pytest.raises(TypeError, match="^delta:"):
        T.paper_log_covering(spec, junk)
    with pytest.raises((TypeError, ValueError), match="^lipschitz:"):
        T.parametric_log_covering(spec, 0.5, junk)


def test_used_params_refuses_a_huge_broadcast_view_at_once():
    """A 10^12-route zero-stride view holds no memory, but reading it took 6 minutes before."""
    import time

    from moecover import TooLargeError

    view = np.broadcast_to(np.zeros((1, 1, 1), dtype=np.uint32), (10**12, 1, 1))
    started = time.perf_counter()
    with pytest.raises(TooLargeError, match="^routes_of_one_pattern: "):
        T.used_params(MoESpec(experts=4, d_model=2), view)
    assert time.perf_counter() - started < 1.0


def test_estimate_lipschitz_counts_its_peak_before_it_starts():
    """Its parameter array alone fits (half the limit), but the call holds six of them at its
    peak: refused up front, by name, instead of left to the kernel."""
    import time

    from moecover import TooLargeError, inputs
    from moecover._checks import memory_limit_bytes

    spec = MoESpec(experts=4, d_model=2, expert_hidden=2)
    samples = int(0.5 * memory_limit_bytes() / (8 * spec.total_params))
    started = time.perf_counter()
    with pytest.raises(TooLargeError, match="^samples: "):
        T.estimate_lipschitz(spec, inputs.box(4, d_model=2, rng=0), samples=samples, rng=0)
    assert time.perf_counter() - started < 1.0

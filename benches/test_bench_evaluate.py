"""evaluate against the batched NumPy version a user would write (issue 2's benchmark).

Run: pytest benches/test_bench_evaluate.py --benchmark-only   (release build installed)
"""

import numpy as np
import pytest
from baselines import numpy_evaluate

import moecover

pytestmark = pytest.mark.timeout(0)

SPEC = moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert="mlp", expert_hidden=8)
M_SAMPLES, N_INPUTS = 100_000, 64
INPUTS = np.random.default_rng(0).normal(size=(N_INPUTS, SPEC.seq_len, SPEC.d_model))


@pytest.fixture(scope="module")
def params():
    return moecover.sample_params(SPEC, M_SAMPLES, rng=1)


def test_baseline_agrees_with_moecover(params):
    want = moecover.evaluate(SPEC, params[:200], INPUTS)
    values, routes = numpy_evaluate(SPEC, params[:200], INPUTS)
    np.testing.assert_array_equal(routes, want.routes)
    np.testing.assert_allclose(values, want.values, rtol=1e-10, atol=1e-10)


@pytest.mark.benchmark(group="evaluate m=1e5 n=64")
@pytest.mark.parametrize("threads", [1, 2])
def test_moecover_evaluate(benchmark, params, threads):
    benchmark.pedantic(moecover.evaluate, args=(SPEC, params, INPUTS), kwargs={"n_threads": threads},
                       rounds=3, iterations=1)


@pytest.mark.benchmark(group="evaluate m=1e5 n=64")
def test_moecover_evaluate_sampled(benchmark):
    benchmark.pedantic(moecover.evaluate_sampled, args=(SPEC, INPUTS, M_SAMPLES), kwargs={"rng": 1, "n_threads": 1},
                       rounds=3, iterations=1)


@pytest.mark.benchmark(group="evaluate m=1e5 n=64")
def test_numpy_einsum_baseline(benchmark, params):
    benchmark.pedantic(numpy_evaluate, args=(SPEC, params, INPUTS), rounds=1, iterations=1)

"""Routing-pattern counting (issue 4's benchmark).

Run: pytest benches/test_bench_routing.py --benchmark-only
- count_patterns on m = 10^6 samples, n = 64, layers = 2, seq_len = 2 against np.unique(axis=0)
  over rows (which gives only the dataset-wide count and groups; count_patterns also gives the
  per-input counts, the growth curve and the rarefaction curve);
- exact_patterns on (experts 3, top_k 1, d_model 2, n 20) and (experts 4, top_k 2, d_model 2, n 10).
"""

import numpy as np
import pytest

import moecover
from moecover import routing

pytestmark = pytest.mark.timeout(0)


@pytest.fixture(scope="module")
def routes():
    spec = moecover.MoESpec(layers=2, experts=4, top_k=1, d_model=2, seq_len=2, expert="constant")
    x = moecover.inputs.box(64, seq_len=2, d_model=2, rng=0)
    return moecover.evaluate_sampled(spec, x, 1_000_000, rng=1).routes


def numpy_unique_rows(routes):
    rows = routes.reshape(len(routes), -1)
    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    return len(unique), inverse


def test_counts_agree(routes):
    assert routing.count_patterns(routes[:20_000]).dataset == numpy_unique_rows(routes[:20_000])[0]


@pytest.mark.benchmark(group="count_patterns m=1e6 n=64 L=2 seq=2")
@pytest.mark.parametrize("threads", [1, 2])
def test_count_patterns(benchmark, routes, threads):
    benchmark.pedantic(routing.count_patterns, args=(routes,), kwargs={"n_threads": threads}, rounds=3)


@pytest.mark.benchmark(group="count_patterns m=1e6 n=64 L=2 seq=2")
def test_numpy_unique(benchmark, routes):
    benchmark.pedantic(numpy_unique_rows, args=(routes,), rounds=1)


@pytest.mark.benchmark(group="exact_patterns")
@pytest.mark.parametrize(("experts", "top_k", "n"), [(3, 1, 20), (4, 2, 10)])
def test_exact_patterns(benchmark, experts, top_k, n):
    spec = moecover.MoESpec(experts=experts, top_k=top_k, d_model=2, expert="constant")
    x = np.random.default_rng(0).normal(size=(n, 1, 2))
    benchmark.pedantic(routing.exact_patterns, args=(spec, x), kwargs={"n_threads": 2}, rounds=1)

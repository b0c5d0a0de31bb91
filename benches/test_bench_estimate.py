"""estimate_entropy end to end against the pipeline a user would write (issue 6's benchmark):
NumPy evaluation of the samples, then a cKDTree greedy net per scale.

Run: pytest benches/test_bench_estimate.py --benchmark-only
"""

import numpy as np
import pytest
from baselines import ckdtree_net, numpy_evaluate

import moecover

pytestmark = pytest.mark.timeout(0)

SPEC = moecover.MoESpec(layers=1, experts=4, top_k=1, d_model=2, expert="mlp", expert_hidden=2)
INPUTS = moecover.inputs.box(64, d_model=2, rng=0)
SAMPLES = 100_000
DELTAS = np.geomspace(4.0, 1.0, 12)  # nets 7 … ~10^4 at 10^5 samples


def user_pipeline():
    params = moecover.sample_params(SPEC, SAMPLES, rng=1)
    values, _ = numpy_evaluate(SPEC, params, np.asarray(INPUTS))
    points = values.reshape(SAMPLES, -1)
    return [len(ckdtree_net(points, d)[0]) for d in DELTAS]


def moecover_pipeline(threads):
    return moecover.estimate_entropy(SPEC, INPUTS, SAMPLES, deltas=DELTAS, replicates=1, rng=1,
                                     by_routing=False, n_threads=threads)


@pytest.mark.benchmark(group="estimate 1e5 samples, 64 inputs, 12 scales")
@pytest.mark.parametrize("threads", [1, 2])
def test_moecover_estimate(benchmark, threads):
    benchmark.pedantic(moecover_pipeline, args=(threads,), rounds=2)


@pytest.mark.benchmark(group="estimate 1e5 samples, 64 inputs, 12 scales")
def test_user_pipeline(benchmark):
    benchmark.pedantic(user_pipeline, rounds=1)

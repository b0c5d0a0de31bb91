"""Greedy nets against the SciPy baselines a user would write (issue 3's benchmark).

Run: pytest benches/test_bench_cover.py --benchmark-only   (release build installed)
Cases: (a) 10^5 points of a 4-cube mapped linearly into R^64, 12 scales (nets ~10^2 … 10^4);
(b) the same at 10^6 points, single scales (nets ~10^3 and ~10^4); (c) rows of a top-1 mixture of
4 relu experts on 64 inputs. The baseline is `ckdtree_cover_net` (nearest-centre queries on a
cKDTree, the fastest honest SciPy version); `cdist_net` is the blocked brute force.
"""

import numpy as np
import pytest
from baselines import cdist_net, ckdtree_cover_net, ckdtree_net

import moecover

pytestmark = pytest.mark.timeout(0)


def cube_in_r64(m, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(m, 4)) @ rng.normal(size=(4, 64))


POINTS_A = cube_in_r64(100_000)
DELTAS_A = np.geomspace(2.0, 0.45, 12)  # nets 88 … ~10^4 on this data
SPEC_C = moecover.MoESpec(experts=4, top_k=1, d_model=2, expert="mlp", expert_hidden=2)
INPUTS_C = np.random.default_rng(1).normal(size=(64, 1, 2))
POINTS_C = moecover.evaluate_sampled(SPEC_C, INPUTS_C, 100_000, rng=2).values.reshape(100_000, -1)
DELTAS_C = np.geomspace(4.5, 1.4, 12)  # nets 27 … ~10^4
DELTAS_B = [0.9, 0.45]  # nets ~10^3 and ~10^4 on 10^6 points


def test_nets_equal_the_baselines():
    for delta in (DELTAS_A[0], DELTAS_A[6], DELTAS_A[-1]):
        net = moecover.greedy_net(POINTS_A[:20_000], delta)
        np.testing.assert_array_equal(ckdtree_cover_net(POINTS_A[:20_000], delta), net.centers)
        centres, assignment = ckdtree_net(POINTS_A[:20_000], delta)
        np.testing.assert_array_equal(net.centers, centres)
        np.testing.assert_array_equal(net.assignment, assignment)
        np.testing.assert_array_equal(cdist_net(POINTS_A[:20_000], delta)[0], centres)
    for delta in (DELTAS_C[0], DELTAS_C[-1]):
        want = ckdtree_cover_net(POINTS_C[:20_000], delta)
        np.testing.assert_array_equal(moecover.greedy_net(POINTS_C[:20_000], delta).centers, want)


@pytest.mark.benchmark(group="a: 1e5 x R^64, 12 scales")
@pytest.mark.parametrize("threads", [1, 2])
def test_a_moecover(benchmark, threads):
    benchmark.pedantic(moecover.cover, args=(POINTS_A, DELTAS_A), kwargs={"n_threads": threads}, rounds=5)


@pytest.mark.benchmark(group="a: 1e5 x R^64, 12 scales")
def test_a_ckdtree(benchmark):
    benchmark.pedantic(lambda: [ckdtree_cover_net(POINTS_A, d) for d in DELTAS_A], rounds=1)


@pytest.mark.benchmark(group="a: 1e5 x R^64, 12 scales")
def test_a_cdist(benchmark):
    benchmark.pedantic(lambda: [cdist_net(POINTS_A, d) for d in DELTAS_A], rounds=1)


@pytest.fixture(scope="module")
def points_b():
    return cube_in_r64(1_000_000)


@pytest.mark.benchmark(group="b: 1e6 x R^64, one scale")
@pytest.mark.parametrize("delta", DELTAS_B)
@pytest.mark.parametrize("threads", [1, 2])
def test_b_moecover(benchmark, points_b, delta, threads):
    benchmark.pedantic(moecover.cover, args=(points_b, [delta]), kwargs={"n_threads": threads}, rounds=3)


@pytest.mark.benchmark(group="b: 1e6 x R^64, one scale")
@pytest.mark.parametrize("delta", DELTAS_B)
def test_b_ckdtree(benchmark, points_b, delta):
    benchmark.pedantic(ckdtree_cover_net, args=(points_b, delta), rounds=1)


@pytest.mark.benchmark(group="c: MoE outputs 1e5 x R^64, 12 scales")
@pytest.mark.parametrize("threads", [1, 2])
def test_c_moecover(benchmark, threads):
    benchmark.pedantic(moecover.cover, args=(POINTS_C, DELTAS_C), kwargs={"n_threads": threads}, rounds=5)


@pytest.mark.benchmark(group="c: MoE outputs 1e5 x R^64, 12 scales")
def test_c_ckdtree(benchmark):
    benchmark.pedantic(lambda: [ckdtree_cover_net(POINTS_C, d) for d in DELTAS_C], rounds=1)

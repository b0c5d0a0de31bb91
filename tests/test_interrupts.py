"""Ctrl-C stops every long call within a second (SIGINT sent to a child process).

`cover` is tested in test_cover.py; the rest of the long calls are here."""

import pytest
from interrupts import seconds_to_stop

SETUP = """
import numpy as np
import moecover
spec = moecover.MoESpec(experts=8, top_k=8, d_model=16, expert_hidden=64)
x = np.random.default_rng(0).normal(size=(64, 1, 16))
params = moecover.sample_params(spec, 5_000, rng=0)  # 0.7 GB
many = np.random.default_rng(1).normal(size=(1024, 1, 16))  # with params, 2-4 s of evaluation
"""

CALLS = {
    "evaluate_sampled": "moecover.evaluate_sampled(spec, x, 200_000, rng=0, n_threads=2)",
    "evaluate": "moecover.evaluate(spec, params, many, n_threads=2)",
    "explore": "moecover.explore(spec, x, 0.5, 10**9, rng=0, n_threads=2, batch=20_000)",
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_sigint_stops_within_a_second(name):
    assert seconds_to_stop(SETUP, CALLS[name]) < 1.0


def test_sigint_stops_exact_patterns_within_a_second():
    setup = """
    import numpy as np, moecover
    spec = moecover.MoESpec(experts=3, top_k=1, d_model=2, expert="constant")
    x = np.random.default_rng(0).normal(size=(20, 1, 2))  # about 20 s of search
    """
    assert seconds_to_stop(setup, "moecover.routing.exact_patterns(spec, x, n_threads=2)") < 1.0


POINTS = """
import numpy as np, moecover
rng = np.random.default_rng(0)
points = rng.uniform(-1, 1, size=(400_000, 8)) @ rng.normal(size=(8, 64))  # several seconds per net
"""

COVER_CALLS = {
    "greedy_net": "moecover.greedy_net(points, 0.5, n_threads=2)",
    "CoverStream.add": "moecover.CoverStream([4.0, 1.0, 0.5], dim=64, n_threads=2).add(points)",
    "box_count": "moecover.box_count(points, np.geomspace(4.0, 1e-3, 40), n_threads=2)",
}


@pytest.mark.parametrize("name", sorted(COVER_CALLS))
def test_sigint_stops_covering_calls_within_a_second(name):
    assert seconds_to_stop(POINTS, COVER_CALLS[name]) < 1.0


def test_sigint_stops_count_patterns_within_a_second():
    # all-equal routes: no group ever splits, so every input re-hashes all 8e6 samples (>10 s);
    # np.zeros pages are never written, so the 2 GB cost no memory
    setup = """
    import numpy as np, moecover
    routes = np.zeros((8_000_000, 64, 1, 1), dtype=np.uint32)
    """
    assert seconds_to_stop(setup, "moecover.routing.count_patterns(routes, n_threads=2)") < 1.0


def test_sigint_stops_estimate_entropy_within_a_second():
    setup = """
    import numpy as np, moecover
    spec = moecover.MoESpec(experts=4, top_k=2, d_model=4, expert_hidden=8)
    x = moecover.inputs.box(32, d_model=4, rng=0)
    """
    call = "moecover.estimate_entropy(spec, x, 2_000_000, replicates=3, rng=0, n_threads=2)"
    assert seconds_to_stop(setup, call, delay=2.0) < 1.0


def test_sigint_stops_functional_dimension_within_a_second():
    # the Jacobians (interruptible in the core) and their singular values, chunk by chunk
    setup = """
    import numpy as np, moecover
    spec = moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert_hidden=8)
    x = moecover.inputs.box(64, seq_len=4, d_model=4, rng=0)
    """
    assert seconds_to_stop(setup, "moecover.functional_dimension(spec, x, samples=20_000, rng=0, n_threads=2)") < 1.0

"""Ctrl-C stops every long call within a second (SIGINT sent to a child process)."""

import pytest
from interrupts import seconds_to_stop

SETUP = """
import numpy as np
import moecover
spec = moecover.MoESpec(experts=8, top_k=8, d_model=16, expert_hidden=64)
x = np.random.default_rng(0).normal(size=(64, 1, 16))
params = moecover.sample_params(spec, 5_000, rng=0)  # 0.7 GB, several seconds of evaluation
"""

CALLS = {
    "evaluate_sampled": "moecover.evaluate_sampled(spec, x, 200_000, rng=0, n_threads=2)",
    "evaluate": "moecover.evaluate(spec, params, x, n_threads=2)",
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

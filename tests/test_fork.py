"""A child forked after the parent used the thread pool can still compute (no inherited pool)."""

import os
import signal
import time

import numpy as np

import moecover


def test_fork_after_parallel_work_completes():
    spec = moecover.MoESpec(experts=3, d_model=2)
    x = np.random.default_rng(0).normal(size=(16, 1, 2))
    parent = moecover.evaluate_sampled(spec, x, 2_000, rng=1, n_threads=2)
    moecover.cover(parent.values.reshape(2_000, -1), [0.5, 1.0], n_threads=2)
    pid = os.fork()
    if pid == 0:  # child: the same parallel calls, then report through the exit code
        try:
            child = moecover.evaluate_sampled(spec, x, 2_000, rng=1, n_threads=2)
            nets = moecover.cover(child.values.reshape(2_000, -1), [0.5, 1.0], n_threads=2)
            os._exit(0 if np.array_equal(child.values, parent.values) and nets.net_sizes.min() > 0 else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child deadlocked")

"""Time per forward pass of `evaluate_sampled` at one thread for several numbers of inputs n.

Run: python benches/evaluate_batch_sizes.py   (release build installed)

The forward pass runs a θ's inputs side by side in 8, 16 or 32 SIMD lanes from 6 inputs on, and
fewer one at a time (see `forward_batch` in rust/core/src/forward/lanes.rs); this shows what that
choice costs or gains at each n. The class is the one of test_bench_evaluate.py.
"""

import time

import numpy as np

import moecover

SPEC = moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert="mlp", expert_hidden=8)
FORWARDS = 640_000  # forward passes per timing: m = FORWARDS / n samples


def per_forward_ns(n: int, rounds: int = 3) -> float:
    inputs = np.random.default_rng(0).uniform(-1, 1, (n, SPEC.seq_len, SPEC.d_model))
    m = FORWARDS // n
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        moecover.evaluate_sampled(SPEC, inputs, m, rng=1, n_threads=1)
        best = min(best, time.perf_counter() - start)
    return best / (m * n) * 1e9


if __name__ == "__main__":
    for n in (1, 4, 5, 6, 8, 9, 13, 16, 19, 20, 32, 64):
        print(f"n = {n:3d}: {per_forward_ns(n):6.0f} ns per forward pass")

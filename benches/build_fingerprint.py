"""The bits and the speed of one build, to compare two builds side by side (a change that should
alter neither): run it under each install, one after the other, and compare the lines.

Run: python benches/build_fingerprint.py   (release build installed)

Prints the SHA-256 of the values and routes of a 20 000 × 64 evaluation of the evaluate
benchmark's class, the time per forward pass at one thread for n = 8 inputs (the one-input pass)
and n = 64 (the lane pass), and the greedy-net times of cases (a) and (b, δ = 0.9) of
`test_bench_cover.py` at one thread (min of 5 rounds each).
"""

import hashlib
import sys

import numpy as np

sys.path.insert(0, "benches")
import moecover  # noqa: E402
from test_bench_cover import DELTAS_A, POINTS_A, cube_in_r64  # noqa: E402
from timing import best  # noqa: E402

SPEC = moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert="mlp", expert_hidden=8)


inputs = np.random.default_rng(0).uniform(-1, 1, (64, SPEC.seq_len, SPEC.d_model))
out = moecover.evaluate_sampled(SPEC, inputs, 20_000, rng=1, n_threads=2)
digest = hashlib.sha256(out.values.tobytes() + out.routes.tobytes()).hexdigest()[:16]
print(f"checksum of 20 000 x 64 values and routes: {digest}")
for n in (8, 64):
    m = 320_000 // n
    seconds = best(lambda: moecover.evaluate_sampled(SPEC, inputs[:n], m, rng=1, n_threads=1), rounds=5)
    print(f"evaluate_sampled, n = {n:2d}, 1 thread: {seconds / (m * n) * 1e9:6.0f} ns per forward pass")
print(f"cover (a), 12 scales, 1 thread: {best(lambda: moecover.cover(POINTS_A, DELTAS_A, n_threads=1), rounds=5):.3f} s")
points_b = cube_in_r64(1_000_000)
print(f"cover (b) delta 0.9, 1 thread: {best(lambda: moecover.cover(points_b, [0.9], n_threads=1), rounds=5):.3f} s")

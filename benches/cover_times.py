"""Quick timings of the greedy-net cases that print as they go (the pytest-benchmark file prints
only at the end, and its case (c) cKDTree baseline runs for more than ten minutes).

Run from the repository root: python benches/cover_times.py
"""
import sys, time
sys.path.insert(0, "benches")
import numpy as np, moecover
from test_bench_cover import POINTS_A, DELTAS_A, POINTS_C, DELTAS_C, cube_in_r64
from baselines import ckdtree_net, cdist_net

def best(f, rounds=3):
    t = []
    for _ in range(rounds):
        s = time.perf_counter(); f(); t.append(time.perf_counter() - s)
    return min(t)

for th in (1, 2):
    print("a moecover", th, round(best(lambda: moecover.cover(POINTS_A, DELTAS_A, n_threads=th)), 3), flush=True)
    print("c moecover", th, round(best(lambda: moecover.cover(POINTS_C, DELTAS_C, n_threads=th)), 3), flush=True)
P = cube_in_r64(1_000_000)
for d in (1.2, 0.6):
    for th in (1, 2):
        s = time.perf_counter(); n = moecover.greedy_net(P, d, n_threads=th); print("b moecover", d, th, len(n), round(time.perf_counter() - s, 3), flush=True)
s = time.perf_counter(); [ckdtree_net(POINTS_A, d) for d in DELTAS_A]; print("a ckdtree", round(time.perf_counter() - s, 1), flush=True)
s = time.perf_counter(); [cdist_net(POINTS_A, d) for d in DELTAS_A[:6]]; print("a cdist (first 6 scales)", round(time.perf_counter() - s, 1), flush=True)

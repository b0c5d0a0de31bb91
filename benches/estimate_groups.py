"""The cost of the routing-grouped nets: `estimate_entropy` with `by_routing=True` (a net per
dataset-wide routing pattern, in the core) against `by_routing=False` (patterns counted only), at
the same samples, scales and seed; the global nets are checked equal first. Also the bytes the
per-pattern nets held, and how many patterns there were.

Run: python benches/estimate_groups.py [--samples 1000000]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

import moecover
from moecover.estimate import EstimateWarning

# experts 4, top_k 1, d_model 2, mlp experts with 2 hidden (the quickstart's and the end-to-end
# benchmark's class) on 16 and on 64 box inputs: about 10^5 and nearly 10^6 routing patterns
CLASSES = {
    "experts 4, top_k 1, 16 inputs": (moecover.MoESpec(experts=4, top_k=1, d_model=2, expert_hidden=2), 16),
    "experts 4, top_k 1, 64 inputs": (moecover.MoESpec(experts=4, top_k=1, d_model=2, expert_hidden=2), 64),
}


def timed(spec: moecover.MoESpec, x: np.ndarray, samples: int, by_routing: bool) -> tuple[float, moecover.EntropyEstimate]:
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        estimate = moecover.estimate_entropy(spec, x, samples, deltas=np.geomspace(4.0, 0.5, 10), replicates=1,
                                             rng=1, by_routing=by_routing, functional_samples=50)
    return time.perf_counter() - started, estimate


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, {args.samples:,} samples, 1 replicate, 10 scales")
    print("| class | without groups (s) | with groups (s) | ratio | patterns | per-pattern nets' memory |")
    print("|---|---|---|---|---|---|")
    for name, (spec, n) in CLASSES.items():
        x = moecover.inputs.box(n, d_model=2, rng=0)
        plain_seconds, plain = timed(spec, x, args.samples, False)
        grouped_seconds, grouped = timed(spec, x, args.samples, True)
        assert np.array_equal(plain.net_sizes, grouped.net_sizes), "the global nets differ"
        table = grouped.union_bound
        print(f"| {name} | {plain_seconds:.1f} | {grouped_seconds:.1f} | {grouped_seconds / plain_seconds:.2f} | "
              f"{table['patterns_sampled']:,} | {table['group_nets_bytes'] / 2**20:.0f} MiB |", flush=True)

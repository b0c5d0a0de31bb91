"""The cost of the routing-grouped nets: `estimate_entropy` with `by_routing=True` (a net per
dataset-wide routing pattern of replicate 0, in the core) against `by_routing=False` (patterns
counted only), both with the defaults otherwise (3 replicates, 16 scales picked from the values),
at the same samples and seed; the global nets are checked equal. Also the bytes the per-pattern
nets held, and how many patterns there were.

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

# experts 4, top_k 1, d_model 2, mlp experts with 2 hidden on 16 box inputs: the quickstart's class
CLASSES = {
    "experts 4, top_k 1, 16 inputs": (moecover.MoESpec(experts=4, top_k=1, d_model=2, expert_hidden=2), 16),
}


def timed(spec: moecover.MoESpec, x: np.ndarray, samples: int, by_routing: bool) -> tuple[float, moecover.EntropyEstimate]:
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        estimate = moecover.estimate_entropy(spec, x, samples, rng=1, by_routing=by_routing)
    return time.perf_counter() - started, estimate


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, {args.samples:,} samples per replicate, defaults otherwise")
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

"""`estimate_entropy` end to end on the evaluate benchmark's class, to compare two builds.

Class: layers 2, experts 8, top_k 2, d_model 4, heads 1, seq_len 4, mlp experts with 8 hidden
units (P = 1424) on 64 box inputs; the defaults otherwise (3 replicates, 16 scales from the values,
per-pattern nets on replicate 0, 200 θ for the functional dimension). Prints the seconds of the
whole call, of the same call's evaluation alone (`evaluate_sampled` of the same θ) and of its
functional dimension alone, and the nets at the finest scales, so that two builds (run this under
each install, alternating) can be checked to cover the same image.

Run: python benches/estimate_benchmark_class.py [--samples 1000000] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import moecover
from moecover.estimate import EstimateWarning

SPEC = moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert="mlp", expert_hidden=8)
X = np.asarray(moecover.inputs.box(64, seq_len=4, d_model=4, rng=0))


def seconds(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"moecover {moecover.__version__} from {moecover.__file__}; {args.samples:,} samples, {args.threads} thread(s)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        whole, estimate = seconds(lambda: moecover.estimate_entropy(SPEC, X, args.samples, rng=1, n_threads=args.threads))
    evaluation, _ = seconds(lambda: moecover.evaluate_sampled(SPEC, X, args.samples, rng=1, n_threads=args.threads))
    rank, dimension = seconds(lambda: moecover.functional_dimension(SPEC, X, samples=200, rng=1, n_threads=args.threads))
    print(f"estimate_entropy: {whole:.1f} s; one replicate's evaluation alone: {evaluation:.1f} s; "
          f"functional_dimension (200 θ) alone: {rank:.2f} s (r* = {dimension.max_rank})")
    print(f"scales {np.round(estimate.deltas[-3:], 4).tolist()}: nets {np.asarray(estimate.net_sizes)[:, -3:].tolist()}")

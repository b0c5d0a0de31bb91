"""The estimator on images of known dimension r (definitions §8): regimes, extrapolated slopes and
how often their intervals cover r.

Each class is `moecover.known_image_class(experts=r, d_model=4, expert=...)`: its image on its r
inputs is an r-dimensional box. With linear experts each coordinate of the image is a sum of five
parameters, so the uniform pushforward is bell-shaped and the corners are rare; with constant
experts it is uniform. Every estimate runs at a fixed budget on 13 scales from half the box's side
down by √2 steps; a row counts the seeds per regime, and over the seeds that are not
sample-limited, the largest relative error of the extrapolated slope and how many intervals hold r.

Run: python benches/known_truths.py [--seeds 20] [--quick] [--only constant:4 ...]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import moecover
from moecover.estimate import EstimateWarning

#: (r, expert, samples per replicate): budgets at which the nets are complete over a few octaves.
STUDY = [(1, "linear", 50_000), (2, "linear", 100_000), (3, "linear", 1_000_000), (4, "linear", 1_000_000),
         (2, "constant", 50_000), (3, "constant", 200_000), (4, "constant", 1_000_000), (5, "constant", 1_000_000),
         (6, "constant", 1_000_000)]
QUICK = [(1, "linear", 30_000), (2, "linear", 60_000), (2, "constant", 30_000)]


def known_truth_estimate(r: int, expert: str, samples: int, seed: int, n_threads: int | None = None) -> moecover.EntropyEstimate:
    """One estimate of the class of dimension r (its warnings are the point of the study: muted)."""
    known = moecover.known_image_class(experts=r, d_model=4, expert=expert)
    side = float((known.high - known.low).max())
    deltas = side / 2 * 2.0 ** (-np.arange(13) / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        return moecover.estimate_entropy(known.spec, known.inputs, samples, deltas=deltas, rng=seed,
                                         pinned=known.pinned, functional_samples=20, n_threads=n_threads)


def study(rows: list[tuple[int, str, int]], seeds: int) -> None:
    print("| r | experts | samples | regimes (sample-limited / pre-asymptotic / asymptotic) | r* | largest error | intervals holding r | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r, expert, samples in rows:
        started = time.perf_counter()
        estimates = [known_truth_estimate(r, expert, samples, seed) for seed in range(seeds)]
        counts = [sum(e.regime == name for e in estimates) for name in moecover.estimate.REGIMES]
        measured = [e for e in estimates if e.regime != "sample_limited"]
        errors = [abs(e.extrapolated_slope / r - 1) for e in measured]
        held = sum(e.extrapolated_interval[0] <= r <= e.extrapolated_interval[1] for e in measured)
        stars = sorted({e.functional_dimension for e in estimates})
        print(f"| {r} | {expert} | {samples:,} | {' / '.join(map(str, counts))} | {stars} | "
              f"{max(errors):.1%} | {held} of {len(measured)} | {time.perf_counter() - started:.0f} |"
              if measured else
              f"| {r} | {expert} | {samples:,} | {' / '.join(map(str, counts))} | {stars} | — | — | "
              f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the small classes the tests run")
    parser.add_argument("--only", nargs="*", default=None, metavar="EXPERT:R",
                        help="rows of the study to run, e.g. constant:4 linear:2 (default: all)")
    args = parser.parse_args()
    rows = QUICK if args.quick else STUDY
    if args.only:
        rows = [row for row in rows if f"{row[1]}:{row[0]}" in args.only]
    study(rows, args.seeds)

"""How fast samplers and the search reach a class's image (definitions §7).

1. Classes whose image is a box known in closed form (`moecover.known_image_class`): the
   evaluations each method needs to leave at most 10 % and 5 % of the image farther than δ from
   its packing, measured with 20 000 points uniform in the image. Uniform sampling streams up to
   `--uniform-max` evaluations; when it has not reached a target by then, the ratio printed is a
   lower bound (">").
2. The quickstart's classes (d_model 2, mlp experts with 2 hidden, 16 box inputs): the packing
   at a fixed budget for each sampler alone and for the search.

Run: python benches/exploration.py [--uniform-max 30000000] [--budget 1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import moecover

KNOWN = [(4, 2, 0.32), (3, 4, 0.2), (6, 4, 0.75)]
TARGETS = (0.90, 0.95)


def evaluations_to(coverage: list[tuple[int, float]], target: float) -> int | None:
    """The first budget at which the coverage reached `target`."""
    return next((spent for spent, covered in coverage if covered >= target), None)


def searched(known: moecover.KnownImageClass, delta: float, budget: int, points: np.ndarray) -> list[tuple[int, float]]:
    """Coverage after each round of one search (its members are found in order)."""
    found = moecover.explore(known.spec, known.inputs, delta, budget, rng=0, pinned=known.pinned)
    return [(int(spent), moecover.image_coverage(found.values[:size], points, delta) if size else 0.0)
            for spent, size in found.growth]


def sampled(known: moecover.KnownImageClass, delta: float, most: int, points: np.ndarray, sampler: str) -> list[tuple[int, float]]:
    """Coverage of the greedy net of the first m samples, m doubling up to `most`."""
    dim = known.inputs.shape[0]
    values = np.empty((0, dim))
    curve, m = [], 1 << 14
    while True:
        m = min(m, most)
        more = moecover.evaluate_sampled(known.spec, known.inputs, m - len(values), rng=0, start=len(values),
                                         pinned=known.pinned, sampler=sampler).values.reshape(-1, dim)
        values = np.concatenate([values, more])
        net = moecover.greedy_net(values, delta)
        covered = moecover.image_coverage(values[net.centers], points, delta)
        curve.append((m, covered))
        if covered >= TARGETS[-1] or m >= most:
            return curve
        m *= 2


def known_images(args: argparse.Namespace) -> None:
    print("| image (experts, d_model) | δ | N(δ) exact | method | evaluations to 90 % | to 95 % | coverage at the end |")
    print("|---|---|---|---|---|---|---|")
    for experts, d_model, delta in KNOWN:
        known = moecover.known_image_class(experts, d_model)
        points = known.uniform_points(20_000, rng=2)
        curves = {
            "search (faces)": searched(known, delta, args.budget, points),
            "faces sampler": sampled(known, delta, args.uniform_max, points, "faces"),
            "uniform sampler": sampled(known, delta, args.uniform_max, points, "uniform"),
        }
        for name, curve in curves.items():
            cells = []
            for target in TARGETS:
                reached = evaluations_to(curve, target)
                cells.append(f"{reached:,}" if reached is not None else f"> {curve[-1][0]:,}")
            print(f"| box of {experts} sides, D = {d_model} | {delta} | {known.covering_number(delta):,} | {name} | "
                  f"{cells[0]} | {cells[1]} | {curve[-1][1]:.3f} after {curve[-1][0]:,} |")
        for target in TARGETS:
            search_at = evaluations_to(curves["search (faces)"], target)
            uniform_at = evaluations_to(curves["uniform sampler"], target)
            if search_at is None:
                print(f"  {target:.0%}: the search did not reach it within {args.budget:,}")
            elif uniform_at is None:
                print(f"  {target:.0%}: uniform needs > {curves['uniform sampler'][-1][0] / search_at:.0f}x the search's evaluations")
            else:
                print(f"  {target:.0%}: uniform needs {uniform_at / search_at:.0f}x the search's evaluations")


def quickstart(args: argparse.Namespace) -> None:
    x = moecover.inputs.box(16, seq_len=1, d_model=2, rng=0)
    deltas = [2.0, 1.0]
    print(f"\n| class | method | packing at δ = 2 | at δ = 1 | (budget {args.budget:,} evaluations) |")
    print("|---|---|---|---|---|")
    for experts, top_k in [(2, 1), (4, 1), (4, 2), (8, 2)]:
        spec = moecover.MoESpec(experts=experts, top_k=top_k, d_model=2, expert="mlp", expert_hidden=2)
        for sampler in ("uniform", "arcsine", "faces", "mixture"):
            values = moecover.evaluate_sampled(spec, x, args.budget, rng=0, sampler=sampler).values.reshape(args.budget, -1)
            sizes = moecover.cover(values, deltas).net_sizes
            print(f"| experts {experts}, top_k {top_k} | {sampler} sampler | {sizes[0]:,} | {sizes[1]:,} | |")
        cells = []
        for delta in deltas:
            found = moecover.explore(spec, x, delta, args.budget, rng=0)
            cells.append(f"{len(found):,}")
        print(f"| experts {experts}, top_k {top_k} | search (faces) | {cells[0]} | {cells[1]} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uniform-max", type=int, default=30_000_000)
    parser.add_argument("--budget", type=int, default=1_000_000)
    args = parser.parse_args()
    started = time.perf_counter()
    known_images(args)
    quickstart(args)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

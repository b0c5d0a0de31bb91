"""The timings of `test_bench_cover.py`, printed as they go, each moecover figure beside the
baseline's: `python benches/cover_times.py` from the repository root (release build installed).
moecover: the minimum of 5 rounds (3 for case (b)); baselines: one round."""

import sys

sys.path.insert(0, "benches")
import moecover  # noqa: E402
from baselines import ckdtree_cover_net  # noqa: E402
from timing import best as seconds  # noqa: E402
from test_bench_cover import DELTAS_A, DELTAS_B, DELTAS_C, POINTS_A, POINTS_C, cube_in_r64  # noqa: E402


def compare(name, points, deltas, rounds):
    baseline = seconds(lambda: [ckdtree_cover_net(points, d) for d in deltas], 1)
    sizes = moecover.cover(points, deltas).net_sizes.tolist()
    ours = {t: seconds(lambda: moecover.cover(points, deltas, n_threads=t), rounds) for t in (1, 2)}
    print(
        f"{name}: nets {sizes[0]}…{sizes[-1]}; ckdtree_cover_net {baseline:.2f} s; "
        f"moecover 1 thread {ours[1]:.3f} s ({baseline / ours[1]:.1f}x), "
        f"2 threads {ours[2]:.3f} s ({baseline / ours[2]:.1f}x, {ours[1] / ours[2]:.2f}x from 1 to 2)",
        flush=True,
    )


compare("a", POINTS_A, DELTAS_A, 5)
compare("c", POINTS_C, DELTAS_C, 5)
points_b = cube_in_r64(1_000_000)
for delta in DELTAS_B:
    compare(f"b delta={delta}", points_b, [delta], 3)

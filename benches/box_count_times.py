"""`box_count` against the NumPy a user would write (`np.unique` of the floored rows, per scale),
checked equal first: `python benches/box_count_times.py` from the repository root (release build
installed). 200 000 points in R^64 (a uniform 4-cube mapped linearly, `cube_in_r64`), 8 scales
`geomspace(4, 0.01, 8)`; the minimum of 3 rounds."""

import sys

import numpy as np

sys.path.insert(0, "benches")
import moecover  # noqa: E402
from test_bench_cover import cube_in_r64  # noqa: E402
from timing import best as seconds  # noqa: E402

points = cube_in_r64(200_000)
deltas = np.geomspace(4, 0.01, 8)


def numpy_box_count():
    return [len(np.unique(np.floor(points / delta), axis=0)) for delta in deltas]


expected = numpy_box_count()
assert moecover.box_count(points, deltas).tolist() == expected, "box_count differs from np.unique"
baseline = seconds(numpy_box_count, 1)
print(f"cells per scale {expected}; np.unique per scale {baseline:.2f} s (one round)")
for threads in (1, 2):
    ours = seconds(lambda: moecover.box_count(points, deltas, n_threads=threads), 3)
    print(f"moecover.box_count, {threads} thread(s): {ours:.2f} s ({baseline / ours:.1f}x)", flush=True)

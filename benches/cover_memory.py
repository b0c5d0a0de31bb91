"""The memory the nets hold, as they count it (`CoverEngine.memory_bytes`, what the memory limit is
compared with) beside the growth of the process's resident size (Linux, /proc).

    python benches/cover_memory.py M DIM DELTA [float32]

M points of a uniform 4-dimensional cube mapped linearly into R^DIM (DIM <= 4: the cube itself),
covered at one scale DELTA. With DELTA tiny every point is a centre."""

import sys

import numpy as np

import moecover


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


m, dim, delta = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
dtype = np.float32 if sys.argv[4:] == ["float32"] else np.float64
rng = np.random.default_rng(0)
cube = rng.uniform(-1, 1, size=(m, min(dim, 4)))
points = (cube @ rng.normal(size=(min(dim, 4), dim))).astype(dtype, copy=False)
stream = moecover.CoverStream([delta], dim=dim, dtype=dtype)
before = resident_bytes()
stream.add(points)
grown, counted = resident_bytes() - before, stream._engine.memory_bytes()
print(
    f"m {m}, dim {dim}, delta {delta}: net {stream.result().net_sizes[0]}; "
    f"resident +{grown / 2**20:.1f} MiB, counted {counted / 2**20:.1f} MiB ({counted / grown:.2f})"
)

"""Grid throughput on Dask: a grid of 8 points of a few seconds each, run on a LocalCluster of 1 and
of 2 worker processes (1 thread each, each estimate at 1 thread), against the plain local run.
Every run's rows are checked equal to the local run's first.

    python benches/dask_throughput.py [--samples 300000]

The seconds are wall time of `batch.run_grid` as `moecover run` calls it, the cluster's start and
stop included (about 2 s); "points/min" excludes nothing.
"""

import argparse
import os
import sys
import tempfile
import time

from moecover import batch

CONFIG = """
[spec]
experts = 4
d_model = 2
expert_hidden = 2

[inputs]
n = 16

[estimate]
samples = {samples}
replicates = 1
seed = [0, 1, 2, 3, 4, 5, 6, 7]
"""


def comparable(db):
    rows = {}
    for row in batch.stored_rows(db):
        result = row.estimate.to_dict()
        result["provenance"] = {k: v for k, v in result["provenance"].items() if k not in ("seconds", "n_threads")}
        rows[row.key] = result
    return rows


def timed_run(points, folder, name, **how):
    db = os.path.join(folder, f"{name}.db")
    started = time.perf_counter()
    done = batch.run_grid(points, db, progress=False, **how)
    seconds = time.perf_counter() - started
    assert done.ran == len(points) and not done.failed, done
    return seconds, comparable(db)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "grid.toml")
        with open(path, "w") as handle:
            handle.write(CONFIG.format(samples=args.samples))
        points = batch.expand_config(batch.load_config(path))
        local, reference = timed_run(points, folder, "local", jobs=1, threads=1)
        print(f"{len(points)} points, {args.samples} samples each; local, 1 process x 1 thread: {local:.1f} s "
              f"({len(points) / local * 60:.1f} points/min)", flush=True)
        results = {}
        for workers in (1, 2):
            seconds, rows = timed_run(points, folder, f"dask{workers}", executor="dask", jobs=workers, threads=1)
            assert rows == reference, "the dask rows differ from the local run's"
            results[workers] = seconds
            print(f"dask LocalCluster, {workers} worker(s) x 1 thread: {seconds:.1f} s "
                  f"({len(points) / seconds * 60:.1f} points/min)", flush=True)
        print(f"2 workers / 1 worker: {results[1] / results[2]:.2f}x (target >= 1.6x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

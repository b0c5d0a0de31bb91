"""The timing rule of the benchmark scripts: the minimum over rounds (the least disturbed run)."""

import time


def best(call, rounds=3):
    """Seconds of the fastest of `rounds` calls of `call()`."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)

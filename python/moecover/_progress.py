"""A one-line progress bar with ETA on stderr (the estimator's samples, the batch runner's grid)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, unit: str):
        self.total, self.unit, self.done, self.started = total, unit, 0, time.perf_counter()

    def advance(self, count: int = 1) -> None:
        self.done += count
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        filled = int(30 * self.done / max(self.total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {self.unit}, ETA {eta:.0f} s ")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")

"""Progress with an ETA on stderr (the estimator's samples, the batch runner's grid points).

On a terminal, one line redrawn in place; elsewhere (a log, a pipe) a plain line at each tenth of
the work, so that a log holds no `\\r` frames.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, unit: str, stream: TextIO | None = None):
        self.total, self.unit, self.done, self.started = total, unit, 0, time.perf_counter()
        self.stream = sys.stderr if stream is None else stream
        self.redraw = self.stream.isatty()
        self.tenths = 0

    def _status(self) -> str:
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        return f"{self.done}/{self.total} {self.unit}, ETA {eta:.0f} s"

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.redraw:
            filled = int(30 * self.done / max(self.total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self._status()} ")
        else:
            tenths = 10 * self.done // max(self.total, 1)
            if tenths <= self.tenths:
                return
            self.tenths = tenths
            self.stream.write(f"{self._status()}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.redraw:
            self.stream.write("\n")
            self.stream.flush()

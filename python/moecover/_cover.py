"""Exact greedy ℓ∞ nets (definitions §3) at many scales, in one call or streamed, and box counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _core
from ._checks import as_float64, as_scales, check_bytes, memory_limit_bytes, positive_int, resolve_threads

__all__ = ["CoverResult", "CoverStream", "GroupedCoverResult", "GroupedCoverStream", "Net", "added_centres", "box_count", "cover", "greedy_net"]

#: γ(δ) above this: the net still grows with the budget at δ (a net that doubled its points and
#: grew by 7 % or more). A complete net's γ tends to 0; one far from complete has γ near 1.
STILL_GROWING = 0.1


@dataclass(frozen=True, repr=False)
class Net:
    """The greedy δ-net of a point set, scanned in row order.

    Attributes:
        delta: the scale (closed balls: distance exactly δ covers).
        centers: int64 row indices of the centres, in the order they were opened.
        assignment: int64 per point: the index into `centers` of the earliest centre within δ.
    """

    delta: float
    centers: NDArray[np.int64]
    assignment: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.centers)

    def __repr__(self) -> str:
        return f"Net(delta={self.delta:g}, centers={len(self.centers)}, points={len(self.assignment)})"


@dataclass(frozen=True, repr=False)
class CoverResult:
    """Greedy net sizes at many scales.

    Attributes:
        deltas: float64 scales, sorted descending.
        net_sizes: int64 |net_δ| per scale: a δ-cover and δ-packing of the points, so a certified
            lower bound on the class's covering number at δ/2 (definitions §3).
        tail_discovery: float64 per scale: the fraction of the last 10 % of the points that opened
            a centre (≈ 0: the net has saturated; ≈ 1: more points would grow it). NaN when empty.
        n_points, dim: the shape scanned.
        rarefaction: float64 per scale, γ(δ) = Δ log|net_δ| / Δ log m, the least-squares slope over
            the nets of the first m/4, m/2 and m points (definitions §7): how fast the net still
            grows with the budget. Above `STILL_GROWING` the net is sample-limited at that scale.
            NaN with fewer than 8 points or an empty net at m/4.
        singletons: int64 per scale, f1: centres no other point joined. `unseen_mass` = f1/m is
            Good–Turing's estimate of the sampler's mass outside the net's balls.

    Tail discovery and f1/m measure mass under the sampler: both read ≈ 0 while regions the
    sampler almost never visits still hold centres. γ(δ) sees the growth those regions cause;
    a second sampler's or a search's added centres (`added_centres`) see the regions themselves.
    """

    deltas: NDArray[np.float64]
    net_sizes: NDArray[np.int64]
    tail_discovery: NDArray[np.float64]
    n_points: int
    dim: int
    rarefaction: NDArray[np.float64]
    singletons: NDArray[np.int64]

    @property
    def unseen_mass(self) -> NDArray[np.float64]:
        """Good–Turing's f1/m per scale (NaN before any point)."""
        if self.n_points == 0:
            return np.full(len(self.deltas), np.nan)
        return self.singletons / self.n_points

    @property
    def still_growing(self) -> NDArray[np.bool_]:
        """Per scale: γ(δ) above `STILL_GROWING` (False where γ is NaN)."""
        return np.nan_to_num(self.rarefaction, nan=0.0) > STILL_GROWING

    def __repr__(self) -> str:
        pairs = ", ".join(
            f"{d:.3g}: {n}" + ("+" if g else "") for d, n, g in zip(self.deltas, self.net_sizes, self.still_growing)
        )
        note = f"; +: still growing, γ > {STILL_GROWING}" if self.still_growing.any() else ""
        return f"CoverResult(n_points={self.n_points}, dim={self.dim}, net_sizes={{{pairs}}}{note})"


def _as_points(points: ArrayLike, argument: str = "points", check_finite: bool = True) -> NDArray[Any]:
    """(m, d) float32 or float64, C-contiguous (copied once only when it is not), finite; with
    `check_finite=False` the finiteness check is left to the core (`CoverEngine.add` makes it)."""
    return as_float64(argument, points, ndim=2, keep_float32=True, check_finite=check_finite)


def _as_deltas(deltas: ArrayLike) -> NDArray[np.float64]:
    """The scales, checked, sorted descending."""
    return np.sort(as_scales("deltas", deltas))[::-1].copy()


def _engine(deltas: NDArray[np.float64], dim: int, dtype: DTypeLike, keep_assignment: bool) -> _core.CoverEngine:
    """The core's nets, stopped with TooLargeError once they outgrow physical memory (how large a
    net grows depends on the data, so the engine checks as it grows, block by block)."""
    return _core.CoverEngine(
        deltas.tolist(), dim, np.dtype(dtype) == np.float64, keep_assignment, memory_limit_bytes()
    )


class CoverStream:
    """Greedy nets at several scales built from chunks of points, in memory O(net size × dim).

    `add(chunk)` scans a chunk (m_i, dim) after all earlier ones; `result()` gives the same
    `CoverResult` as `cover` on the concatenated chunks, for any chunking. Distances are computed
    in `dtype` (float32 or float64); chunks of another dtype are converted.

    A chunk that fails part-way (a NaN or infinite value, nets that outgrow memory, Ctrl-C) is
    taken back whole: the stream is left as it was before that `add`, and can go on.
    """

    def __init__(self, deltas: ArrayLike, dim: int, dtype: DTypeLike = np.float64, n_threads: int | None = None):
        self._deltas = _as_deltas(deltas)
        dim = positive_int("dim", dim, maximum=2**40)
        try:
            self._dtype = np.dtype(dtype)
        except TypeError as error:
            raise TypeError(f"dtype: expected float32 or float64, got {dtype!r} ({error})") from None
        if self._dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {self._dtype}")
        self._dim = int(dim)
        self._threads = resolve_threads(n_threads)
        self._engine = _engine(self._deltas, self._dim, self._dtype, keep_assignment=False)

    @property
    def n_points(self) -> int:
        """Points scanned so far."""
        return int(self._engine.n_points)

    def add(self, chunk: ArrayLike) -> None:
        """Scans `chunk` (m_i, dim) after everything added before."""
        self._add(chunk, "chunk")

    def _add(self, chunk: ArrayLike, argument: str) -> None:
        array = _as_points(chunk, argument, check_finite=False)
        if array.shape[1] != self._dim:
            raise ValueError(f"{argument}: expected {self._dim} columns (dim), got shape {array.shape}")
        self._engine.add(np.ascontiguousarray(array, dtype=self._dtype), self._threads, argument)

    def result(self) -> CoverResult:
        """Net sizes and diagnostics of everything added so far."""
        return CoverResult(
            deltas=self._deltas.copy(),
            net_sizes=np.asarray(self._engine.net_sizes(), dtype=np.int64),
            tail_discovery=np.asarray(self._engine.tail_discovery(), dtype=np.float64),
            n_points=self.n_points,
            dim=self._dim,
            rarefaction=_rarefaction(self._engine),
            singletons=np.asarray(self._engine.singletons(), dtype=np.int64),
        )


@dataclass(frozen=True, repr=False)
class GroupedCoverResult:
    """Greedy nets per dataset-wide routing pattern (definitions §3, conditioning on routing).

    Attributes:
        deltas: (S,) float64 scales, descending (empty when only the patterns were counted).
        patterns: (G, *pattern_shape) uint32 each group's routing pattern (colex ranks), groups
            numbered in the order their first point arrived.
        members: (G,) int64 points per group.
        net_sizes: (G, S) int64 |net_δ(r)| per group and scale.
        n_points: points scanned.
    """

    deltas: NDArray[np.float64]
    patterns: NDArray[np.uint32]
    members: NDArray[np.int64]
    net_sizes: NDArray[np.int64]
    n_points: int

    @property
    def n_groups(self) -> int:
        return len(self.members)

    @property
    def union_sizes(self) -> NDArray[np.int64]:
        """(S,) Σ_r |net_δ(r)|: the union bound's count of the sampled class."""
        return self.net_sizes.sum(axis=0)

    @property
    def largest_sizes(self) -> NDArray[np.int64]:
        """(S,) max_r |net_δ(r)|: no union is smaller than its largest member."""
        return self.net_sizes.max(axis=0) if len(self.members) else np.zeros(len(self.deltas), dtype=np.int64)

    def __repr__(self) -> str:
        return (f"GroupedCoverResult(n_points={self.n_points}, groups={self.n_groups}, "
                f"union_sizes={self.union_sizes.tolist()})")


class GroupedCoverStream:
    """One greedy net per routing pattern at each scale, fed values and routes together in chunks.

    `add(values, routes)`: rows of `values` (m_i, dim) with their routing patterns `routes`
    (m_i, *pattern_shape), for instance `Evaluation.values` and `Evaluation.routes`. Each row joins
    the group of its pattern, and that group's greedy net (scanned in stream order, so the result
    does not depend on the chunking or the threads). `deltas=None` counts the groups only.
    The groups are numbered and kept in the core; small groups keep light nets. A chunk that fails
    part-way (a NaN, nets past memory, Ctrl-C) leaves the stream unusable: it raises from then on.
    """

    def __init__(self, deltas: ArrayLike | None, dim: int, pattern_shape: Sequence[int], n_threads: int | None = None):
        self._deltas = np.zeros(0) if deltas is None else _as_deltas(deltas)
        dim = positive_int("dim", dim, maximum=2**40)
        if not isinstance(pattern_shape, (tuple, list)) or not pattern_shape:
            raise TypeError(f"pattern_shape: expected a tuple of sizes, got {pattern_shape!r}")
        shape = tuple(positive_int("pattern_shape", k, maximum=2**40) for k in pattern_shape)
        self._dim, self._shape = int(dim), shape
        self._threads = resolve_threads(n_threads)
        self._engine = _core.GroupedEngine(self._deltas.tolist(), self._dim, int(np.prod(shape)), memory_limit_bytes())

    def add(self, values: ArrayLike, routes: ArrayLike) -> None:
        points = as_float64("values", values, ndim=2)
        if points.shape[1] != self._dim:
            raise ValueError(f"values: expected {self._dim} columns (dim), got shape {points.shape}")
        patterns = np.asarray(routes)
        if patterns.ndim >= 1 and len(patterns) != len(points):
            raise ValueError(f"values: {len(points)} rows, but routes has {len(patterns)}: one pattern per row")
        if not np.issubdtype(patterns.dtype, np.integer):
            raise TypeError(f"routes: expected integer colex ranks, got dtype {patterns.dtype}")
        if patterns.shape != (len(points), *self._shape):
            raise ValueError(f"routes: expected shape {(len(points), *self._shape)}, got {patterns.shape}")
        if patterns.size and (patterns.min() < 0 or patterns.max() > np.iinfo(np.uint32).max):
            raise ValueError("routes: colex ranks must lie in [0, 2^32)")
        flat = np.ascontiguousarray(patterns.reshape(len(points), -1), dtype=np.uint32)
        self._engine.add(np.ascontiguousarray(points), flat, self._threads)

    def result(self) -> GroupedCoverResult:
        patterns, members, sizes = self._engine.result()
        groups = len(members)
        return GroupedCoverResult(
            deltas=self._deltas.copy(),
            patterns=patterns.reshape(groups, *self._shape),
            members=members.astype(np.int64),
            net_sizes=sizes.astype(np.int64).reshape(groups, len(self._deltas)),
            n_points=int(self._engine.n_points),
        )

    def memory_bytes(self) -> int:
        """Bytes the groups and their nets hold now."""
        return int(self._engine.memory_bytes())


def _rarefaction(engine: _core.CoverEngine) -> NDArray[np.float64]:
    """γ(δ) per scale from the nets' sizes at m/4, m/2 and m (see `CoverResult.rarefaction`)."""
    m = int(engine.n_points)
    scales = len(engine.net_sizes())
    if m < 8:
        return np.full(scales, np.nan)
    budgets = np.array([m // 4, m // 2, m], dtype=float)
    sizes = np.array([engine.net_sizes_at(int(b)) for b in budgets], dtype=float)  # (3, scales)
    log_m = np.log(budgets) - np.log(budgets).mean()
    with np.errstate(divide="ignore"):
        log_sizes = np.log(sizes)
    gamma = (log_m @ (log_sizes - log_sizes.mean(axis=0))) / (log_m @ log_m)
    return np.where(sizes[0] > 0, gamma, np.nan)


def added_centres(first: ArrayLike, second: ArrayLike, deltas: ArrayLike, n_threads: int | None = None) -> NDArray[np.int64]:
    """Per δ (sorted descending), the centres that the rows of `second` open after the greedy net
    of `first`: the part of the class that `second` (another sampler, or a search) reaches and
    `first` does not, a diagnostic that no statistic of `first` alone can give (definitions §7)."""
    a = _as_points(first, "first")
    b = _as_points(second, "second")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"first, second: expected the same number of columns, got {a.shape[1]} and {b.shape[1]}")
    stream = CoverStream(deltas, a.shape[1], n_threads=n_threads)
    stream._add(a, "first")
    before = stream.result().net_sizes
    stream._add(b, "second")
    return stream.result().net_sizes - before


def cover(points: ArrayLike, deltas: ArrayLike, n_threads: int | None = None) -> CoverResult:
    """Greedy ℓ∞ nets of the rows of `points` (m, d) at every scale in `deltas`, in one call.

    Exactly the sequential net of definitions §3 at each scale; scales run in parallel. float32 input
    is covered in float32, anything else in float64.
    """
    array = _as_points(points, check_finite=False)
    if array.shape[1] == 0:
        raise ValueError("points: need at least one column")
    stream = CoverStream(deltas, array.shape[1], dtype=array.dtype, n_threads=n_threads)
    stream._add(array, "points")
    return stream.result()


def greedy_net(points: ArrayLike, delta: float, n_threads: int | None = None) -> Net:
    """The greedy δ-net of the rows of `points` (m, d), scanned in order, with each point's centre."""
    array = _as_points(points, check_finite=False)
    if array.shape[1] == 0:
        raise ValueError("points: need at least one column")
    if isinstance(delta, (Sequence, np.ndarray)):
        raise TypeError("delta: expected one scale; use cover() for many")
    deltas = _as_deltas([delta])
    rows, dim = array.shape
    check_bytes("points", rows * (8 + 8 + dim * array.itemsize), f"the assignment and worst-case net of {rows} points")
    engine = _engine(deltas, dim, array.dtype, keep_assignment=True)
    engine.add(array, resolve_threads(n_threads), "points")
    assignment = engine.assignment(0)
    assert assignment is not None  # the engine was built with keep_assignment=True
    return Net(delta=float(deltas[0]), centers=engine.centres(0).astype(np.int64), assignment=assignment)


def box_count(points: ArrayLike, deltas: ArrayLike, n_threads: int | None = None) -> NDArray[np.int64]:
    """Occupied cells ⌊x/δ⌋ of the grid of side δ, per δ in the order given: a cheap companion
    estimate that overcounts when the points have low intrinsic dimension in many coordinates."""
    array = _as_points(points)
    given = as_scales("deltas", deltas)  # counts follow the order given
    # A cell index x/δ past 2^53 is no longer exact in floating point (and past 2^63 it saturated
    # the core's integer: two points at 1e300 shared one cell): refuse what cannot be counted.
    largest = max(float(array.max()), -float(array.min())) if array.size else 0.0  # no |x| copy
    if largest / float(given.min()) >= 2.0**53:
        raise ValueError(
            f"points: coordinates up to {largest:.3g} at δ = {given.min():.3g} give cell indices past 2^53, "
            "where floating point no longer tells neighbouring cells apart; rescale the points or use larger deltas"
        )
    return np.asarray(_core.box_count(array, given.tolist(), resolve_threads(n_threads)), dtype=np.int64)

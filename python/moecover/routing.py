"""Routing patterns (definitions §2): top-k expert sets encoded by their colex rank.

A k-subset s_1 < … < s_k of {0, …, M−1} has rank Σ_i C(s_i, i) (i from 1): its position in
colexicographic order, a number in [0, C(M, k)). `evaluate` stores each token's expert set this way.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _core
from ._checks import check_bytes, positive_int, resolve_threads
from ._serial import to_plain
from ._spec import MoESpec

__all__ = [
    "ExactPatterns",
    "PatternCounts",
    "arrangement_bound",
    "count_patterns",
    "exact_patterns",
    "rank",
    "subsets",
    "unrank",
]

_MAX_PATTERNS = 2**32
_MAX_TOP_K = 2**16  # the core refuses larger sizes (spec.rs MAX_SIZE)


def _check_sizes(experts: int, top_k: int) -> tuple[int, int]:
    experts = positive_int("experts", experts)
    top_k = positive_int("top_k", top_k)
    if top_k > experts:
        raise ValueError(f"top_k: top_k = {top_k} exceeds experts = {experts}")
    if math.comb(experts, top_k) >= _MAX_PATTERNS:
        raise ValueError(f"top_k: C({experts}, {top_k}) does not fit the uint32 colex ranks (must be < 2**32)")
    return experts, top_k


def subsets(experts: int, top_k: int) -> NDArray[np.uint32]:
    """Every top_k-subset of range(experts), ascending within a row, rows in colex order:
    uint32 (C(experts, top_k), top_k); row r is `unrank(r, top_k)`."""
    experts, top_k = _check_sizes(experts, top_k)
    count = math.comb(experts, top_k)
    check_bytes("top_k", 4 * count * top_k, f"the C({experts}, {top_k}) subsets")
    return _core.subsets(experts, top_k).reshape(count, top_k)


def rank(subset: Iterable[int]) -> int:
    """The colex rank of a set of distinct expert indices (any order)."""
    if isinstance(subset, (str, bytes)) or not isinstance(subset, Iterable):
        raise TypeError(f"subset: expected a collection of expert indices, got {type(subset).__name__}")
    members = list(subset)
    for s in members:  # integers only: int(2.7) would silently make another set
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral):
            raise TypeError(f"subset: expert indices must be integers, got {s!r}")
    items = sorted(int(s) for s in members)
    if not items:
        raise ValueError("subset: must hold at least one expert index")
    if items[0] < 0 or items[-1] >= 2**32:
        raise ValueError(f"subset: expert indices must be in [0, 2**32), got {items}")
    if len(set(items)) != len(items):
        raise ValueError(f"subset: expert indices must be distinct, got {items}")
    return int(_core.rank(items))


def unrank(rank: int, top_k: int) -> tuple[int, ...]:
    """The top_k-subset (ascending) whose colex rank is `rank`."""
    rank = positive_int("rank", rank, minimum=0, maximum=2**64 - 1)
    top_k = positive_int("top_k", top_k)
    if top_k > _MAX_TOP_K:
        raise ValueError(f"top_k: must be <= {_MAX_TOP_K} (the largest MoESpec), got {top_k}")
    return tuple(_core.unrank(rank, top_k))


def arrangement_bound(experts: int, d_model: int, tokens: int) -> int:
    """Cells of a central arrangement bounding one linear router layer's dataset-wide patterns:
    H = tokens·C(M, 2) hyperplanes (w_a − w_b)·x̃ + (b_a − b_b) = 0 in dimension p = (M−1)(D+1)
    give at most 2 Σ_{i<p} C(H−1, i) cells (definitions §2). For M = 2 this is Cover's count
    2 Σ_{i≤D} C(N−1, i), exact for points in general position. An exact integer."""
    experts = positive_int("experts", experts)
    d_model = positive_int("d_model", d_model)
    tokens = positive_int("tokens", tokens)
    # the sum has (M−1)(D+1) terms of binomials of tokens·C(M, 2): within MoESpec's sizes it is
    # quick; past them (experts = 2**31) it ran for hours
    for name, value, most in (("experts", experts, 1 << 16), ("d_model", d_model, 1 << 16), ("tokens", tokens, 1 << 32)):
        if value > most:
            raise ValueError(f"{name}: at most {most} here, got {value}")
    if (experts - 1) * (d_model + 1) > 1 << 20:
        raise ValueError(f"experts, d_model: the bound sums (experts − 1)(d_model + 1) = {(experts - 1) * (d_model + 1)} "
                         "binomials; at most 2^20 here")
    if experts == 1:
        return 1
    hyperplanes = tokens * math.comb(experts, 2)
    dimension = (experts - 1) * (d_model + 1)
    return 2 * sum(math.comb(hyperplanes - 1, i) for i in range(dimension))


@dataclass(frozen=True, repr=False)
class PatternCounts:
    """Realised routing patterns of m samples on n inputs (definitions §2).

    Attributes:
        per_input: int64 (n,): distinct patterns (layers × seq_len ranks) seen on each input.
        dataset: distinct dataset-wide patterns (n × layers × seq_len) among the samples.
        group: int64 (m,): each sample's dataset-wide pattern id, numbered by first appearance.
        group_sizes: int64 (dataset,): samples per group.
        growth: int64 (n,): distinct dataset-wide patterns over the first n' inputs, n' = 1 … n.
        discovery_samples, discovery: the rarefaction curve: distinct dataset-wide patterns among
            the first m' samples, on a log grid of m' (flat at the end: saturated).
        union_bound_per_input: C(M, k)^(layers·seq_len), the count the paper's union bound ranges
            over (None without `spec`).
        arrangement_bound: the hyperplane-arrangement bound for one linear router layer
            (None without `spec`, or when layers > 1 or heads > 0, where it does not apply).
    """

    per_input: NDArray[np.int64]
    dataset: int
    group: NDArray[np.int64]
    group_sizes: NDArray[np.int64]
    growth: NDArray[np.int64]
    discovery_samples: NDArray[np.int64]
    discovery: NDArray[np.int64]
    union_bound_per_input: int | None
    arrangement_bound: int | None

    def __repr__(self) -> str:
        return (
            f"PatternCounts(samples={len(self.group)}, inputs={len(self.per_input)}, dataset={self.dataset}, "
            f"largest_group={int(self.group_sizes.max()) if self.dataset else 0})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (without the per-sample `group`)."""
        return {f.name: to_plain(getattr(self, f.name)) for f in fields(self) if f.name != "group"}


def count_patterns(routes: Any, spec: MoESpec | None = None, n_threads: int | None = None) -> PatternCounts:
    """Exact counts of the routing patterns in `routes` (m, n, layers, seq_len), as `evaluate`
    returns them. Give the `spec` the routes came from to get the reference bounds beside them."""
    if spec is not None:
        from ._checks import check_spec

        spec = check_spec(spec)
    array = np.asarray(routes)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"routes: expected integer colex ranks (uint32 from evaluate), got dtype {array.dtype}")
    if array.ndim != 4:
        raise ValueError(f"routes: expected 4 dimensions (m, n, layers, seq_len), got shape {array.shape}")
    if array.dtype != np.uint32 and array.size and (array.min() < 0 or array.max() >= 2**32):
        raise ValueError("routes: colex ranks must lie in [0, 2**32)")
    m, n, layers, seq_len = array.shape
    if spec is not None and (layers, seq_len) != (spec.layers, spec.seq_len):
        raise ValueError(f"routes: shape {array.shape} does not match spec (layers={spec.layers}, seq_len={spec.seq_len})")
    if spec is not None and array.size and array.max() >= spec.patterns_per_token:
        raise ValueError(f"routes: ranks must lie in [0, C(M,k)) = [0, {spec.patterns_per_token}) for this spec, "
                         f"got {array.max()}")
    flat = np.ascontiguousarray(array, dtype=np.uint32).ravel()
    per_input, group_u32, growth = _core.count_patterns(flat, m, n, layers * seq_len, resolve_threads(n_threads))
    group = group_u32.astype(np.int64)
    sizes = np.bincount(group, minlength=0) if m else np.zeros(0, dtype=np.int64)
    grid = np.unique(np.round(np.geomspace(1, m, num=min(m, 60))).astype(np.int64)) if m else np.zeros(0, np.int64)
    seen = np.maximum.accumulate(group) + 1 if m else np.zeros(0, np.int64)
    union = arrangement = None
    if spec is not None:
        union = spec.patterns_per_token ** (spec.layers * spec.seq_len)
        if spec.layers == 1 and spec.heads == 0:
            arrangement = arrangement_bound(spec.experts, spec.d_model, max(n, 1) * spec.seq_len)
    return PatternCounts(
        per_input=np.asarray(per_input, dtype=np.int64),
        dataset=int(len(sizes)),
        group=group,
        group_sizes=sizes.astype(np.int64),
        growth=np.asarray(growth, dtype=np.int64),
        discovery_samples=grid,
        discovery=seen[grid - 1] if m else np.zeros(0, np.int64),
        union_bound_per_input=union,
        arrangement_bound=arrangement,
    )


@dataclass(frozen=True, repr=False)
class ExactPatterns:
    """The realisable dataset-wide routing patterns of one linear router on given inputs.

    Attributes:
        count: how many patterns some router weights realise (strictly: ties have measure zero).
        patterns: uint32 (count, n, 1, seq_len) colex ranks, in search order, when requested.
        arrangement_bound: the hyperplane-arrangement bound it must not exceed (definitions §2).
    """

    count: int
    patterns: NDArray[np.uint32] | None
    arrangement_bound: int

    def __repr__(self) -> str:
        return f"ExactPatterns(count={self.count}, arrangement_bound={self.arrangement_bound})"


def exact_patterns(
    spec: MoESpec,
    inputs: Any,
    n_threads: int | None = None,
    max_patterns: int = 10**7,
    return_patterns: bool = False,
) -> ExactPatterns:
    """Exactly the dataset-wide routing patterns that some router weights realise on `inputs`
    (n, seq_len, d_model), for specs with layers = 1 and heads = 0 (the router then sees the raw
    tokens). Depth-first search over tokens with an LP feasibility test per node (definitions §2);
    stops with ValueError past `max_patterns`."""
    from ._checks import check_inputs, check_spec

    spec = check_spec(spec)
    if spec.layers != 1 or spec.heads != 0:
        raise ValueError(
            f"spec: exact_patterns handles one layer without attention (the router must see the raw "
            f"tokens); got layers={spec.layers}, heads={spec.heads}"
        )
    x = check_inputs(spec, inputs)
    # A linear router's realisable patterns on c·x are those on x for any c > 0 (the weights absorb
    # c), so far-off magnitudes are brought near 1 by a power of two, exactly: at 1e200 the LP's
    # squared norms overflowed (a panic in the solver).
    largest = float(np.abs(x).max()) if x.size else 0.0
    if largest > 2.0**64 or 0 < largest < 2.0**-64:
        x = np.ldexp(x, -math.frexp(largest)[1])
    max_patterns = positive_int("max_patterns", max_patterns)
    n = x.shape[0]
    if return_patterns:
        check_bytes("max_patterns", 4 * max_patterns * n * spec.seq_len, f"up to {max_patterns} patterns")
    count, flat = _core.exact_patterns(
        spec.experts, spec.top_k, spec.d_model, x.ravel(), max_patterns, return_patterns, resolve_threads(n_threads)
    )
    patterns = None if flat is None else flat.reshape(count, n, 1, spec.seq_len)
    return ExactPatterns(
        count=int(count),
        patterns=patterns,
        arrangement_bound=arrangement_bound(spec.experts, spec.d_model, n * spec.seq_len),
    )

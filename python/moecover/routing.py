"""Routing patterns (MATH.md §2): top-k expert sets encoded by their colex rank.

A k-subset s_1 < … < s_k of {0, …, M−1} has rank Σ_i C(s_i, i) (i from 1): its position in
colexicographic order, a number in [0, C(M, k)). `evaluate` stores each token's expert set this way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from . import _core
from ._checks import check_bytes, positive_int

__all__ = ["rank", "subsets", "unrank"]

_MAX_PATTERNS = 2**32


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
    items = sorted(int(s) for s in subset)
    if not items:
        raise ValueError("subset: must hold at least one expert index")
    if items[0] < 0 or items[-1] >= 2**32:
        raise ValueError(f"subset: expert indices must be in [0, 2**32), got {items}")
    if len(set(items)) != len(items):
        raise ValueError(f"subset: expert indices must be distinct, got {items}")
    return int(_core.rank(items))


def unrank(rank: int, top_k: int) -> tuple[int, ...]:
    """The top_k-subset (ascending) whose colex rank is `rank`."""
    rank = positive_int("rank", rank, minimum=0)
    top_k = positive_int("top_k", top_k)
    if rank >= 2**64:
        raise ValueError(f"rank: must be < 2**64, got {rank}")
    return tuple(_core.unrank(rank, top_k))

"""Seeds: every random result in moecover is a function of one unsigned 64-bit integer seed."""

from __future__ import annotations

import numbers
import secrets
from typing import Union

import numpy as np

__all__ = ["RngLike", "resolve_seed", "derive_seeds"]

RngLike = Union[int, np.integer, np.random.Generator, None]

_U64 = 1 << 64


def resolve_seed(rng: RngLike) -> int:
    """The integer seed that `rng` stands for (SPEC 7 inputs).

    - an int in [0, 2**64): that seed;
    - a `numpy.random.Generator`: one 64-bit draw from it (the generator advances);
    - None: fresh OS entropy.

    Results record this integer: passing it back as `rng` replays a run exactly.
    """
    if rng is None:
        return secrets.randbits(64)
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, _U64, dtype=np.uint64))
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral):
        raise TypeError(f"rng: expected an int, a numpy.random.Generator or None, got {type(rng).__name__}")
    if not 0 <= int(rng) < _U64:
        raise ValueError(f"rng: an integer seed must be in [0, 2**64), got {rng}")
    return int(rng)


def derive_seeds(seed: int, count: int) -> list[int]:
    """`count` independent 64-bit seeds derived from `seed` (NumPy's SeedSequence spawning)."""
    children = np.random.SeedSequence(seed).spawn(count)
    return [int(child.generate_state(1, dtype=np.uint64)[0]) for child in children]

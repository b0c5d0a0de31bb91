"""Type stubs of the private native module (rust/py). Users import from `moecover`."""

from typing import final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CoreSpec",
    "CoverEngine",
    "GroupedEngine",
    "box_count",
    "certify_full_row_rank",
    "count_patterns",
    "evaluate",
    "evaluate_sampled",
    "exact_patterns",
    "gram_full_row_rank",
    "jacobian",
    "rank",
    "sample_params",
    "subsets",
    "unrank",
]

@final
class CoreSpec:
    def __new__(
        cls,
        layers: int,
        experts: int,
        top_k: int,
        d_model: int,
        seq_len: int,
        heads: int,
        expert: str,
        expert_hidden: int,
        gate: str,
        block: str,
        readout: str,
        param_bound: float,
    ) -> CoreSpec: ...
    @property
    def active_params(self) -> int: ...
    @property
    def total_params(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    @property
    def patterns_per_token(self) -> int: ...
    def layout(self) -> list[tuple[str, int, str, int | None, str, list[int], int, int]]: ...

def sample_params(
    spec: CoreSpec,
    seed: int,
    start: int,
    m: int,
    sampler: str,
    pinned: list[tuple[int, list[float]]],
    n_threads: int,
) -> NDArray[np.float64]: ...
def evaluate(
    spec: CoreSpec, params: NDArray[np.float64], inputs: NDArray[np.float64], n_threads: int
) -> tuple[NDArray[np.float64], NDArray[np.uint32]]: ...
def jacobian(
    spec: CoreSpec, params: NDArray[np.float64], inputs: NDArray[np.float64], n_threads: int
) -> tuple[NDArray[np.float64], NDArray[np.uint32], NDArray[np.float64], list[bool]]: ...
def certify_full_row_rank(
    spec: CoreSpec,
    params: NDArray[np.float64],
    inputs: NDArray[np.float64],
    free: list[tuple[int, int]],
    rtol: float,
    n_threads: int,
) -> tuple[NDArray[np.uint32], list[bool], list[bool]]: ...
def gram_full_row_rank(matrices: NDArray[np.float64], rows: int, width: int, rtol: float) -> list[bool]: ...
def evaluate_sampled(
    spec: CoreSpec,
    inputs: NDArray[np.float64],
    seed: int,
    start: int,
    m: int,
    sampler: str,
    pinned: list[tuple[int, list[float]]],
    n_threads: int,
) -> tuple[NDArray[np.float64], NDArray[np.uint32]]: ...

@final
class CoverEngine:
    def __new__(
        cls, deltas: list[float], dim: int, double: bool, keep_assignment: bool, memory_limit: int
    ) -> CoverEngine: ...
    def add(self, points: NDArray[np.float32] | NDArray[np.float64], n_threads: int, argument: str) -> None: ...
    @property
    def n_points(self) -> int: ...
    def net_sizes(self) -> list[int]: ...
    def tail_discovery(self) -> list[float]: ...
    def net_sizes_at(self, points: int) -> list[int]: ...
    def singletons(self) -> list[int]: ...
    def memory_bytes(self) -> int: ...
    def centres(self, scale: int) -> NDArray[np.uint64]: ...
    def assignment(self, scale: int) -> NDArray[np.int64] | None: ...

@final
class GroupedEngine:
    def __new__(cls, deltas: list[float], dim: int, pattern_len: int, memory_limit: int) -> GroupedEngine: ...
    def add(self, points: NDArray[np.float64], routes: NDArray[np.uint32], n_threads: int) -> None: ...
    @property
    def n_points(self) -> int: ...
    def memory_bytes(self) -> int: ...
    def result(self) -> tuple[NDArray[np.uint32], NDArray[np.uint64], NDArray[np.uint64]]: ...

def box_count(points: NDArray[np.float32] | NDArray[np.float64], deltas: list[float], n_threads: int) -> list[int]: ...
def subsets(experts: int, top_k: int) -> NDArray[np.uint32]: ...
def rank(subset: list[int]) -> int: ...
def unrank(rank: int, top_k: int) -> list[int]: ...
def count_patterns(
    routes: NDArray[np.uint32], m: int, n: int, width: int, n_threads: int
) -> tuple[list[int], NDArray[np.uint32], list[int]]: ...
def exact_patterns(
    experts: int,
    top_k: int,
    d_model: int,
    tokens: NDArray[np.float64],
    max_patterns: int,
    return_patterns: bool,
    n_threads: int,
) -> tuple[int, NDArray[np.uint32] | None]: ...

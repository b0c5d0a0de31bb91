"""Type stubs of the private native module (rust/py). Users import from `moecover`."""

import numpy as np
from numpy.typing import NDArray

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
    def layout(self) -> list[tuple[str, list[int], int, int]]: ...

def sample_params(
    spec: CoreSpec, seed: int, start: int, m: int, pinned: list[tuple[int, list[float]]], n_threads: int
) -> NDArray[np.float64]: ...
def evaluate(
    spec: CoreSpec, params: NDArray[np.float64], inputs: NDArray[np.float64], n_threads: int
) -> tuple[NDArray[np.float64], NDArray[np.uint32]]: ...
def evaluate_sampled(
    spec: CoreSpec,
    inputs: NDArray[np.float64],
    seed: int,
    start: int,
    m: int,
    pinned: list[tuple[int, list[float]]],
    n_threads: int,
) -> tuple[NDArray[np.float64], NDArray[np.uint32]]: ...

"""Sampling parameters and evaluating the class on inputs (the Rust core does the work)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core
from ._checks import (
    DEFAULT_SAMPLER,
    check_bytes,
    check_inputs,
    check_params,
    check_sampler,
    check_spec,
    check_start,
    positive_int,
    resolve_pinned,
    resolve_threads,
)
from ._rng import RngLike, resolve_seed
from ._spec import MoESpec

__all__ = ["Evaluation", "evaluate", "evaluate_sampled", "sample_params"]

@dataclass(frozen=True, repr=False)
class Evaluation:
    """Outputs of many parameter samples on a set of inputs.

    Attributes:
        values: float64 (m, n, output_dim): f_θs(x_i).
        routes: uint32 (m, n, layers, seq_len): each token's top-k expert set as its colex rank
            (definitions §2), per layer.
        seed: the integer seed the samples came from (None when parameters were given).
        start: index of the first sample in its seed's stream.
        n_threads: threads used (results do not depend on it).
        sampler: the parameter sampler (None when parameters were given).
    """

    values: NDArray[np.float64]
    routes: NDArray[np.uint32]
    seed: int | None
    start: int
    n_threads: int
    sampler: str | None = None

    def __repr__(self) -> str:
        return (
            f"Evaluation(values={self.values.dtype}{list(self.values.shape)}, "
            f"routes={self.routes.dtype}{list(self.routes.shape)}, seed={self.seed}, start={self.start}, "
            f"n_threads={self.n_threads}" + (f", sampler={self.sampler!r})" if self.sampler else ")")
        )


def _check_output_size(spec: MoESpec, m: int, n: int) -> None:
    per_pair = 8 * spec.output_dim + 4 * spec.layers * spec.seq_len
    check_bytes("m", m * n * per_pair, f"values and routes of m={m} samples on n={n} inputs")


def _shape_outputs(spec: MoESpec, values: NDArray[Any], routes: NDArray[Any], m: int, n: int) -> tuple[Any, Any]:
    return (
        values.reshape(m, n, spec.output_dim),
        routes.reshape(m, n, spec.layers, spec.seq_len),
    )


def sample_params(
    spec: MoESpec,
    m: int,
    rng: RngLike = None,
    start: int = 0,
    pinned: Mapping[str, ArrayLike] | None = None,
    n_threads: int | None = None,
    sampler: str = DEFAULT_SAMPLER,
) -> NDArray[np.float64]:
    """Samples `start … start+m-1` of the seed `rng`: float64 (m, total_params).

    Every coordinate lies in [-param_bound, param_bound], drawn by `sampler` (definitions §7):
    `"uniform"`; `"arcsine"` (density 1/(π√(B² − x²)), mass near the faces); `"faces"` (the
    default: per row a rate ρ ~ U[0, 1), each coordinate on a face ±B with probability ρ, else
    uniform, a continuous mixture from uniform rows to corners); `"mixture"` (each row from one
    of those three, with weights 1/6, 1/6, 2/3). Row s depends only on
    (seed, start + s, sampler), so any sub-range can be regenerated and nothing depends on
    `n_threads`. `pinned` maps block names (see `spec.layout`) to arrays of the block's shape that
    replace the sampled values; the other coordinates are the same as without the pin. To replay a
    run from a Generator or None, resolve the seed first with `moecover.resolve_seed` and pass the
    integer.
    """
    spec = check_spec(spec)
    m = positive_int("m", m)
    start = check_start(start, m)
    sampler = check_sampler(sampler)
    pinned_blocks = resolve_pinned(spec, pinned)
    check_bytes("m", 8 * m * spec.total_params, f"parameters of m={m} samples")
    seed = resolve_seed(rng)
    flat = _core.sample_params(spec._core, seed, start, m, sampler, pinned_blocks, resolve_threads(n_threads))
    return flat.reshape(m, spec.total_params)


def evaluate(spec: MoESpec, params: ArrayLike, inputs: ArrayLike, n_threads: int | None = None) -> Evaluation:
    """Evaluates f_θ on every input for every row θ of `params`.

    Args:
        spec: the class.
        params: (m, total_params) or (total_params,), any real dtype (converted once to float64).
        inputs: (n, seq_len, d_model).
        n_threads: worker threads (default: MOECOVER_NUM_THREADS, else all cores).

    Returns:
        An `Evaluation` with values (m, n, output_dim) and routes (m, n, layers, seq_len); for a 1-D
        `params` the leading axis is dropped.
    """
    spec = check_spec(spec)
    theta, single = check_params(spec, params)
    m = theta.shape[0]
    x = check_inputs(spec, inputs)
    n = x.shape[0]
    _check_output_size(spec, m, n)
    threads = resolve_threads(n_threads)
    values, routes = _core.evaluate(spec._core, theta.ravel(), x.ravel(), threads)
    values, routes = _shape_outputs(spec, values, routes, m, n)
    if single:
        values, routes = values[0], routes[0]
    return Evaluation(values, routes, seed=None, start=0, n_threads=threads)


def evaluate_sampled(
    spec: MoESpec,
    inputs: ArrayLike,
    m: int,
    rng: RngLike = None,
    pinned: Mapping[str, ArrayLike] | None = None,
    start: int = 0,
    n_threads: int | None = None,
    sampler: str = DEFAULT_SAMPLER,
) -> Evaluation:
    """`evaluate(spec, sample_params(spec, m, rng, start, pinned, sampler=sampler), inputs)`, bit
    for bit, without materialising the (m, total_params) parameter array. The result records the
    integer seed."""
    spec = check_spec(spec)
    m = positive_int("m", m)
    start = check_start(start, m)
    sampler = check_sampler(sampler)
    pinned_blocks = resolve_pinned(spec, pinned)
    x = check_inputs(spec, inputs)
    n = x.shape[0]
    _check_output_size(spec, m, n)
    seed = resolve_seed(rng)
    threads = resolve_threads(n_threads)
    values, routes = _core.evaluate_sampled(spec._core, x.ravel(), seed, start, m, sampler, pinned_blocks, threads)
    values, routes = _shape_outputs(spec, values, routes, m, n)
    return Evaluation(values, routes, seed=seed, start=start, n_threads=threads, sampler=sampler)

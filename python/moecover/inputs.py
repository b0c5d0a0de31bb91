"""Seeded input sets for the paper's manifold data model: arrays (n, seq_len, d_model).

Each sampler puts n·seq_len token vectors on a manifold of known intrinsic dimension inside
R^{d_model} and returns an `Inputs` array carrying that dimension in `.intrinsic_dim`.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ._checks import check_bytes, positive_int
from ._rng import RngLike, resolve_seed

if TYPE_CHECKING:
    from ._spec import MoESpec

__all__ = ["Inputs", "box", "grid", "one_per_expert", "one_per_expert_router", "sphere", "swiss_roll", "torus"]


class Inputs(np.ndarray):
    """A float64 array (n, seq_len, d_model) that knows the intrinsic dimension of its tokens."""

    intrinsic_dim: int
    seed: int | None

    def __new__(cls, values: NDArray[np.float64], intrinsic_dim: int, seed: int | None) -> Inputs:
        array = np.asarray(values, dtype=np.float64).view(cls)
        array.intrinsic_dim = intrinsic_dim
        array.seed = seed
        return array

    def __array_finalize__(self, obj: Any) -> None:
        self.intrinsic_dim = getattr(obj, "intrinsic_dim", 0)
        self.seed = getattr(obj, "seed", None)


def _sizes(n: int, seq_len: int, d_model: int, intrinsic: int | None = None, minimum_ambient: int = 1) -> tuple[int, int, int]:
    n = positive_int("n", n)
    seq_len = positive_int("seq_len", seq_len)
    d_model = positive_int("d_model", d_model)
    if d_model < minimum_ambient:
        raise ValueError(f"d_model: this manifold needs d_model >= {minimum_ambient}, got {d_model}")
    if intrinsic is not None and intrinsic > d_model:
        raise ValueError(f"dim: intrinsic dimension {intrinsic} exceeds d_model = {d_model}")
    # the tokens, their intrinsic coordinates and one temporary of the embedding; blamed on the
    # largest of the three sizes, the one to change
    largest = max((n, "n"), (seq_len, "seq_len"), (d_model, "d_model"))[1]
    check_bytes(largest, 3 * 8 * n * seq_len * d_model, f"{n} inputs of {seq_len} x {d_model}")
    return n, seq_len, d_model


def _embed(points: NDArray[np.float64], d_model: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Places points of R^k into R^{d_model} by a random isometry (orthonormal columns)."""
    k = points.shape[1]
    basis, _ = np.linalg.qr(rng.normal(size=(d_model, k)))
    return points @ basis.T


def _finish(tokens: NDArray[np.float64], n: int, seq_len: int, d_model: int, dim: int, seed: int | None) -> Inputs:
    return Inputs(tokens.reshape(n, seq_len, d_model), dim, seed)


def box(n: int, seq_len: int = 1, d_model: int = 2, dim: int | None = None, rng: RngLike = None) -> Inputs:
    """Tokens uniform in the cube [−1, 1]^dim embedded isometrically in R^{d_model}
    (dim = d_model by default: the full box, no embedding)."""
    dim = d_model if dim is None else positive_int("dim", dim)
    n, seq_len, d_model = _sizes(n, seq_len, d_model, dim)
    seed = resolve_seed(rng)
    g = np.random.default_rng(seed)
    cube = g.uniform(-1, 1, size=(n * seq_len, dim))
    tokens = cube if dim == d_model else _embed(cube, d_model, g)
    return _finish(tokens, n, seq_len, d_model, dim, seed)


def sphere(n: int, seq_len: int = 1, d_model: int = 3, dim: int | None = None, rng: RngLike = None) -> Inputs:
    """Tokens uniform on the unit sphere S^dim ⊂ R^{dim+1}, embedded isometrically in R^{d_model}
    (dim = d_model − 1 by default)."""
    dim = positive_int("d_model", d_model) - 1 if dim is None else positive_int("dim", dim)
    if dim < 1:
        raise ValueError(f"dim: a sphere needs dim >= 1 (d_model >= 2), got {dim}")
    n, seq_len, d_model = _sizes(n, seq_len, d_model, dim + 1)
    seed = resolve_seed(rng)
    g = np.random.default_rng(seed)
    gauss = g.normal(size=(n * seq_len, dim + 1))
    points = gauss / np.linalg.norm(gauss, axis=1, keepdims=True)
    tokens = points if dim + 1 == d_model else _embed(points, d_model, g)
    return _finish(tokens, n, seq_len, d_model, dim, seed)


def torus(n: int, seq_len: int = 1, d_model: int = 4, rng: RngLike = None) -> Inputs:
    """Tokens uniform in angle on the flat torus S^1 × S^1 ⊂ R^4 (intrinsic dimension 2),
    embedded isometrically in R^{d_model}."""
    n, seq_len, d_model = _sizes(n, seq_len, d_model, minimum_ambient=4)
    seed = resolve_seed(rng)
    g = np.random.default_rng(seed)
    angles = g.uniform(0, 2 * np.pi, size=(n * seq_len, 2))
    points = np.column_stack([np.cos(angles[:, 0]), np.sin(angles[:, 0]), np.cos(angles[:, 1]), np.sin(angles[:, 1])])
    tokens = points if d_model == 4 else _embed(points, d_model, g)
    return _finish(tokens, n, seq_len, d_model, 2, seed)


def swiss_roll(n: int, seq_len: int = 1, d_model: int = 3, rng: RngLike = None) -> Inputs:
    """Tokens on the swiss roll (t cos t, h, t sin t)/(4.5π), t ∈ [1.5π, 4.5π], h ∈ [−1, 1]
    (intrinsic dimension 2, scaled into the unit box), embedded isometrically in R^{d_model}."""
    n, seq_len, d_model = _sizes(n, seq_len, d_model, minimum_ambient=3)
    seed = resolve_seed(rng)
    g = np.random.default_rng(seed)
    t = g.uniform(1.5 * np.pi, 4.5 * np.pi, size=n * seq_len)
    h = g.uniform(-1, 1, size=n * seq_len)
    points = np.column_stack([t * np.cos(t), h * 4.5 * np.pi, t * np.sin(t)]) / (4.5 * np.pi)
    tokens = points if d_model == 3 else _embed(points, d_model, g)
    return _finish(tokens, n, seq_len, d_model, 2, seed)


def grid(n: int, seq_len: int = 1, d_model: int = 1, low: float = -1.0, high: float = 1.0) -> Inputs:
    """Evenly spaced inputs for exact tests: n points from `low` to `high` along the first
    coordinate of every token (others 0); intrinsic dimension 1. Deterministic (no seed)."""
    n, seq_len, d_model = _sizes(n, seq_len, d_model)
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")  # ±inf gave NaN inputs
    if not low < high:
        raise ValueError(f"low, high: need low < high, got {low!r}, {high!r}")
    tokens = np.zeros((n, seq_len, d_model))
    tokens[:, :, 0] = np.linspace(low, high, n)[:, None]
    return Inputs(tokens, 1, None)


# --- the active-against-total contrast (definitions §4) ----------------------------------------


def one_per_expert(spec: MoESpec) -> Inputs:
    """`spec.experts` inputs (experts, seq_len, d_model), input i with every token at 0.1·i on the
    first coordinate and 0 elsewhere: under `one_per_expert_router(spec)` the first layer sends
    input i to expert i (and its k − 1 nearest neighbours when top_k > 1).

    With constant experts and top_k = 1 this is the class of definitions §4 whose covering number
    is ⌈B/δ⌉^M while the paper's active count is 1: the sup norm over the inputs sees every expert.
    """
    from ._checks import check_spec

    spec = check_spec(spec)
    x = np.zeros((spec.experts, spec.seq_len, spec.d_model))
    x[:, :, 0] = 0.1 * np.arange(spec.experts)[:, None]
    return Inputs(x, intrinsic_dim=1, seed=None)


def one_per_expert_router(spec: MoESpec) -> dict[str, NDArray[np.float64]]:
    """Pinned router blocks (for `pinned=`) of every layer: expert j scores `j·x_0 − 0.05·j²`, the
    tangent at `x_0 = 0.1·j` of the parabola `5·x_0²`, so the highest score on a token whose first
    coordinate is 0.1·i is expert i's (see `one_per_expert`). Layers after the first see the
    first's output, so for them the routing is only what these weights make of it."""
    from ._checks import check_spec

    spec = check_spec(spec)
    j = np.arange(spec.experts, dtype=float)
    weight = np.zeros((spec.experts, spec.d_model))
    weight[:, 0] = j
    bias = -(j**2) * 0.1 / 2
    pinned: dict[str, NDArray[np.float64]] = {}
    for layer in range(spec.layers):
        pinned[f"layers.{layer}.router.weight"] = weight.copy()
        pinned[f"layers.{layer}.router.bias"] = bias.copy()
    return pinned

"""Regression problems of known intrinsic dimension d and smoothness β (definitions §9).

A `RegressionProblem` is a value: inputs on a manifold of `moecover.inputs` (dimension d inside
R^ambient), a target f* Hölder of order β, and Gaussian noise of standard deviation `noise`
(Weierstrass-type targets are scaled so that Σ_k a_k²/2 = 1, their variance were every term to
oscillate many times over the manifold; the slow terms make it 0.5–1, so `noise` is about
relative). Two kinds of target:

- "weierstrass": Σ_k b^{−kβ} cos(b^k ⟨u_k, x⟩ + φ_k), k = 0 … terms − 1 (0 < β < 1), rough to
  order β at every point: the worst case the minimax rate n^{−2β/(2β+d)} describes, and the one to
  check exponents on;
- "kinks": Σ_j a_j |⟨u_j, x⟩ − t_j|^β, Hölder of order β only on the kinks (a null set): easier than
  the worst case, fitted faster than the minimax rate.

The directions, phases and weights come from the problem's `seed`; the inputs and the noise from
the `rng` of each draw, so one problem gives any number of independent training and test sets.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import inputs as input_samplers
from ._checks import as_float64, positive_int
from ._rng import RngLike, resolve_seed

__all__ = ["KINDS", "MANIFOLDS", "RegressionProblem", "RegressionSample"]

#: Manifold name → (its dimension if fixed, the least ambient dimension for dimension d).
MANIFOLDS: dict[str, tuple[int | None, Any]] = {
    "box": (None, lambda d: d),
    "sphere": (None, lambda d: d + 1),
    "torus": (2, lambda d: 4),
    "swiss_roll": (2, lambda d: 3),
}
KINDS = ("weierstrass", "kinks")


@dataclass(frozen=True)
class RegressionSample:
    """n draws of a problem: inputs `x` (n, ambient), noisy responses `y` (n,), and the noiseless
    target values `f` (n,) for excess risks."""

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    f: NDArray[np.float64]


@dataclass(frozen=True)
class RegressionProblem:
    """A regression problem of known d and β (see the module's docstring).

    manifold: "box" (the cube [−1, 1]^d, embedded linearly), "sphere" (S^d), "torus" (d = 2) or
        "swiss_roll" (d = 2), placed in R^ambient by a random isometry.
    d, ambient: the intrinsic and the ambient dimension (ambient ≥ what the manifold needs).
    beta: the Hölder order; 0 < beta < 1 for "weierstrass", beta > 0 for "kinks".
    noise: the standard deviation of the additive Gaussian noise (targets have variance ≲ 1).
    seed: the target's directions, phases and weights.
    terms: the number of terms of the sum; base: b of the Weierstrass sum (frequencies b^k).
    """

    manifold: str = "sphere"
    d: int = 1
    ambient: int = 2
    beta: float = 0.5
    kind: str = "weierstrass"
    noise: float = 0.0
    seed: int = 0
    terms: int = 24
    base: float = 2.0

    def __post_init__(self) -> None:
        if self.manifold not in MANIFOLDS:
            raise ValueError(f"manifold: expected one of {sorted(MANIFOLDS)}, got {self.manifold!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {list(KINDS)}, got {self.kind!r}")
        d = positive_int("d", self.d)
        ambient = positive_int("ambient", self.ambient)
        fixed, least_ambient = MANIFOLDS[self.manifold]
        if fixed is not None and d != fixed:
            raise ValueError(f"d: the {self.manifold} has dimension {fixed}, got d = {d}")
        if d > ambient or ambient < least_ambient(d):
            raise ValueError(f"d: a {self.manifold} of dimension {d} needs ambient >= {least_ambient(d)}, got {ambient}")
        beta = _real("beta", self.beta)
        if not beta > 0:
            raise ValueError(f"beta: the smoothness must be > 0, got {self.beta!r}")
        if self.kind == "weierstrass" and not beta < 1:
            raise ValueError(f"beta: a Weierstrass-type target needs 0 < beta < 1, got {self.beta!r}")
        if not _real("noise", self.noise) >= 0:
            raise ValueError(f"noise: expected a standard deviation >= 0, got {self.noise!r}")
        if not _real("base", self.base) > 1:
            raise ValueError(f"base: the frequency ratio must be > 1, got {self.base!r}")
        positive_int("terms", self.terms)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {self.seed!r}")

    @property
    def theory_exponent(self) -> float:
        """2β/(2β + d): the minimax exponent of the excess risk in n (definitions §9)."""
        return 2 * self.beta / (2 * self.beta + self.d)

    @property
    def native(self) -> int:
        """The dimension of the space the manifold is drawn in before its embedding in R^ambient."""
        return int(MANIFOLDS[self.manifold][1](self.d))

    def _embedding(self) -> NDArray[np.float64]:
        """The problem's isometry R^native → R^ambient (orthonormal columns), from `seed`: every
        draw of inputs lies on the same manifold."""
        if self.native == self.ambient:
            return np.eye(self.ambient)
        g = np.random.default_rng([int(self.seed), 0xE3B])
        basis, _ = np.linalg.qr(g.normal(size=(self.ambient, self.native)))
        return basis

    def _coefficients(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """(directions (terms, ambient), phases or offsets, amplitudes or weights), from `seed`.
        The directions are unit vectors of the manifold's own space, carried by the embedding, so
        that a target reads the same on the manifold whatever the ambient dimension."""
        g = np.random.default_rng([int(self.seed), 0x7A12])
        directions = g.normal(size=(self.terms, self.native))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        directions = directions @ self._embedding().T
        k = np.arange(self.terms)
        if self.kind == "weierstrass":
            phases = g.uniform(0, 2 * np.pi, size=self.terms)
            amplitudes = np.asarray(float(self.base) ** (-k * float(self.beta)), dtype=np.float64)
            amplitudes /= math.sqrt(np.sum(amplitudes**2) / 2)  # Σ a_k²/2 = 1
            return directions, phases, amplitudes
        offsets = g.uniform(-0.5, 0.5, size=self.terms)
        weights = g.normal(size=self.terms) / math.sqrt(self.terms)
        return directions, offsets, weights

    def target(self, x: ArrayLike) -> NDArray[np.float64]:
        """f*(x) for points x of shape (n, ambient) (or (n, seq_len, d_model) with seq_len 1)."""
        points = self._points(x)
        directions, shift, amplitudes = self._coefficients()
        projections = points @ directions.T  # (n, terms)
        if self.kind == "weierstrass":
            frequencies = float(self.base) ** np.arange(self.terms)
            return np.cos(projections * frequencies + shift) @ amplitudes
        return np.abs(projections - shift) ** float(self.beta) @ amplitudes

    def inputs(self, n: int, rng: RngLike = None) -> NDArray[np.float64]:
        """n points (n, ambient) on the manifold, from `rng`."""
        n = positive_int("n", n)
        seed = resolve_seed(rng)
        sampler = getattr(input_samplers, self.manifold)
        extra = {"dim": self.d} if self.manifold in ("box", "sphere") else {}
        tokens = sampler(n, seq_len=1, d_model=self.native, rng=seed, **extra)
        return np.asarray(tokens).reshape(n, self.native) @ self._embedding().T

    def sample(self, n: int, rng: RngLike = None) -> RegressionSample:
        """n independent draws (x, y = f*(x) + noise·ε, f*(x)) from `rng`."""
        seed = resolve_seed(rng)
        x = self.inputs(n, rng=np.random.default_rng([seed, 1]))
        f = self.target(x)
        y = f + float(self.noise) * np.random.default_rng([seed, 2]).standard_normal(n)
        return RegressionSample(x, y, f)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _points(self, x: ArrayLike) -> NDArray[np.float64]:
        points = as_float64("x", x, (2, 3))
        if points.ndim == 3 and points.shape[1] == 1:
            points = points.reshape(points.shape[0], points.shape[2])
        if points.ndim != 2 or points.shape[1] != self.ambient:
            raise ValueError(f"x: expected points of shape (n, {self.ambient}), got {points.shape}")
        return points


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return number

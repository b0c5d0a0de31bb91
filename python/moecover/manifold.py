"""Estimating the intrinsic dimension d and the smoothness β from data (definitions §10).

Needs the `[manifold]` extra (`pip install "moecover[manifold]"`: scikit-dimension, pinned, whose
nearest-neighbour estimators this module calls rather than rewrites, and scikit-learn/SciPy with
it).

- `intrinsic_dimension`: d̂ per method (Levina–Bickel MLE, TwoNN, correlation integral, ...)
  against scale (sample size, neighbourhood size), with intervals, duplicates removed and counted.
- `smoothness`: β̂ with an interval, by the increments of the values (the variogram, with its
  noise floor fitted) or by inverting a k-NN learning-curve exponent (`knn_learning_curve`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import MissingDependency, as_float64, positive_int
from ._knn import knn_predictions
from ._rng import RngLike, resolve_seed

__all__ = [
    "DIMENSION_METHODS",
    "DimensionEstimate",
    "DimensionRow",
    "KnnLearningCurve",
    "SmoothnessEstimate",
    "intrinsic_dimension",
    "knn_learning_curve",
    "nearest_neighbour_noise",
    "smoothness",
]

#: The estimators `intrinsic_dimension` offers: name → (scikit-dimension class, whether it has a
#: neighbourhood size). "mle": Levina–Bickel; "twonn": Facco et al.'s two nearest neighbours (no
#: neighbourhood: its scale is the sample size); "corrint": Grassberger–Procaccia's correlation
#: integral between the k-th and 2k-th neighbour distances; "lpca": local PCA (the number of
#: principal components above 5 % of the largest, in each point's k-neighbourhood, averaged over
#: the points): exact on flat pieces, blind to noise below that fraction, slower (needs k > d).
DIMENSION_METHODS = {
    "mle": ("MLE", True),
    "twonn": ("TwoNN", False),
    "corrint": ("CorrInt", True),
    "lpca": ("lPCA", True),
}

#: The z-value of the two-sided 90 % intervals.
Z90 = 1.6448536269514722


def _skdim() -> Any:
    try:
        import skdim
    except ImportError:
        raise MissingDependency('moecover.manifold needs scikit-dimension: pip install "moecover[manifold]"') from None
    return skdim


def _points(argument: str, points: ArrayLike) -> NDArray[np.float64]:
    """(n, D) float64 points, finite; moecover inputs (n, seq_len, d_model) give their tokens."""
    array = as_float64(argument, points, (2, 3))
    if array.ndim == 3:
        array = array.reshape(-1, array.shape[2])
    if array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"{argument}: expected at least 2 points of dimension >= 1, got shape {array.shape}")
    return array


# --- intrinsic dimension ---------------------------------------------------------------------


@dataclass(frozen=True)
class DimensionRow:
    """One estimate: `method` on `n` points with neighbourhood `neighbours` (None for TwoNN),
    and its 90 % interval (low, high) by half-sampling (NaN when no subsamples were asked for)."""

    method: str
    n: int
    neighbours: int | None
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class DimensionEstimate:
    """d̂ per method against scale. `rows` hold every (method, n, neighbours); `estimates` the
    headline per method: all points, the middle neighbourhood size. `duplicates` is how many exact
    duplicate points were removed first (they break TwoNN and MLE); `points` how many remained."""

    rows: list[DimensionRow]
    methods: tuple[str, ...]
    neighbours: tuple[int, ...]
    points: int
    duplicates: int
    ambient: int
    seed: int
    version: str

    @property
    def headline_neighbours(self) -> int:
        return self.neighbours[len(self.neighbours) // 2]

    @property
    def estimates(self) -> dict[str, tuple[float, float, float]]:
        """method → (estimate, low, high) on all points at the middle neighbourhood size."""
        out = {}
        for row in self.rows:
            if row.n == self.points and row.neighbours in (None, self.headline_neighbours):
                out[row.method] = (row.estimate, row.low, row.high)
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{m} {e:.2f} [{lo:.2f}, {hi:.2f}]" for m, (e, lo, hi) in self.estimates.items())
        removed = f", {self.duplicates} duplicates removed" if self.duplicates else ""
        return f"DimensionEstimate({parts}; {self.points} points in R^{self.ambient}{removed})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "estimates": self.estimates}

    def plot(self, path: str | None = None, truth: float | None = None) -> Any:
        """d̂ against the sample size per method (middle neighbourhood), with intervals and the
        true d if given; writes a PNG to `path` if given, returns the figure."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6, 4))
        for method in self.methods:
            rows = [r for r in self.rows if r.method == method and r.neighbours in (None, self.headline_neighbours)]
            n = np.array([r.n for r in rows])
            estimate = np.array([r.estimate for r in rows])
            low, high = np.array([r.low for r in rows]), np.array([r.high for r in rows])
            axes.errorbar(n, estimate, yerr=[estimate - low, high - estimate], marker="o", capsize=3, label=method)
        if truth is not None:
            axes.axhline(truth, color="k", linestyle="--", linewidth=1, label=f"true d = {truth:g}")
        axes.set_xscale("log")
        axes.set_xlabel("points n")
        axes.set_ylabel("estimated intrinsic dimension")
        axes.set_title(f"intrinsic dimension against n (neighbourhood {self.headline_neighbours}, 90 % intervals)")
        axes.legend()
        figure.tight_layout()
        if path is not None:
            figure.savefig(path, dpi=120)
            plt.close(figure)
        return figure


def intrinsic_dimension(
    points: ArrayLike,
    methods: Sequence[str] = ("mle", "twonn", "corrint"),
    sizes: Sequence[int] | None = None,
    neighbours: Sequence[int] = (5, 10, 20),
    subsamples: int = 5,
    rng: RngLike = None,
) -> DimensionEstimate:
    """Estimates the intrinsic dimension of `points` ((n, D), or moecover inputs (n, seq_len,
    d_model), whose tokens are the points) by each of `methods` (see `DIMENSION_METHODS`), on
    nested random subsets of `sizes` points (default: n/8, n/4, n/2, n, those ≥ 50) and at each
    neighbourhood size in `neighbours` (MLE: k neighbours; correlation integral: between the k-th
    and 2k-th). Exact duplicate points are removed first and counted.

    Each estimate's 90 % interval is by half-sampling: the spread of the estimate over `subsamples`
    random halves of its points, divided by √2 (the spread at the full size for a √n-consistent
    estimator). `subsamples=0` skips the intervals (NaN).

    Nearest-neighbour estimators are accurate to a few tenths for clean d ≤ 5, read low for
    d ≳ 10, and drift upward with ambient noise as n grows (the noise's dimension shows at small
    scales): read the rows against scale, not one number (definitions §10).
    """
    skdim = _skdim()
    data = _points("points", points)
    methods = tuple(methods)
    for method in methods:
        if method not in DIMENSION_METHODS:
            raise ValueError(f"methods: unknown method {method!r}; expected some of {sorted(DIMENSION_METHODS)}")
    if not methods:
        raise ValueError("methods: expected at least one method")
    neighbours = tuple(positive_int("neighbours", k, minimum=2) for k in neighbours)
    if not neighbours:
        raise ValueError("neighbours: expected at least one neighbourhood size")
    subsamples = positive_int("subsamples", subsamples, minimum=0)
    seed = resolve_seed(rng)
    unique = np.unique(data, axis=0)
    duplicates = data.shape[0] - unique.shape[0]
    n = unique.shape[0]
    # The largest neighbourhood on the smallest half-sample: 2k neighbours for the correlation integral.
    need = 2 * max(neighbours) + 2
    if sizes is None:
        sizes = sorted({s for s in (n // 8, n // 4, n // 2, n) if s >= max(50, 2 * need)} | {n})
    sizes = sorted({positive_int("sizes", s) for s in sizes})
    if sizes[0] < need or sizes[-1] > n:
        raise ValueError(
            f"sizes: every size must be between {need} (twice the largest neighbourhood, and more) and the "
            f"{n} distinct points; got {sizes[0]} … {sizes[-1]}"
        )
    if subsamples and sizes[0] // 2 < need:
        raise ValueError(f"points: half of the smallest size ({sizes[0]}) is fewer than {need} points, "
                         "too few for the intervals; give larger sizes or subsamples=0")
    if "twonn" in methods:
        _check_no_lattice(unique)
    g = np.random.default_rng(seed)
    order = g.permutation(n)
    shuffled = unique[order]

    def fit(method: str, x: NDArray[np.float64], k: int | None) -> float:
        name, _ = DIMENSION_METHODS[method]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's and scikit-dimension's own notices
            if k is None:
                value = float(getattr(skdim.id, name)().fit(x).dimension_)
            elif method == "mle":
                value = float(skdim.id.MLE().fit(x, n_neighbors=k).dimension_)
            elif method == "corrint":
                value = float(skdim.id.CorrInt(k1=k, k2=2 * k).fit(x).dimension_)
            else:
                value = float(np.mean(skdim.id.lPCA().fit_pw(x, n_neighbors=k, n_jobs=1).dimension_pw_))
        if not math.isfinite(value):
            raise ValueError(f"points: {method} gave no finite estimate on {x.shape[0]} points (neighbourhood {k}); "
                             "are they all on one point or one line?")
        return value

    rows = []
    for method in methods:
        scales = neighbours if DIMENSION_METHODS[method][1] else (None,)
        for size in sizes:
            x = shuffled[:size]
            halves = [x[g.permutation(size)[: size // 2]] for _ in range(subsamples)]
            for k in scales:
                estimate = fit(method, x, k)
                if subsamples:
                    spread = float(np.std([fit(method, h, k) for h in halves], ddof=1)) if subsamples > 1 else math.nan
                    half_width = Z90 * spread / math.sqrt(2)
                else:
                    half_width = math.nan
                rows.append(DimensionRow(method, size, k, estimate, estimate - half_width, estimate + half_width))
    from . import __version__

    return DimensionEstimate(rows, methods, neighbours, n, duplicates, data.shape[1], seed, __version__)


def _check_no_lattice(points: NDArray[np.float64]) -> None:
    """TwoNN reads the ratio of each point's second to first neighbour distance; on a lattice (grid
    inputs) the two are equal and the estimate collapses to 0: refuse rather than answer."""
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(points).query(points, k=3)
    tied = float(np.mean(distance[:, 2] <= distance[:, 1] * (1 + 1e-9)))
    if tied > 0.1:
        raise ValueError(
            f"points: {tied:.0%} of the points have equal first and second neighbour distances (a lattice, such as "
            "grid inputs), where TwoNN's ratio is 1 and its estimate 0; leave 'twonn' out of methods"
        )


# --- smoothness ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmoothnessEstimate:
    """β̂ with a 90 % interval, and what it rests on.

    method: "variogram" or "learning_curve". noise_variance: σ̂², the noise floor the variogram
    read off, or for the learning curve the variance it subtracted from the test errors
    (`nearest_neighbour_noise`; 0 when the targets were given). scales: the range of distances
    the variogram was fitted over. d: the intrinsic dimension the inversion
    used; exponent and exponent_interval: the learning curve's fitted α (NaN for the variogram).
    """

    beta: float
    interval: tuple[float, float]
    method: str
    noise_variance: float
    scales: tuple[float, float]
    d: float = math.nan
    exponent: float = math.nan
    exponent_interval: tuple[float, float] = (math.nan, math.nan)
    details: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        lo, hi = self.interval
        extra = f", α {self.exponent:.3f}, d {self.d:.2f}" if self.method == "learning_curve" else ""
        return f"SmoothnessEstimate(β {self.beta:.3f} [{lo:.3f}, {hi:.3f}] by {self.method}, σ² {self.noise_variance:.3g}{extra})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The β grid the variogram fit profiles over; its upper end, 1.5, lets a smooth target show
#: as β̂ ≥ 1 instead of being clipped to look rough.
BETA_GRID = np.linspace(0.01, 1.5, 299)


def _pairs(x: NDArray[np.float64], k: int) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """Each point with its k nearest neighbours, every pair once: (i, j, distance)."""
    from scipy.spatial import cKDTree

    distance, index = cKDTree(x).query(x, k=k + 1)
    i = np.repeat(np.arange(x.shape[0]), k)
    j = index[:, 1:].ravel()
    r = distance[:, 1:].ravel()
    once = i < j  # a pair found from both ends counts once; one found from one end is kept
    mutual_other = ~once & ~np.isin(i + j * x.shape[0], (j + i * x.shape[0])[once])
    keep = once | mutual_other
    return i[keep], j[keep], r[keep]


def _variogram_fit(bin_distance: NDArray[np.float64], bin_mean: NDArray[np.float64],
                   bin_weight: NDArray[np.float64]) -> tuple[float, float, float]:
    """Fits mean (Δv)² = a + c·r^{2β} (a ≥ 0, c ≥ 0) by weighted least squares (relative errors),
    β profiled over BETA_GRID; returns (β, a, c)."""
    scale = bin_distance / bin_distance.max()
    w = bin_weight / np.maximum(bin_mean, 1e-300) ** 2  # squared weights: count / value²
    powers = scale[None, :] ** (2 * BETA_GRID[:, None])  # (betas, bins)
    sw, sp, spp = w.sum(), (w * powers).sum(1), (w * powers**2).sum(1)
    sy, spy = (w * bin_mean).sum(), (w * powers * bin_mean).sum(1)
    determinant = sw * spp - sp**2
    a = (spp * sy - sp * spy) / determinant
    c = (sw * spy - sp * sy) / determinant
    floorless = a < 0  # the best fit wants a negative floor: fit without one
    c = np.where(floorless, spy / spp, c)
    a = np.where(floorless, 0.0, a)
    residual = (w * (a[:, None] + c[:, None] * powers - bin_mean[None, :]) ** 2).sum(1)
    residual = np.where(c > 0, residual, np.inf)
    best = int(np.argmin(residual))
    return float(BETA_GRID[best]), float(a[best]), float(c[best])


def _variogram(x: NDArray[np.float64], v: NDArray[np.float64], neighbours: int, bins: int, bootstrap: int,
               seed: int) -> SmoothnessEstimate:
    i, j, r = _pairs(x, neighbours)
    positive = r > 0
    i, j, r = i[positive], j[positive], r[positive]
    increments = (v[i] - v[j]) ** 2
    log_r = np.log(r)
    edges = np.quantile(log_r, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, log_r, side="right") - 1, 0, bins - 1)

    def binned(weights: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        count = np.bincount(which, weights=weights, minlength=bins).astype(np.float64)
        ok = count > 0
        mean = np.bincount(which, weights=weights * increments, minlength=bins)[ok] / count[ok]
        distance = np.bincount(which, weights=weights * r, minlength=bins)[ok] / count[ok]
        return distance, mean, count[ok]

    beta, floor, _ = _variogram_fit(*binned(np.ones_like(r)))
    g = np.random.default_rng([seed, 0xB00])
    draws = []
    for _ in range(bootstrap):  # points resampled with replacement: a pair counts w_i·w_j times
        multiplicity = g.multinomial(x.shape[0], np.full(x.shape[0], 1 / x.shape[0])).astype(float)
        draws.append(_variogram_fit(*binned(multiplicity[i] * multiplicity[j]))[0])
    low, high = (np.quantile(draws, [0.05, 0.95]) if draws else (math.nan, math.nan))
    return SmoothnessEstimate(
        beta, (float(low), float(high)), "variogram", floor / 2, (float(r.min()), float(r.max())),
        details={"pairs": int(r.size), "neighbours": neighbours, "bins": bins, "bootstrap": bootstrap},
    )


@dataclass(frozen=True)
class KnnLearningCurve:
    """Excess test risk of k-nearest-neighbour regression (k chosen on a validation split) against
    the training size: `risks` (len(ns), seeds) = test MSE − `noise_variance`; `exponent` α of
    risk ∝ n^{−α} (mean over seeds) with its 90 % t-interval over seeds, `per_seed` the seeds' own."""

    ns: list[int]
    risks: NDArray[np.float64]
    noise_variance: float
    exponent: float
    interval: tuple[float, float]
    per_seed: list[float]
    chosen_k: NDArray[np.int64]


def knn_learning_curve(
    points: ArrayLike,
    values: ArrayLike,
    ns: Sequence[int] | None = None,
    seeds: int = 3,
    noise_variance: float | None = None,
    targets: ArrayLike | None = None,
    rng: RngLike = None,
) -> KnnLearningCurve:
    """The learning curve of k-NN regression on the data (`points` (n, D), `values` (n,)): for each
    seed, a fifth of the points held out for testing and a fifth for choosing k, training sets of
    each size in `ns` (default: six sizes from 100 to the rest, geometric) drawn from the rest.
    k-NN with k chosen well attains the minimax rate n^{−2β/(2β+d)} for β ≤ 1 (definitions §9), so
    the fitted exponent is what the data say of 2β/(2β+d), biased high at small n.

    The excess risk is measured against `targets` (the noiseless values at the points) when they
    are known, as in a validation study; else it is the test MSE minus the noise variance
    (`noise_variance` if given, else `nearest_neighbour_noise` of the same data), which is itself
    noisy once the excess risk falls to the test set's sampling error of the noise.

    The responses must be noisy: without noise, k-NN interpolates at the approximation rate
    n^{−2β/d} instead, and the exponent means something else."""
    x, y = _checked_values(points, values)
    seeds = positive_int("seeds", seeds, minimum=2)
    total = x.shape[0]
    held = total // 5
    pool = total - 2 * held
    if ns is None:
        if pool < 200:
            raise ValueError(f"points: {total} points leave {pool} for training; the learning curve needs >= 200")
        ns = sorted({int(round(v)) for v in np.geomspace(100, pool, 6)})
    ns = sorted({positive_int("ns", v, minimum=2) for v in ns})
    if ns[-1] > pool:
        raise ValueError(f"ns: the largest training size {ns[-1]} exceeds the {pool} points left after the test "
                         "and validation fifths")
    seed = resolve_seed(rng)
    truth = None
    if targets is not None:
        truth = as_float64("targets", targets, (1, 2)).reshape(-1)
        if truth.shape[0] != total:
            raise ValueError(f"targets: expected one value per point ({total}), got {truth.shape[0]}")
        noise_variance = 0.0
    elif noise_variance is None:
        noise_variance = nearest_neighbour_noise(x, y)
    risks = np.empty((len(ns), seeds))
    chosen = np.empty((len(ns), seeds), dtype=np.int64)
    for s in range(seeds):
        order = np.random.default_rng([seed, s]).permutation(total)
        test, validation, rest = order[:held], order[held: 2 * held], order[2 * held:]
        for row, n in enumerate(ns):
            train = rest[:n]
            ks = np.unique(np.round(np.geomspace(1, min(n, 256), 16)).astype(np.int64))
            validation_error = ((knn_predictions(x[train], y[train], x[validation], ks) - y[validation, None]) ** 2).mean(0)
            best = int(np.argmin(validation_error))
            chosen[row, s] = ks[best]
            reference = y[test] if truth is None else truth[test]
            prediction = knn_predictions(x[train], y[train], x[test], ks[best: best + 1])[:, 0]
            risks[row, s] = ((prediction - reference) ** 2).mean() - noise_variance
    if (risks <= 0).any():
        raise ValueError(
            "values: the test error falls below the noise variance read off the data at some n, so the excess risk "
            "cannot be fitted on a log scale; give noise_variance, or larger ns"
        )
    from .erm import learning_exponent

    mean, interval, per_seed = learning_exponent(ns, risks)
    return KnnLearningCurve(list(ns), risks, float(noise_variance), mean, interval, per_seed, chosen)


def nearest_neighbour_noise(points: ArrayLike, values: ArrayLike) -> float:
    """σ̂² = ½ mean (y_i − y_{nn(i)})² over each point and its nearest neighbour: the noise variance,
    biased up by the target's own increments at the nearest-neighbour distance (which vanish as n
    grows). Unlike the variogram's fitted floor it stays right when the noise swamps every
    increment."""
    from scipy.spatial import cKDTree

    x, y = _checked_values(points, values)
    _, index = cKDTree(x).query(x, k=2)
    return float(0.5 * np.mean((y - y[index[:, 1]]) ** 2))


def _checked_values(points: ArrayLike, values: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = _points("points", points)
    y = as_float64("values", values, (1, 2)).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"values: expected one value per point ({x.shape[0]}), got {y.shape[0]}")
    return x, y


def smoothness(
    points: ArrayLike,
    values: ArrayLike,
    d: float | None = None,
    method: str = "variogram",
    neighbours: int = 10,
    bootstrap: int = 200,
    ns: Sequence[int] | None = None,
    seeds: int = 3,
    targets: ArrayLike | None = None,
    rng: RngLike = None,
) -> SmoothnessEstimate:
    """Estimates the Hölder smoothness β of the function behind `values` at `points` (definitions §10).

    method="variogram" (increments): fits E(v(x) − v(x'))² = 2σ² + c·|x − x'|^{2β} over the pairs of
    each point and its `neighbours` nearest, binned by distance; 2σ² is the noise floor, fitted. The
    interval is a point bootstrap (`bootstrap` resamples). Valid for functions rough to order β
    everywhere with β < 1 (Weierstrass-type sums); on functions smooth away from a null set (kink
    sums) it reads the smooth part's order, β̂ ≈ 1; it reads low as β → 1 (the power law holds
    only far below the function's coarsest scale) and fails when the noise floor hides the
    increments at the data's smallest distances.

    method="learning_curve": inverts the k-NN learning-curve exponent α (`knn_learning_curve`,
    `ns`, `seeds`) by β̂ = α d̂ / (2(1 − α)), with d̂ = `d` if given, else the MLE estimate of
    `intrinsic_dimension`; `targets` as in `knn_learning_curve`. Valid for β ≤ 1 (k-NN's minimax
    range), any target, noisy responses; it inherits the exponent's bias (high at small n),
    amplified: β̂ reads high.
    """
    x, y = _checked_values(points, values)
    if method not in ("variogram", "learning_curve"):
        raise ValueError(f"method: expected 'variogram' or 'learning_curve', got {method!r}")
    neighbours = positive_int("neighbours", neighbours, minimum=2)
    bootstrap = positive_int("bootstrap", bootstrap, minimum=0)
    if x.shape[0] <= neighbours:
        raise ValueError(f"points: {x.shape[0]} points, fewer than neighbours + 1 = {neighbours + 1}")
    if d is not None:
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d <= 0:
            raise ValueError(f"d: expected a positive intrinsic dimension, got {d!r}")
        if d > x.shape[1]:
            raise ValueError(f"d: the intrinsic dimension {d} exceeds the points' dimension {x.shape[1]}")
    seed = resolve_seed(rng)
    variogram = _variogram(x, y, neighbours, 24, bootstrap if method == "variogram" else 0, seed)
    if method == "variogram":
        return variogram
    d_hat = float(d) if d is not None else intrinsic_dimension(x, methods=("mle",), subsamples=0, rng=seed).estimates["mle"][0]
    curve = knn_learning_curve(x, y, ns=ns, seeds=seeds, targets=targets, rng=seed)

    def invert(alpha: float) -> float:
        return alpha * d_hat / (2 * (1 - alpha)) if alpha < 1 else math.inf

    low, high = curve.interval
    return SmoothnessEstimate(
        invert(curve.exponent), (invert(low), invert(high)), "learning_curve", curve.noise_variance,
        variogram.scales, d_hat, curve.exponent, curve.interval,
        details={"ns": curve.ns, "risks": curve.risks.tolist(), "per_seed": curve.per_seed},
    )

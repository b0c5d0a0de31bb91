"""Slopes of log N(δ), their extrapolation to δ → 0, and the regime an estimate is in (definitions §8).

Pure functions of net sizes; `estimate.py` composes them. The thresholds are module constants so
that a report can quote them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._cover import STILL_GROWING

__all__ = [
    "ASYMPTOTIC_TOLERANCE",
    "Extrapolation",
    "MIN_CELLS_PER_AXIS",
    "MIN_FIT_SCALES",
    "MIN_FIT_SPAN",
    "STILL_GROWING",
    "complete_scales",
    "extrapolate",
    "fit_slope",
    "regime",
]

#: An extrapolation needs this many complete scales (two parameters, and the fits without the
#: coarsest or the finest scale to test the window) ...
MIN_FIT_SCALES = 5
#: ... spanning at least this factor in δ: over less, the fit rests on too short a range of
#: log(1/δ) (on images of known dimension, narrower windows read up to 13 % off).
MIN_FIT_SPAN = 5.0
#: A scale enters the extrapolation once its net has at least this many centres per dimension,
#: |net|^{1/r*}: with fewer the count is a handful of cells whose number jumps with the box's
#: edges, which no smooth model of δ describes.
MIN_CELLS_PER_AXIS = 2.0
#: The model's own error, measured on images of known dimension (`benches/known_truths.py`): up to
#: 7 % (high where the coarsest scales hold fewer centres than the model, low where the finest
#: nets still grow). Every interval is at least ± this fraction of its slope.
MODEL_ERROR = 0.08
#: An extrapolation resolves the slope when its interval is within ± this fraction of it; one that
#: does not leaves the estimate sample-limited (the complete scales are too few or too coarse).
RESOLVED = 0.15
#: "asymptotic": the local slope at the finest complete scales within this fraction of r*.
ASYMPTOTIC_TOLERANCE = 0.10
# Student's t 0.95 quantiles for 1..30 degrees of freedom (a 90 % two-sided interval), so that
# the core install needs no SciPy; past 30 the Cornish–Fisher expansion is within 1e-4.
_T95 = (6.3138, 2.9200, 2.3534, 2.1318, 2.0150, 1.9432, 1.8946, 1.8595, 1.8331, 1.8125, 1.7959, 1.7823,
        1.7709, 1.7613, 1.7531, 1.7459, 1.7396, 1.7341, 1.7291, 1.7247, 1.7207, 1.7171, 1.7139, 1.7109,
        1.7081, 1.7056, 1.7033, 1.7011, 1.6991, 1.6973)


def t_quantile_95(dof: int) -> float:
    """The 0.95 quantile of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        raise ValueError(f"dof: expected >= 1, got {dof}")
    if dof <= len(_T95):
        return _T95[dof - 1]
    z = 1.6448536269514722
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def fit_slope(log_inv_delta: NDArray[np.float64], log_n: NDArray[np.float64]) -> float:
    """Least-squares slope of log N against log(1/δ); NaN with fewer than two scales."""
    if len(log_n) < 2:
        return float("nan")
    return float(np.polyfit(log_inv_delta, log_n, 1)[0])


def complete_scales(
    net_sizes: NDArray[np.int64],
    rarefaction: NDArray[np.float64],
    tail_discovery: NDArray[np.float64],
    saturation_threshold: float,
) -> NDArray[np.bool_]:
    """Per scale, whether the nets are complete in every replicate (R, S): no longer growing with
    the budget (γ(δ) ≤ `STILL_GROWING`; definitions §7), tail discovery below the threshold, and
    at least two centres. Only complete scales measure log N rather than bound it from below."""
    gamma = np.nan_to_num(rarefaction, nan=0.0) if rarefaction.size else np.zeros(net_sizes.shape)
    complete: NDArray[np.bool_] = np.asarray(
        (gamma <= STILL_GROWING).all(axis=0)
        & (tail_discovery < saturation_threshold).all(axis=0)
        & (net_sizes >= 2).all(axis=0)
    )
    return complete


def _exclusion_fit(z: NDArray[np.float64], log_n: NDArray[np.float64]) -> float:
    """The slope r of log N = r z + c, z = log(D/δ + 1), by least squares."""
    return float(np.polyfit(z, log_n, 1)[0])


@dataclass(frozen=True)
class Extrapolation:
    """The slope of log N(δ) as δ → 0 under the model N(δ) = ρ (D/δ + 1)^r (definitions §8), fitted
    to the complete scales, with D the sup-norm diameter of the values: points more than δ apart in
    a set of extent D along r directions number at most (D/δ + 1)^r, and a greedy net fills a fixed
    fraction ρ of that. Its local slope r·(D/δ)/(D/δ + 1) rises to r as δ → 0.

    Attributes:
        slope: r fitted to the replicate mean of log |net_δ|.
        interval: (low, high): the union of a 90 % t-interval over the replicates' own fits and
            the fits that leave out the coarsest or the finest scale (the model's sensitivity to
            its window; with 4 scales only the replicate interval), and at least ±`MODEL_ERROR`.
        scales: the scales fitted.
        diameter: D.
    """

    slope: float
    interval: tuple[float, float]
    scales: NDArray[np.float64]
    diameter: float

    @property
    def resolved(self) -> bool:
        """The interval lies within ±`RESOLVED` of the slope."""
        low, high = self.interval
        return bool(self.slope > 0 and (high - low) / 2 <= RESOLVED * self.slope)


def enough_scales(deltas: NDArray[np.float64], fitted: NDArray[np.bool_]) -> bool:
    """At least `MIN_FIT_SCALES` fitted scales, spanning a factor `MIN_FIT_SPAN` in δ."""
    chosen = deltas[fitted]
    return bool(len(chosen) >= MIN_FIT_SCALES and chosen.max() >= MIN_FIT_SPAN * chosen.min())


def extrapolate(
    deltas: NDArray[np.float64], log_n: NDArray[np.float64], fitted: NDArray[np.bool_], diameter: float
) -> Extrapolation | None:
    """The extrapolation of `log_n` (R replicates × S scales) over the scales `fitted`, for values
    of sup-norm diameter `diameter`; None without `enough_scales` or a positive diameter."""
    index = np.flatnonzero(fitted)
    if not enough_scales(deltas, fitted) or not diameter > 0:
        return None
    z = np.log(diameter / deltas + 1.0)
    slope = _exclusion_fit(z[index], log_n[:, index].mean(axis=0))
    candidates = [slope * (1 - MODEL_ERROR), slope * (1 + MODEL_ERROR)]
    if len(log_n) >= 2:
        per_replicate = np.array([_exclusion_fit(z[index], row[index]) for row in log_n])
        half = t_quantile_95(len(per_replicate) - 1) * float(per_replicate.std(ddof=1)) / math.sqrt(len(per_replicate))
        candidates += [slope - half, slope + half]
    for window in (index[1:], index[:-1]):
        candidates.append(_exclusion_fit(z[window], log_n[:, window].mean(axis=0)))
    return Extrapolation(
        slope=slope, interval=(min(candidates), max(candidates)), scales=deltas[index], diameter=float(diameter)
    )


def regime(
    deltas: NDArray[np.float64],
    log_n: NDArray[np.float64],
    fitted: NDArray[np.bool_],
    functional_dimension: int,
    extrapolation: Extrapolation | None,
) -> tuple[str, float, str | None]:
    """The regime of definitions §8, the local slope at the two finest fitted scales (NaN without
    two), and why an estimate is sample-limited (None otherwise):
    "sample_limited" without `enough_scales`, or when the extrapolation does not resolve the slope
    (the nets bound log N from below, and too few scales are complete to measure a slope);
    "asymptotic" when that local slope is within `ASYMPTOTIC_TOLERANCE` of r*;
    "pre_asymptotic" otherwise."""
    index = np.flatnonzero(fitted)
    local = float("nan")
    if len(index) >= 2:
        finest = index[-2:]
        mean = log_n[:, finest].mean(axis=0)
        local = float((mean[1] - mean[0]) / (math.log(deltas[finest[0]]) - math.log(deltas[finest[1]])))
    if extrapolation is None:
        span = f", spanning a factor {deltas[index].max() / deltas[index].min():.2g} in δ" if len(index) >= 2 else ""
        why = (f"{len(index)} scale(s) are complete with at least {MIN_CELLS_PER_AXIS:g} centres per dimension{span}; "
               f"a slope needs {MIN_FIT_SCALES} spanning a factor {MIN_FIT_SPAN:g}")
        return "sample_limited", local, why
    if not extrapolation.resolved:
        low, high = extrapolation.interval
        why = (f"the complete scales do not resolve the slope: the extrapolation's interval [{low:.3g}, {high:.3g}] "
               f"is wider than ±{RESOLVED:.0%} of {extrapolation.slope:.3g}")
        return "sample_limited", local, why
    if functional_dimension == 0:
        return ("asymptotic" if abs(local) <= ASYMPTOTIC_TOLERANCE else "pre_asymptotic"), local, None
    close = abs(local / functional_dimension - 1.0) <= ASYMPTOTIC_TOLERANCE
    return ("asymptotic" if close else "pre_asymptotic"), local, None

"""The estimator: log N(δ) across scales with replicate error bars, beside the theory (definitions §3–§4).

Pipeline per replicate (memory independent of `samples`): sample θ → evaluate on the inputs
(`evaluate_sampled`) → multi-scale greedy nets (`CoverStream`), chunk by chunk. Replicate 0 also
groups its samples by dataset-wide routing pattern and builds a net per group.
"""

from __future__ import annotations

import json
import math
import numbers
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _fit, theory
from ._checks import (
    DEFAULT_SAMPLER,
    as_scales,
    check_inputs,
    check_sampler,
    check_spec,
    positive_int,
    resolve_pinned,
    resolve_threads,
)
from ._cover import CoverStream, GroupedCoverStream, cover
from ._evaluate import evaluate, evaluate_sampled
from ._plots import COLOURS, LABELS, PLOTTED, STYLES, log_slope_axis
from ._progress import Progress
from ._rng import RngLike, derive_seeds, resolve_seed
from ._serial import from_plain, to_plain
from ._spec import MoESpec

__all__ = ["EntropyEstimate", "EstimateWarning", "REGIMES", "estimate_entropy"]

#: Parameter samples evaluated and fed to the nets at a time (memory independent of `samples`).
CHUNK = 20_000
PILOT = 4_000
#: Exact enumeration of the realisable patterns is attempted when their arrangement bound is at
#: most this (its LPs take seconds per 10^4 patterns).
EXACT_PATTERNS = 20_000
#: The regimes of definitions §8, in the order of how much an estimate can say.
REGIMES = ("sample_limited", "pre_asymptotic", "asymptotic")


class EstimateWarning(UserWarning):
    """An estimate whose slope rests on too few complete scales, or on none."""


@dataclass(frozen=True, repr=False)
class EntropyEstimate:
    """An estimate of the metric entropy log N(δ) of a class on fixed inputs, with what it can and
    cannot say (definitions §3, §4 and §8).

    Shapes: R replicates, S scales. Logs are natural (nats).

    Attributes:
        deltas: (S,) scales, descending.
        net_sizes, tail_discovery: (R, S) greedy net sizes and tail discovery rates per replicate.
        log_covering, log_covering_min, log_covering_max: (S,) mean, min and max over replicates
            of log |net_δ| (a certified lower bound on log N(δ/2) of the sampled class).
        local_slopes: (S−1,) Δ log|net| / Δ log(1/δ) between neighbouring scales (replicate mean).
        slope: the least-squares slope over `slope_scales` (NaN with fewer than two).
        slope_interval: (min, max) of the same fit over each replicate alone.
        slope_scales: the complete scales: in every replicate the net no longer grows with the
            samples (γ(δ) ≤ 0.1), tail discovery below `saturation_threshold`, at least 2 centres.
        saturation_threshold: the tail-discovery threshold (default 0.05).
        regime: "sample_limited", "pre_asymptotic" or "asymptotic" (definitions §8, thresholds in
            `moecover._fit`): whether the nets measure a slope at all, and whether it has reached r*.
        functional_dimension: r*, the largest Jacobian rank seen (the exact asymptotic slope, §6);
            `functional_reached` samples of `provenance["functional_samples"]` attained it.
        rank_by_inputs: (n,) r* on the first j inputs, j = 1..n.
        finest_local_slope: the local slope between the two finest scales that enter the
            extrapolation (what the regime compares with r*).
        extrapolated_slope, extrapolated_interval, extrapolated_scales: r of the model
            N(δ) = ρ (D/δ + 1)^r fitted to the complete scales with at least 2 centres per
            dimension, its interval (replicates, window, model error), and the scales fitted; NaN
            when too few scales qualify (see `moecover._fit`).
        diameter: D, the largest range of a coordinate over replicate 0's values.
        log_content, log_content_min, log_content_max: (S,) log|net_δ| − r* log(1/δ) (replicate
            mean, min, max) at the complete scales, NaN elsewhere: the log of an r*-dimensional
            content, constant once the estimate is asymptotic.
        routing: the dataset-wide routing patterns of replicate 0: how many (`dataset`), the
            samples of the largest group, the samples grouped (explored members included) and the
            per-input count C(M,k)^{L_T ℓ} the paper's union ranges over.
        union_bound: the union bound over routing patterns, measured (replicate 0): patterns
            sampled and exact (None where enumeration does not apply, or where the arrangement
            bound allows more than 20 000),
            the per-input counts log C(M,k)^{L_T ℓ} and the paper's L_T ℓ k log(eM/k), per scale
            Σ_r |net_δ(r)| (`union_sizes`), max_r |net_δ(r)|, their ratio to |net_δ|
            (`union_ratio`), the routing overhead log Σ_r N_r − max_r log N_r beside the paper's
            routing term, and the bytes the per-pattern nets held.
        group_net_sizes: {group id: (S,) net sizes} for the 8 largest routing groups.
        union_ratio: (S,) Σ over all groups of |net_δ(group)| / |net_δ| (replicate 0).
        largest_group_slope: the slope within the largest group over `slope_scales`.
        predicted_slopes: {"paper": N_eff, "parametric": free params, "data_dependent": the
            largest parameter count any realised pattern uses, "functional": r*, "ambient": n·o}.
        data_dependent_pattern: (n, layers, seq_len) a pattern that attains "data_dependent".
        lipschitz: the empirical Lipschitz estimate used by the parametric and data-dependent curves.
        theory_curves: {"paper", "parametric", "data_dependent"}: (S,) log-covering predictions.
        provenance: spec, pinned names, sampler, explore budget, seeds, samples, threads, version.
        rarefaction: (R, S) γ(δ) per replicate (see `CoverResult.rarefaction`).
        unseen_mass: (R, S) Good–Turing's f1/m per replicate.
        warnings: what the estimate cannot say, as warned when it was made.
    """

    deltas: NDArray[np.float64]
    net_sizes: NDArray[np.int64]
    tail_discovery: NDArray[np.float64]
    log_covering: NDArray[np.float64]
    log_covering_min: NDArray[np.float64]
    log_covering_max: NDArray[np.float64]
    local_slopes: NDArray[np.float64]
    slope: float
    slope_interval: tuple[float, float]
    slope_scales: NDArray[np.float64]
    saturation_threshold: float
    routing: dict[str, Any]
    group_net_sizes: dict[int, NDArray[np.int64]]
    union_ratio: NDArray[np.float64]
    largest_group_slope: float
    predicted_slopes: dict[str, int]
    lipschitz: float
    theory_curves: dict[str, NDArray[np.float64]]
    provenance: dict[str, Any] = field(default_factory=dict)
    rarefaction: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    unseen_mass: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    regime: str = "unknown"
    functional_dimension: int = -1
    rank_by_inputs: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    functional_reached: int = 0
    finest_local_slope: float = float("nan")
    extrapolated_slope: float = float("nan")
    extrapolated_interval: tuple[float, float] = (float("nan"), float("nan"))
    extrapolated_scales: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    diameter: float = float("nan")
    log_content: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    log_content_min: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    log_content_max: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    union_bound: dict[str, Any] = field(default_factory=dict)
    data_dependent_pattern: NDArray[np.uint32] = field(default_factory=lambda: np.zeros((0, 0, 0), dtype=np.uint32))
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        lo, hi = self.slope_interval
        ex_lo, ex_hi = self.extrapolated_interval
        return (
            f"EntropyEstimate({self.regime}: slope={self.slope:.3g} [{lo:.3g}, {hi:.3g}] over "
            f"{len(self.slope_scales)} complete scales, extrapolated={self.extrapolated_slope:.3g} "
            f"[{ex_lo:.3g}, {ex_hi:.3g}], r*={self.functional_dimension}, predicted={self.predicted_slopes}, "
            f"scales={len(self.deltas)}, samples={self.provenance.get('samples')}, replicates={len(self.net_sizes)})"
        )

    @property
    def ratio_meaningful(self) -> bool:
        """Whether a measured/predicted slope ratio means anything: only in the asymptotic regime."""
        return self.regime == "asymptotic"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: arrays become lists, NaN becomes None; `from_dict` inverts it."""
        return to_plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EntropyEstimate:
        """The estimate that `to_dict` described."""
        return from_plain(cls, data)  # type: ignore[no-any-return]

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_frame(self) -> Any:
        """One row per scale: delta, the mean/min/max log covering, tail discovery and γ(δ) (max
        over replicates), whether the scale is complete (in the slope fit), the log content, and
        the three theory curves. Needs pandas (`pip install "moecover[frame]"`)."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "delta": self.deltas,
                "log_covering": self.log_covering,
                "log_covering_min": self.log_covering_min,
                "log_covering_max": self.log_covering_max,
                "tail_discovery_max": self.tail_discovery.max(axis=0),
                "in_slope_fit": np.isin(self.deltas, self.slope_scales),
            }
        )
        if self.rarefaction.size:
            frame["rarefaction_max"] = self.rarefaction.max(axis=0)
        if len(self.log_content) == len(self.deltas):
            frame["log_content"] = self.log_content
        for name, curve in self.theory_curves.items():
            frame[f"theory_{name}"] = curve
        return frame

    def title(self) -> str:
        """The class in one line, for plots and reports."""
        spec = self.provenance.get("spec", {})
        keys = ("layers", "experts", "top_k", "d_model", "expert", "gate", "heads")
        described = ", ".join(f"{k}={spec[k]}" for k in keys if k in spec)
        pinned = " (pinned: " + ", ".join(self.provenance["pinned"]) + ")" if self.provenance.get("pinned") else ""
        return f"{described}{pinned}; n={self.provenance.get('inputs')}"

    def plot(self, path: str | None = None, title: str | None = None) -> Any:
        """Two panels. Left: log N(δ) against log(1/δ) with the replicate band, complete scales
        ringed, and the predictions as lines of their slopes, each drawn through the measurement at
        the coarsest complete scale (the paper's with its routing term, at its own level). Right:
        the local slopes on a log axis beside every predicted slope (r*, the paper's N_eff, the
        parametric, the data-dependent, n·o), so that each is visible. Saves a PNG to `path` when
        given; returns the figure. Needs matplotlib (`pip install "moecover[plot]"`)."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        x = -np.log(self.deltas)
        complete = np.isin(self.deltas, self.slope_scales)
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 6.0))
        left.fill_between(x, self.log_covering_min, self.log_covering_max, alpha=0.3, color="tab:gray",
                          label="replicate range")
        left.plot(x, self.log_covering, "o-", color="black", ms=4, label="measured log|net_δ| (lower bound)")
        if complete.any():
            left.plot(x[complete], self.log_covering[complete], "o", mfc="none", ms=10, color="tab:red",
                      label="complete scales (γ ≤ 0.1)")
        anchor = int(np.flatnonzero(complete)[0]) if complete.any() else 0
        predicted = self.predicted_slopes
        lines = {name: predicted[name] for name in ("functional", "paper", "data_dependent", "parametric") if name in predicted}
        top = float(self.log_covering_max.max()) + 1.0
        for name, value in lines.items():
            y = self.log_covering[anchor] + value * (x - x[anchor])
            left.plot(x, y, STYLES[name], color=COLOURS[name], label=f"{LABELS[name]}: slope {value}")
        left.set_ylim(bottom=min(0.0, float(self.log_covering_min.min())), top=max(top * 1.5, 2.0))
        left.text(0.02, 0.98, f"prediction lines drawn through the measurement at δ = {self.deltas[anchor]:.3g}",
                  transform=left.transAxes, fontsize=7.5, va="top")
        left.set_xlabel("log(1/δ)")
        left.set_ylabel("log N(δ)  (nats)")
        left.set_title(f"log N(δ): regime {self.regime}", fontsize=10)
        left.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
        mid = (x[1:] + x[:-1]) / 2
        both = complete[1:] & complete[:-1]
        positive = self.local_slopes > 0
        right.plot(mid[positive], self.local_slopes[positive], "o-", color="black", ms=4, label="local slope")
        if (both & positive).any():
            right.plot(mid[both & positive], self.local_slopes[both & positive], "o", mfc="none", ms=10,
                       color="tab:red", label="between complete scales")
        values = [v for v in self.local_slopes[positive]]
        for kind in PLOTTED:
            if kind in predicted and predicted[kind] > 0:
                right.axhline(predicted[kind], linestyle=STYLES[kind], color=COLOURS[kind],
                              label=f"{LABELS[kind]} = {predicted[kind]}")
                values.append(predicted[kind])
        if math.isfinite(self.extrapolated_slope):
            lo, hi = self.extrapolated_interval
            right.axhspan(max(lo, 1e-3), hi, color="tab:purple", alpha=0.2,
                          label=f"extrapolated {self.extrapolated_slope:.2f} [{lo:.2f}, {hi:.2f}]")
            values += [lo, hi]
        log_slope_axis(right, values, margin=1.6)
        right.set_xlabel("log(1/δ)")
        right.set_ylabel("Δ log N / Δ log(1/δ)  (log scale)")
        right.set_title("local slopes against the predictions", fontsize=10)
        right.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
        fig.suptitle(title or self.title(), fontsize=10)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110, format="png", bbox_inches="tight")
            plt.close(fig)
        return fig


def _auto_deltas(values: NDArray[np.float64], count: int = 16) -> NDArray[np.float64]:
    """A geometric grid from the spread of the pilot values down to where the pilot's nets
    saturate (more than half the pilot points are centres)."""
    spread = float((values.max(axis=0) - values.min(axis=0)).max())
    if spread == 0.0:
        return np.array([1.0])
    trial = spread / 2 * 0.5 ** np.arange(0, 30)
    sizes = cover(values, trial).net_sizes
    saturated = np.flatnonzero(sizes > len(values) // 2)
    finest = trial[saturated[0]] if saturated.size else trial[-1]
    return np.geomspace(spread / 2, finest, count)


def estimate_entropy(
    spec: MoESpec,
    inputs: ArrayLike,
    samples: int,
    deltas: ArrayLike | None = None,
    replicates: int = 3,
    rng: RngLike = None,
    pinned: Mapping[str, ArrayLike] | None = None,
    by_routing: bool = True,
    n_threads: int | None = None,
    progress: bool = False,
    saturation_threshold: float = 0.05,
    sampler: str = DEFAULT_SAMPLER,
    explore: int = 0,
    functional_samples: int = 200,
) -> EntropyEstimate:
    """Estimates log N(δ) of `spec` on `inputs` (n, seq_len, d_model) from `samples` parameter
    samples per replicate, with `replicates` independent replicates (seeds derived from `rng`),
    drawn by `sampler` (see `sample_params`; every sampler keeps the nets certified lower bounds).

    `deltas=None` picks 16 geometric scales from the spread of the values down to saturation.
    `explore` > 0 spends that many evaluations per replicate on `moecover.explore` at the grid's
    middle scale and puts the members it finds before the samples (definitions §7).
    `by_routing` builds a net per dataset-wide routing pattern in replicate 0 (the union-bound
    table); without it the patterns are still counted. `functional_samples` parameter samples
    give the functional dimension r* (definitions §6) that the regime and the extrapolation use.

    Returns an `EntropyEstimate`: the nets, the regime, the slopes measured and extrapolated, and
    the theory's predictions beside them. Warnings (`EstimateWarning`) say when a slope rests on
    too few scales; they are kept in `EntropyEstimate.warnings` too.
    """
    from . import __version__
    from ._explore import explore as search
    from ._jacobian import functional_dimension

    started = time.perf_counter()
    spec = check_spec(spec)
    x = check_inputs(spec, inputs)
    samples = positive_int("samples", samples)
    replicates = positive_int("replicates", replicates)
    # past these a call never ends (2**64 samples, 2**31 replicates hung): refuse rather than start
    if samples > 1 << 48:
        raise ValueError(f"samples: at most 2^48 per replicate, got {samples}")
    if replicates > 10_000:
        raise ValueError(f"replicates: at most 10 000, got {replicates}")
    if isinstance(saturation_threshold, bool) or not isinstance(saturation_threshold, numbers.Real):
        raise TypeError(f"saturation_threshold: expected a number in (0, 1), got {type(saturation_threshold).__name__}")
    if not (0 < saturation_threshold < 1):
        raise ValueError(f"saturation_threshold: must be in (0, 1), got {saturation_threshold}")
    if not isinstance(by_routing, (bool, np.bool_)):
        raise TypeError(f"by_routing: expected True or False, got {by_routing!r}")
    explore = positive_int("explore", explore, minimum=0, maximum=1 << 48)
    functional_samples = positive_int("functional_samples", functional_samples, maximum=1 << 32)
    sampler = check_sampler(sampler)
    resolve_pinned(spec, pinned)  # validate names and shapes before any work
    threads = resolve_threads(n_threads)
    seed = resolve_seed(rng)
    seeds = derive_seeds(seed, replicates + 3)  # prefix-stable: replicate seeds as before
    lipschitz_seed, replicate_seeds = seeds[0], seeds[1 : replicates + 1]
    functional_seed, explore_seed = seeds[replicates + 1], seeds[replicates + 2]
    dim = x.shape[0] * spec.output_dim
    pattern_shape = (x.shape[0], spec.layers, spec.seq_len)

    if deltas is None:
        pilot = evaluate_sampled(
            spec, x, min(samples, PILOT), rng=replicate_seeds[0], pinned=pinned, n_threads=threads, sampler=sampler
        )
        grid = _auto_deltas(pilot.values.reshape(len(pilot.values), -1))
    else:
        grid = np.unique(as_scales("deltas", deltas))[::-1]  # descending; a scale given twice is one scale

    bar = Progress(replicates * samples, "samples") if progress else None
    net_sizes, tails, rarefaction, unseen, explored = [], [], [], [], []
    grouped = GroupedCoverStream(grid if by_routing else None, dim, pattern_shape, n_threads=threads)
    low, high = np.full(dim, np.inf), np.full(dim, -np.inf)  # replicate 0's range per coordinate
    for r, replicate_seed in enumerate(replicate_seeds):
        stream = CoverStream(grid, dim, n_threads=threads)
        if explore:
            found = search(spec, x, float(grid[len(grid) // 2]), explore, rng=derive_seeds(explore_seed, replicates)[r],
                           pinned=pinned, sampler=sampler, n_threads=threads)
            members = found.values.reshape(len(found.values), dim)
            stream.add(members)
            explored.append(len(members))
            if r == 0 and len(members):
                grouped.add(members, evaluate(spec, found.params, x, n_threads=threads).routes)
                low, high = np.minimum(low, members.min(axis=0)), np.maximum(high, members.max(axis=0))
        for start in range(0, samples, CHUNK):
            m = min(CHUNK, samples - start)
            out = evaluate_sampled(
                spec, x, m, rng=replicate_seed, pinned=pinned, start=start, n_threads=threads, sampler=sampler
            )
            values = out.values.reshape(m, dim)
            stream.add(values)
            if r == 0:
                grouped.add(values, out.routes)
                low, high = np.minimum(low, values.min(axis=0)), np.maximum(high, values.max(axis=0))
            if bar is not None:
                bar.advance(m)
        result = stream.result()
        net_sizes.append(result.net_sizes)
        tails.append(result.tail_discovery)
        rarefaction.append(result.rarefaction)
        unseen.append(result.unseen_mass)
    if bar is not None:
        bar.close()
    groups = grouped.result()

    net_sizes_arr = np.array(net_sizes, dtype=np.int64)
    tails_arr = np.array(tails)
    rarefaction_arr = np.array(rarefaction)
    log_n = np.log(np.maximum(net_sizes_arr, 1))
    log_inv = -np.log(grid)
    complete = _fit.complete_scales(net_sizes_arr, rarefaction_arr, tails_arr, saturation_threshold)
    slope = _fit.fit_slope(log_inv[complete], log_n.mean(axis=0)[complete])
    per_replicate = [_fit.fit_slope(log_inv[complete], row[complete]) for row in log_n]
    local = np.diff(log_n.mean(axis=0)) / np.diff(log_inv)

    fd = functional_dimension(spec, x, samples=functional_samples, rng=functional_seed, pinned=pinned,
                              n_threads=threads)
    r_star = fd.max_rank
    cells_per_axis = np.exp(log_n.mean(axis=0) / max(r_star, 1))
    fitted = complete & (cells_per_axis >= _fit.MIN_CELLS_PER_AXIS)
    diameter = float((high - low).max())
    extrapolation = _fit.extrapolate(grid, log_n, fitted, diameter)
    regime, finest_local, why = _fit.regime(grid, log_n, fitted, r_star, extrapolation)
    notes: list[str] = []
    if why is not None and complete.any():
        notes.append(f"sample-limited: {why}; more samples or explore= would extend them")
    if 0 < complete.sum() < 3:
        notes.append(
            f"the measured slope rests on {int(complete.sum())} complete scale(s) (fewer than three); "
            "the other scales are lower bounds only (their nets still grow with the samples)"
        )
    if not complete.any():
        notes.append("every scale is sample-limited: each net still grows with the samples (γ(δ) > "
                     f"{_fit.STILL_GROWING}), so every number is a lower bound only")
    for note in notes:
        warnings.warn(note, EstimateWarning, stacklevel=2)
    content = log_n[:, complete] - r_star * log_inv[complete]  # (R, complete scales)

    def at_complete(values: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.full(len(grid), np.nan)
        out[complete] = values
        return out

    pinned_names = sorted(pinned or {})
    used, used_pattern = _most_used_pattern(spec, groups.patterns, pinned_names)
    members_order = np.argsort(-groups.members, kind="stable")
    group_nets = {int(g): groups.net_sizes[g] for g in members_order[:8]} if by_routing else {}
    union_sizes = groups.union_sizes if by_routing else np.full(len(grid), np.nan)
    largest_sizes = groups.largest_sizes if by_routing else np.full(len(grid), np.nan)
    union = union_sizes / np.maximum(net_sizes_arr[0], 1)
    largest_group = groups.net_sizes[members_order[0]] if by_routing else None
    largest_slope = (_fit.fit_slope(log_inv[complete], np.log(np.maximum(largest_group, 1))[complete])
                     if largest_group is not None else float("nan"))
    union_bound = {
        "patterns_sampled": groups.n_groups,
        "patterns_exact": _exact_pattern_count(spec, x, pinned_names, threads),
        "log_patterns_per_input": theory.exact_routing_term(spec),
        "union_sizes": union_sizes,
        "largest_group_sizes": largest_sizes,
        "union_ratio": union,
        "routing_overhead": np.log(union_sizes) - np.log(largest_sizes) if by_routing else union_sizes,
        "paper_routing_term": theory.routing_term(spec),
        "group_nets_bytes": grouped.memory_bytes(),
    }
    routing_counts = {
        "dataset": groups.n_groups,
        "largest_group": int(groups.members.max()),
        "samples_grouped": groups.n_points,
        "union_bound_per_input": math.comb(spec.experts, spec.top_k) ** (spec.layers * spec.seq_len),
    }

    estimate = theory.estimate_lipschitz(spec, x, samples=500, rng=lipschitz_seed, pinned=pinned, n_threads=threads)
    lip = estimate.lipschitz if math.isfinite(estimate.lipschitz) else estimate.max_ratio_all
    predicted = {
        "paper": theory.paper_slope(spec),
        "parametric": theory.parametric_slope(spec, pinned_names),
        "data_dependent": used,
        "functional": r_star,
        "ambient": dim,
    }
    curves = {
        "paper": np.atleast_1d(theory.paper_log_covering(spec, grid)),
        "parametric": np.atleast_1d(theory.parametric_log_covering(spec, grid, lip, pinned_names)),
        "data_dependent": np.atleast_1d(
            theory.data_dependent_log_covering(groups.n_groups, used, grid, lip, spec.param_bound)
        ),
    }
    has_slope = complete.sum() >= 2
    return EntropyEstimate(
        deltas=grid,
        net_sizes=net_sizes_arr,
        tail_discovery=tails_arr,
        log_covering=log_n.mean(axis=0),
        log_covering_min=log_n.min(axis=0),
        log_covering_max=log_n.max(axis=0),
        local_slopes=local,
        slope=slope,
        slope_interval=(float(np.nanmin(per_replicate)) if has_slope else float("nan"),
                        float(np.nanmax(per_replicate)) if has_slope else float("nan")),
        slope_scales=grid[complete],
        saturation_threshold=saturation_threshold,
        routing=routing_counts,
        group_net_sizes=group_nets,
        union_ratio=union,
        largest_group_slope=largest_slope,
        predicted_slopes=predicted,
        lipschitz=float(lip),
        theory_curves=curves,
        provenance={
            "spec": {name: getattr(spec, name) for name in spec.__dataclass_fields__ if name != "_core"},
            "pinned": pinned_names,
            "sampler": sampler,
            "explore": explore,
            "explored_members": explored,
            "seed": seed,
            "replicate_seeds": replicate_seeds,
            "samples": samples,
            "inputs": int(x.shape[0]),
            "functional_samples": functional_samples,
            "n_threads": threads,
            "version": __version__,
            "seconds": time.perf_counter() - started,
        },
        rarefaction=rarefaction_arr,
        unseen_mass=np.array(unseen),
        regime=regime,
        functional_dimension=r_star,
        rank_by_inputs=fd.rank_by_inputs,
        functional_reached=fd.reached,
        finest_local_slope=finest_local,
        extrapolated_slope=extrapolation.slope if extrapolation is not None else float("nan"),
        extrapolated_interval=extrapolation.interval if extrapolation is not None else (float("nan"), float("nan")),
        extrapolated_scales=extrapolation.scales if extrapolation is not None else np.zeros(0),
        diameter=diameter,
        log_content=at_complete(content.mean(axis=0)),
        log_content_min=at_complete(content.min(axis=0)),
        log_content_max=at_complete(content.max(axis=0)),
        union_bound=union_bound,
        data_dependent_pattern=used_pattern,
        warnings=notes,
    )


def _most_used_pattern(spec: MoESpec, patterns: NDArray[np.uint32], pinned: list[str]) -> tuple[int, NDArray[np.uint32]]:
    """The largest number of free parameters any realised pattern uses (definitions §4: a union's
    slope is its largest member's), and the first pattern that uses them."""
    used = theory.used_params_per_pattern(spec, patterns.astype(np.int64), pinned)
    best = int(np.argmax(used))
    return int(used[best]), patterns[best]


def _exact_pattern_count(spec: MoESpec, x: NDArray[np.float64], pinned: list[str], n_threads: int) -> int | None:
    """The realisable dataset-wide patterns by exact enumeration (`routing.exact_patterns`), where
    it applies (one layer, no attention) and is sure to end soon: the hyperplane-arrangement bound
    on the count is at most `EXACT_PATTERNS` (the search's LPs take seconds per 10^4 patterns, and
    a search stopped at the limit costs as much). A pinned router realises one pattern. Else None."""
    from .routing import arrangement_bound, exact_patterns

    if spec.layers != 1 or spec.heads != 0:
        return None
    router = {"layers.0.router.weight", "layers.0.router.bias"}
    if router <= set(pinned):
        return 1
    if router & set(pinned) or arrangement_bound(spec.experts, spec.d_model, x.shape[0] * spec.seq_len) > EXACT_PATTERNS:
        return None
    return exact_patterns(spec, x, n_threads=n_threads, max_patterns=EXACT_PATTERNS).count

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import theory
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
from ._cover import CoverStream, cover
from ._evaluate import evaluate_sampled
from ._progress import Progress
from ._rng import RngLike, derive_seeds, resolve_seed
from ._serial import from_plain, to_plain
from ._spec import MoESpec
from .routing import PatternCounts, count_patterns

__all__ = ["EntropyEstimate", "estimate_entropy"]

#: Parameter samples evaluated and fed to the nets at a time (memory independent of `samples`).
CHUNK = 20_000
PILOT = 4_000
ROUTING_SAMPLES = 50_000


def _fit_slope(log_inv_delta: NDArray[np.float64], log_n: NDArray[np.float64]) -> float:
    """Least-squares slope of log N against log(1/δ); NaN with fewer than two scales."""
    if len(log_n) < 2:
        return float("nan")
    return float(np.polyfit(log_inv_delta, log_n, 1)[0])


@dataclass(frozen=True, repr=False)
class EntropyEstimate:
    """An estimate of the metric entropy log N(δ) of a class on fixed inputs.

    Shapes: R replicates, S scales. Logs are natural (nats).

    Attributes:
        deltas: (S,) scales, descending.
        net_sizes, tail_discovery: (R, S) greedy net sizes and tail discovery rates per replicate.
        log_covering, log_covering_min, log_covering_max: (S,) mean, min and max over replicates
            of log |net_δ| (a certified lower bound on log N(δ/2) of the sampled class).
        local_slopes: (S−1,) Δ log|net| / Δ log(1/δ) between neighbouring scales (replicate mean).
        slope: the fitted slope (empirical metric dimension) over `slope_scales`.
        slope_interval: (min, max) of the same fit over each replicate alone.
        slope_scales: the scales used: tail discovery below `saturation_threshold` in every
            replicate and nets of at least 2 centres.
        saturation_threshold: the tail-discovery threshold (default 0.05).
        routing: summary of the dataset-wide routing patterns of replicate 0 (see PatternCounts).
        group_net_sizes: {group id: (S,) net sizes} for the largest routing groups (replicate 0).
        union_ratio: (S,) Σ over all groups of |net_δ(group)| / |net_δ| (replicate 0); NaN when
            there were more than `max_groups` groups (the per-group nets were dropped).
        largest_group_slope: the slope within the largest group over `slope_scales`.
        predicted_slopes: {"paper": N_eff, "parametric": free params, "data_dependent": params
            used by the largest group's pattern}.
        lipschitz: the empirical Lipschitz estimate used by the parametric and data-dependent curves.
        theory_curves: {"paper", "parametric", "data_dependent"}: (S,) log-covering predictions.
        provenance: spec, pinned names, sampler, seeds, samples, threads, package version, seconds.
        rarefaction: (R, S) γ(δ) per replicate (see `CoverResult.rarefaction`): above 0.1 the net
            still grows with the budget at that scale, whatever tail discovery says.
        unseen_mass: (R, S) Good–Turing's f1/m per replicate: mass under the sampler outside the
            net's balls (blind, like tail discovery, to regions the sampler rarely visits).
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

    def __repr__(self) -> str:
        lo, hi = self.slope_interval
        return (
            f"EntropyEstimate(slope={self.slope:.3g} [{lo:.3g}, {hi:.3g}] over {len(self.slope_scales)} scales, "
            f"predicted={self.predicted_slopes}, scales={len(self.deltas)}, "
            f"samples={self.provenance.get('samples')}, replicates={len(self.net_sizes)})"
        )

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
        """One row per scale: delta, the mean/min/max log covering, tail discovery (max over
        replicates), whether the scale is in the slope fit, and the three theory curves.
        Needs pandas (`pip install "moecover[frame]"`)."""
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
        for name, curve in self.theory_curves.items():
            frame[f"theory_{name}"] = curve
        return frame

    def plot(self, path: str | None = None) -> Any:
        """log N(δ) against log(1/δ) with the replicate band and the three theory lines, each
        anchored at the largest δ (slopes compare, constants do not), and the local slopes beside
        the predicted ones in a second panel. Saves a PNG to `path` when given; returns the figure.
        Needs matplotlib (`pip install "moecover[plot]"`)."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        x = np.log(1.0 / self.deltas)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        left.fill_between(x, self.log_covering_min, self.log_covering_max, alpha=0.3, label="replicate range")
        left.plot(x, self.log_covering, "o-", color="black", label=f"measured (slope {self.slope:.2f})")
        styles = {"paper": "--", "parametric": ":", "data_dependent": "-."}
        colours = {"paper": "tab:blue", "parametric": "tab:orange", "data_dependent": "tab:green"}
        for name, curve in self.theory_curves.items():
            anchored = curve - curve[0] + self.log_covering[0]
            left.plot(x, anchored, styles[name], color=colours[name], label=f"{name} (slope {self.predicted_slopes[name]})")
        fitted = np.isin(self.deltas, self.slope_scales)
        left.plot(x[fitted], self.log_covering[fitted], "o", mfc="none", ms=11, color="tab:red", label="in slope fit")
        top = max(self.log_covering_max.max(), 1.0) * 1.6
        left.set_ylim(bottom=min(0.0, self.log_covering_min.min()), top=top)
        left.set_xlabel("log(1/δ)")
        left.set_ylabel("log N(δ)  (nats)")
        left.legend(fontsize=8)
        mid = (x[1:] + x[:-1]) / 2
        right.plot(mid, self.local_slopes, "o-", color="black", label="local slope")
        for name, value in self.predicted_slopes.items():
            right.axhline(value, linestyle=styles[name], color=colours[name], label=f"{name}: {value}")
        right.set_ylim(bottom=0, top=max(self.local_slopes.max() if len(mid) else 1.0, 1.0) * 1.5)
        right.set_xlabel("log(1/δ)")
        right.set_ylabel("Δ log N / Δ log(1/δ)")
        right.legend(fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110, format="png")
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
    max_groups: int = 256,
    sampler: str = DEFAULT_SAMPLER,
) -> EntropyEstimate:
    """Estimates log N(δ) of `spec` on `inputs` (n, seq_len, d_model) from `samples` parameter
    samples per replicate, with `replicates` independent replicates (seeds derived from `rng`),
    drawn by `sampler` (see `sample_params`; every sampler keeps the nets certified lower bounds).

    `deltas=None` picks 16 geometric scales from the spread of the values down to saturation.
    Returns an `EntropyEstimate` (see its fields), with the theory's predictions beside it.
    """
    from . import __version__

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
    max_groups = positive_int("max_groups", max_groups)
    sampler = check_sampler(sampler)
    resolve_pinned(spec, pinned)  # validate names and shapes before any work
    threads = resolve_threads(n_threads)
    seed = resolve_seed(rng)
    seeds = derive_seeds(seed, replicates + 1)
    lipschitz_seed, replicate_seeds = seeds[0], seeds[1:]
    dim = x.shape[0] * spec.output_dim

    if deltas is None:
        pilot = evaluate_sampled(
            spec, x, min(samples, PILOT), rng=replicate_seeds[0], pinned=pinned, n_threads=threads, sampler=sampler
        )
        grid = _auto_deltas(pilot.values.reshape(len(pilot.values), -1))
    else:
        grid = np.unique(as_scales("deltas", deltas))[::-1]  # descending; a scale given twice is one scale

    bar = Progress(replicates * samples, "samples") if progress else None
    net_sizes, tails, rarefaction, unseen = [], [], [], []
    groups: dict[bytes, int] = {}
    group_streams: list[CoverStream] | None = [] if by_routing else None
    group_patterns: list[bytes] = []
    group_sizes = np.zeros(0, dtype=np.int64)
    kept_routes = []
    for r, replicate_seed in enumerate(replicate_seeds):
        stream = CoverStream(grid, dim, n_threads=threads)
        for start in range(0, samples, CHUNK):
            m = min(CHUNK, samples - start)
            out = evaluate_sampled(
                spec, x, m, rng=replicate_seed, pinned=pinned, start=start, n_threads=threads, sampler=sampler
            )
            values = out.values.reshape(m, dim)
            stream.add(values)
            if r == 0:
                if start < ROUTING_SAMPLES:
                    kept_routes.append(out.routes[: ROUTING_SAMPLES - start])
                rows = out.routes.reshape(m, -1)
                unique, inverse = np.unique(rows, axis=0, return_inverse=True)
                inverse = inverse.ravel()
                ids = np.empty(len(unique), dtype=np.int64)
                for u, row in enumerate(unique):
                    key = row.tobytes()
                    if key not in groups:
                        groups[key] = len(groups)
                        group_patterns.append(key)
                        if group_streams is not None:
                            group_streams.append(CoverStream(grid, dim, n_threads=threads))
                    ids[u] = groups[key]
                sample_groups = ids[inverse]
                group_sizes = np.bincount(sample_groups, minlength=len(groups)) + np.pad(
                    group_sizes, (0, len(groups) - len(group_sizes))
                )
                if group_streams is not None and len(groups) > max_groups:
                    group_streams = None  # too many groups to keep a net each: union ratio unknown
                if group_streams is not None:
                    order = np.argsort(sample_groups, kind="stable")
                    bounds = np.flatnonzero(np.diff(sample_groups[order])) + 1
                    for block in np.split(order, bounds):
                        group_streams[int(sample_groups[block[0]])].add(values[block])
            if bar is not None:
                bar.advance(m)
        result = stream.result()
        net_sizes.append(result.net_sizes)
        tails.append(result.tail_discovery)
        rarefaction.append(result.rarefaction)
        unseen.append(result.unseen_mass)
    if bar is not None:
        bar.close()

    net_sizes_arr = np.array(net_sizes, dtype=np.int64)
    tails_arr = np.array(tails)
    log_n = np.log(np.maximum(net_sizes_arr, 1))
    log_inv = np.log(1.0 / grid)
    usable = (tails_arr < saturation_threshold).all(axis=0) & (net_sizes_arr >= 2).all(axis=0)
    slope = _fit_slope(log_inv[usable], log_n.mean(axis=0)[usable])
    per_replicate = [_fit_slope(log_inv[usable], row[usable]) for row in log_n]
    local = np.diff(log_n.mean(axis=0)) / np.diff(log_inv)

    routing_counts: PatternCounts = count_patterns(np.concatenate(kept_routes), spec, n_threads=threads)
    largest = int(np.argmax(group_sizes))
    largest_routes = np.frombuffer(group_patterns[largest], dtype=np.uint32).reshape(x.shape[0], spec.layers, spec.seq_len)
    group_nets: dict[int, NDArray[np.int64]] = {}
    union = np.full(len(grid), np.nan)
    largest_slope = float("nan")
    if group_streams is not None:
        all_nets = np.array([s.result().net_sizes for s in group_streams], dtype=np.int64)
        union = all_nets.sum(axis=0) / np.maximum(net_sizes_arr[0], 1)
        for g in np.argsort(group_sizes)[::-1][:8]:
            group_nets[int(g)] = all_nets[g]
        largest_slope = _fit_slope(log_inv[usable], np.log(np.maximum(all_nets[largest], 1))[usable])

    pinned_names = sorted(pinned or {})
    estimate = theory.estimate_lipschitz(spec, x, samples=500, rng=lipschitz_seed, pinned=pinned, n_threads=threads)
    lip = estimate.lipschitz if math.isfinite(estimate.lipschitz) else estimate.max_ratio_all
    used = theory.used_params(spec, largest_routes, pinned_names)
    predicted = {
        "paper": theory.paper_slope(spec),
        "parametric": theory.parametric_slope(spec, pinned_names),
        "data_dependent": used,
    }
    curves = {
        "paper": np.atleast_1d(theory.paper_log_covering(spec, grid)),
        "parametric": np.atleast_1d(theory.parametric_log_covering(spec, grid, lip, pinned_names)),
        "data_dependent": np.atleast_1d(
            theory.data_dependent_log_covering(len(groups), used, grid, lip, spec.param_bound)
        ),
    }
    return EntropyEstimate(
        deltas=grid,
        net_sizes=net_sizes_arr,
        tail_discovery=tails_arr,
        log_covering=log_n.mean(axis=0),
        log_covering_min=log_n.min(axis=0),
        log_covering_max=log_n.max(axis=0),
        local_slopes=local,
        slope=slope,
        slope_interval=(float(np.nanmin(per_replicate)) if usable.sum() >= 2 else float("nan"),
                        float(np.nanmax(per_replicate)) if usable.sum() >= 2 else float("nan")),
        slope_scales=grid[usable],
        saturation_threshold=saturation_threshold,
        routing=routing_counts.to_dict() | {"dataset_all_samples": len(groups)},
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
            "seed": seed,
            "replicate_seeds": replicate_seeds,
            "samples": samples,
            "inputs": int(x.shape[0]),
            "n_threads": threads,
            "version": __version__,
            "seconds": time.perf_counter() - started,
        },
        rarefaction=np.array(rarefaction),
        unseen_mass=np.array(unseen),
    )


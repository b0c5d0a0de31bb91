"""Exact Jacobians of the class in θ, and the functional dimension r* (definitions §6).

`jacobian` is the core's reverse pass. `functional_dimension` samples θ, takes the numerical rank
of each Jacobian (singular values above `rtol · σ_1`), and reports r* = the largest rank seen with
everything a reader needs to trust it: how many samples reached it, each sample's spectral gap, the
rank per routing pattern, how the rank grows with the inputs, and where the null space lies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from . import _core
from ._checks import check_bytes, check_inputs, check_params, check_sampler, check_spec, positive_int, resolve_pinned, resolve_threads
from ._evaluate import sample_params
from ._rng import RngLike, resolve_seed
from ._serial import to_plain
from ._spec import MoESpec

__all__ = ["FunctionalDimension", "Jacobian", "functional_dimension", "jacobian"]

#: The numerical rank counts singular values above this fraction of the largest.
RANK_RTOL = 1e-9
#: A sample whose gap σ_r / σ_{r+1} is below this is ambiguous (definitions §6).
AMBIGUOUS_GAP = 1e3
#: Bytes of Jacobians (or parameters) held at a time by a long call.
CHUNK_BYTES = 1 << 27
#: The same for `functional_dimension`, smaller so that the allocator reuses one chunk's memory for
#: the next: at 128 MiB each chunk came from fresh pages, and faulting them in was a quarter of the
#: time per θ (16 MiB: 1.02-1.04 ms per θ on the benchmark class against 1.33-1.41 ms).
DIMENSION_CHUNK_BYTES = 1 << 24
#: Samples per call of the core's full-row-rank certificate (which keeps only routes and flags).
CERTIFY_CHUNK = 256


@dataclass(frozen=True, repr=False)
class Jacobian:
    """Exact Jacobians of f_θ on a set of inputs, for each row θ of `params`.

    Attributes:
        values: float64 (m, n, output_dim): f_θ(x_i), equal to `evaluate`'s up to rounding (the
            pass computes attention in its four-matrix form).
        routes: uint32 (m, n, layers, seq_len): each token's top-k expert set (colex rank).
        matrix: float64 (m, n·output_dim, total_params): ∂ values.reshape(m, -1)[:, r] / ∂θ_c, rows
            in the order of `values.reshape(m, -1)`, columns in the order of `spec.layout`.
        on_boundary: bool (m,): θ at a top-k tie (on any token) or a ReLU at 0 (in an expert on a
            token some output depends on: under the scalar and token-0 readouts, not the last
            layer's other tokens), within `moecover_core::jacobian::BOUNDARY_TOLERANCE` = 1e-9,
            relative: where the Jacobian may be undefined (the one-sided derivative is given).
    """

    values: NDArray[np.float64]
    routes: NDArray[np.uint32]
    matrix: NDArray[np.float64]
    on_boundary: NDArray[np.bool_]

    def __repr__(self) -> str:
        return (
            f"Jacobian(matrix={list(self.matrix.shape)}, values={list(self.values.shape)}, "
            f"on_boundary={int(np.sum(self.on_boundary))})"
        )


def jacobian(spec: MoESpec, params: ArrayLike, inputs: ArrayLike, n_threads: int | None = None) -> Jacobian:
    """The exact Jacobian of θ ↦ (f_θ(x_i)_c)_{i,c} at every row θ of `params`.

    Args:
        spec: the class.
        params: (m, total_params) or (total_params,), finite (any values: the box is not required).
        inputs: (n, seq_len, d_model), finite.
        n_threads: worker threads (default: MOECOVER_NUM_THREADS, else all cores); the result is the
            same bits for any count.

    Returns:
        A `Jacobian`; for a 1-D `params` the leading axis is dropped.
    """
    spec = check_spec(spec)
    theta, single = check_params(spec, params)
    x = check_inputs(spec, inputs)
    m, n, o, p = theta.shape[0], x.shape[0], spec.output_dim, spec.total_params
    check_bytes("params", m * n * o * (8 * p + 8) + m * n * 4 * spec.layers * spec.seq_len,
                f"the Jacobians of m={m} samples on n={n} inputs ({n * o} x {p} each)")
    values, routes, matrix, boundary = _core.jacobian(spec._core, theta.ravel(), x.ravel(), resolve_threads(n_threads))
    result = Jacobian(
        values.reshape(m, n, o),
        routes.reshape(m, n, spec.layers, spec.seq_len),
        matrix.reshape(m, n * o, p),
        np.array(boundary, dtype=bool),
    )
    if single:
        return Jacobian(result.values[0], result.routes[0], result.matrix[0], result.on_boundary[0])
    return result


@dataclass(frozen=True, repr=False)
class FunctionalDimension:
    """The functional dimension r* of a class on fixed inputs: the largest rank of the Jacobian of
    θ ↦ (f_θ(x_i))_i over sampled θ, pinned blocks fixed (definitions §6). It is the exact
    asymptotic slope of log N(δ) in log(1/δ) (N(δ) = Θ(δ^{-r*})), and a lower bound on the class's
    r* when the samples miss the region that attains it.

    Attributes:
        max_rank: r*, over the samples not on a boundary (an exact count, as seen by the samples).
        reached: how many of those samples have rank r*.
        ranks: int (m,): the numerical rank of each sample's Jacobian (singular values above
            `rtol · σ_1`; 0 for a zero Jacobian).
        gaps: (m,): σ_r / σ_{r+1} per sample (inf when r is full, i.e. min(n·o, free_params)).
        ambiguous: the samples whose gap is below `ambiguous_gap`: their rank is not clear-cut.
        on_boundary: bool (m,): samples at a top-k tie or a ReLU at 0 (as `Jacobian.on_boundary`),
            left out of `max_rank`.
        pattern_routes: uint32 (K, n, layers, seq_len): the dataset-wide routing patterns seen.
        pattern_samples, pattern_max_rank: int (K,): samples and the largest rank per pattern.
        rank_by_inputs: int (n,): the largest rank of the Jacobian's rows on the first j inputs,
            j = 1..n (how r* grows with the data; non-decreasing).
        null_blocks: {block name: share}: how many dimensions of the null space of a sample that
            reaches r* lie in each free block (the shares add up to free_params − r*): where the
            symmetries and the unused parameters are.
        ambient: n·output_dim, the dimension of the space F|X_n lives in.
        free_params: total_params less the pinned blocks' size.
        active_params: the paper's N_eff, for comparison.
        rtol, ambiguous_gap: the thresholds used.
        provenance: spec, pinned names, seed, sampler, samples, threads, version, seconds.
    """

    max_rank: int
    reached: int
    ranks: NDArray[np.int64]
    gaps: NDArray[np.float64]
    ambiguous: NDArray[np.int64]
    on_boundary: NDArray[np.bool_]
    pattern_routes: NDArray[np.uint32]
    pattern_samples: NDArray[np.int64]
    pattern_max_rank: NDArray[np.int64]
    rank_by_inputs: NDArray[np.int64]
    null_blocks: dict[str, float]
    ambient: int
    free_params: int
    active_params: int
    rtol: float
    ambiguous_gap: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"FunctionalDimension(r*={self.max_rank} (reached by {self.reached} of {len(self.ranks)}), "
            f"ambient={self.ambient}, free={self.free_params}, N_eff={self.active_params}, "
            f"patterns={len(self.pattern_samples)}, ambiguous={len(self.ambiguous)}, "
            f"on_boundary={int(self.on_boundary.sum())})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: arrays become lists, inf and NaN become None."""
        return to_plain(self)  # type: ignore[no-any-return]

    @property
    def by_pattern(self) -> list[dict[str, Any]]:
        """Per dataset-wide routing pattern seen, largest rank first: its routes
        (n, layers, seq_len), how many samples had it, and the largest rank among them."""
        order = np.lexsort((-self.pattern_samples, -self.pattern_max_rank))
        return [
            {"routes": self.pattern_routes[i], "samples": int(self.pattern_samples[i]),
             "max_rank": int(self.pattern_max_rank[i])}
            for i in order
        ]

    def plot(self, path: str | None = None) -> Any:
        """The rank on the first j inputs against j, beside the paper's N_eff, the free parameters
        and the ambient cap j·o. Saves a PNG to `path` when given; returns the figure. Needs
        matplotlib (`pip install "moecover[plot]"`)."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        n = len(self.rank_by_inputs)
        j = np.arange(1, n + 1)
        o = self.ambient // max(n, 1)
        fig, ax = plt.subplots(figsize=(7, 4.4))
        ax.plot(j, self.rank_by_inputs, "o-", ms=4, color="black", label=f"largest Jacobian rank (r* = {self.max_rank})")
        ax.plot(j, o * j, ":", color="tab:gray", label="ambient cap j·o")
        ax.axhline(self.active_params, linestyle="--", color="tab:blue", label=f"paper's N_eff = {self.active_params}")
        ax.axhline(self.free_params, linestyle="-.", color="tab:orange", label=f"free parameters = {self.free_params}")
        top = max(self.free_params, self.active_params, int(self.rank_by_inputs.max(initial=1))) * 1.1
        ax.set_ylim(0, top)
        ax.set_xlim(0.5, n + 0.5)
        ax.set_xlabel("inputs j (the first j of the set)")
        ax.set_ylabel("rank of the Jacobian on the first j inputs")
        spec = self.provenance.get("spec", {})
        title = ", ".join(f"{k}={spec[k]}" for k in ("layers", "experts", "top_k", "d_model", "expert") if k in spec)
        ax.set_title(f"Functional dimension: {title}\n{len(self.ranks)} samples, r* as seen", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110, format="png")
            plt.close(fig)
        return fig


#: Jacobians whose singular values are taken in one NumPy call: small enough that Ctrl-C, which
#: Python sees between calls, is answered well within a second.
SVD_BATCH = 16


def _ranks(matrix: NDArray[np.float64], rtol: float, n: int, o: int,
           prefix: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The numerical rank (singular values above rtol · σ_1) and the gap σ_r / σ_{r+1} of each
    Jacobian J in `matrix` (m, n·o, free), and into `prefix` (m, n) the rank of its rows on the first
    j inputs at the same threshold.

    The singular values are R's, from a Householder QR of Jᵀ = QR (Q is orthogonal; the QR is
    backward stable, as an SVD of J is, and the SVD is then of the small square R). R's leading
    blocks carry the prefixes: the rows of the first j inputs are R[:, :j·o]ᵀ Qᵀ, whose rank is that
    of the block R[:j·o, :j·o]. Only the prefixes interlacing does not fix are computed
    (`_prefix_ranks`). The Jacobians of full row rank rarely get here: the core certifies them from
    their Gram matrices first (`_core.certify_full_row_rank`)."""
    m, rows, width = matrix.shape
    ranks = np.zeros(m, dtype=np.int64)
    gaps = np.zeros(m)
    if rows == 0 or width == 0:
        prefix[:] = 0
        return ranks, gaps
    for b in range(0, m, SVD_BATCH):
        part = matrix[b : b + SVD_BATCH]
        r_factor: NDArray[np.float64] = np.asarray(np.linalg.qr(np.swapaxes(part, 1, 2), mode="r"))
        singular = np.linalg.svd(r_factor, compute_uv=False)
        for i, r, values in zip(range(b, b + len(part)), r_factor, singular):
            threshold = rtol * values[0]
            ranks[i] = int((values > threshold).sum())
            gaps[i] = _gap(values, int(ranks[i]))
            prefix[i] = _prefix_ranks(r, threshold, n, o, int(ranks[i]))
    return ranks, gaps


def _prefix_ranks(r_factor: NDArray[np.float64], threshold: float, n: int, o: int, full: int) -> list[int]:
    """The numerical ranks of the rows of the first j = 1 … n inputs, given R of Jᵀ and the rank of
    all n. Adding an input's o rows raises no singular value above the threshold by more than o
    places and lowers none (interlacing), so a prefix's rank r_j and its deficiency j·o − r_j both
    grow with j: between two computed prefixes whose ranks differ by o per input, or not at all,
    every prefix is known. The others are found by bisection: a class of full rank on its inputs
    needs no SVD beyond J's, and one that saturates at r* needs O(log n) small ones."""
    known = {0: 0, n: full}

    def rank_of(j: int) -> int:
        block = r_factor[: min(j * o, r_factor.shape[0]), : j * o]
        return int((np.linalg.svd(block, compute_uv=False) > threshold).sum())

    pending = [(0, n)]
    while pending:
        a, b = pending.pop()
        low, high = known[a], known[b]
        if b - a < 2:
            continue
        if high - low in (0, (b - a) * o):
            step = (high - low) // (b - a)
            known.update((j, low + step * (j - a)) for j in range(a + 1, b))
            continue
        mid = (a + b) // 2
        # within what interlacing allows of its neighbours, so that rounding cannot make the
        # sequence disagree with itself
        known[mid] = min(max(rank_of(mid), low, high - (b - mid) * o), high, low + (mid - a) * o)
        pending += [(a, mid), (mid, b)]
    return [known[j] for j in range(1, n + 1)]


def _gap(singular: NDArray[np.float64], rank: int) -> float:
    if rank >= len(singular):
        return math.inf
    below = singular[rank]
    return math.inf if below == 0 else float(singular[rank - 1] / below) if rank > 0 else 0.0


def functional_dimension(
    spec: MoESpec,
    inputs: ArrayLike,
    samples: int = 1000,
    rng: RngLike = None,
    pinned: Mapping[str, ArrayLike] | None = None,
    n_threads: int | None = None,
    rtol: float = RANK_RTOL,
    ambiguous_gap: float = AMBIGUOUS_GAP,
    sampler: str = "uniform",
) -> FunctionalDimension:
    """The functional dimension r* of `spec` on `inputs`: the largest numerical rank of the exact
    Jacobian over `samples` parameter samples (drawn by `sampler`, `pinned` blocks fixed and left
    out of the columns). See `FunctionalDimension` for what is reported beside it.

    The default sampler is uniform, unlike the nets': the rank is the same almost everywhere in a
    routing region, and uniform θ never sit on the faces, where coordinates equal ±B exactly can
    make hidden units coincide and lower the rank.
    """
    from . import __version__

    started = time.perf_counter()
    spec = check_spec(spec)
    x = check_inputs(spec, inputs)
    samples = positive_int("samples", samples)
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol: must be in (0, 1), got {rtol!r}")
    if not (isinstance(ambiguous_gap, (int, float)) and ambiguous_gap > 1):
        raise ValueError(f"ambiguous_gap: must be > 1, got {ambiguous_gap!r}")
    sampler = check_sampler(sampler)
    resolve_pinned(spec, pinned)
    threads = resolve_threads(n_threads)
    seed = resolve_seed(rng)
    n, o = x.shape[0], spec.output_dim
    pinned_names = set(pinned or {})
    free_blocks = [b for b in spec.layout if b.name not in pinned_names]
    free = np.concatenate([np.arange(b.offset, b.offset + b.size) for b in free_blocks]) if free_blocks else np.zeros(0, int)
    rows, width = n * o, len(free)
    # the free blocks one by one: the core's Gram matrix skips, per block, the rows zero in it
    free_ranges = [(b.offset, b.offset + b.size) for b in free_blocks]
    per_sample = 8 * rows * spec.total_params
    fallback = max(1, min(samples, DIMENSION_CHUNK_BYTES // max(per_sample, 1)))
    check_bytes("inputs", fallback * per_sample * 3, f"the Jacobians of one chunk of {fallback} samples ({rows} x {spec.total_params})")
    # the certifying path holds no Jacobians, so its chunks are longer: fewer calls into the core
    certifying = rows <= width  # else no Jacobian can have full row rank
    chunk = min(samples, max(fallback, CERTIFY_CHUNK)) if certifying else fallback
    # what is kept per sample for the whole call: its rank, gap, boundary flag, pattern and the
    # ranks on every prefix of the inputs (n of them)
    check_bytes("samples", samples * (8 * n + 8 + 8 + 8 + 1), f"the ranks of {samples} samples on every prefix of {n} inputs")

    ranks = np.zeros(samples, dtype=np.int64)
    gaps = np.zeros(samples)
    boundary = np.zeros(samples, dtype=bool)
    prefix = np.zeros((samples, n), dtype=np.int64)
    patterns: dict[bytes, int] = {}
    pattern_routes: list[NDArray[np.uint32]] = []
    pattern_of = np.zeros(samples, dtype=np.int64)
    witness: tuple[int, NDArray[np.float64]] | None = None  # (rank, θ) of the best sample so far
    # NumPy's BLAS (the QRs and SVDs, the null space's SVD) on one thread: left at every core, it
    # oversubscribes the machine when grid points run side by side (a QR then took 10x longer), and
    # at n_threads its blocked algorithms could split the sums differently per count; on these
    # small matrices a second BLAS thread gains nothing (benches/README.md)
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, samples, chunk):
            m = min(chunk, samples - start)
            theta = sample_params(spec, m, rng=seed, start=start, pinned=pinned, n_threads=threads, sampler=sampler)
            window = slice(start, start + m)
            certified = np.zeros(m, dtype=bool)
            if certifying:
                # the common case, in the core alone: a Jacobian whose Gram matrix certifies full row
                # rank has rank n·o on every prefix, and is never returned
                flat_routes, flat_boundary, flags = _core.certify_full_row_rank(
                    spec._core, theta.ravel(), x.ravel(), free_ranges, float(rtol), threads)
                routes = flat_routes.reshape(m, n, spec.layers, spec.seq_len)
                boundary[window] = flat_boundary
                certified = np.array(flags, dtype=bool)
                ranks[window][certified] = rows
                gaps[window][certified] = math.inf
                prefix[window][certified] = o * np.arange(1, n + 1)
            else:
                routes = np.zeros((m, n, spec.layers, spec.seq_len), dtype=np.uint32)
            rest = np.flatnonzero(~certified)
            for b in range(0, rest.size, fallback):
                piece = rest[b : b + fallback]
                found = jacobian(spec, theta[piece], x, n_threads=threads)
                matrix = found.matrix if width == spec.total_params else found.matrix[:, :, free]
                piece_prefix = np.zeros((piece.size, n), dtype=np.int64)
                ranks[start + piece], gaps[start + piece] = _ranks(matrix, rtol, n, o, piece_prefix)
                prefix[start + piece] = piece_prefix
                if not certifying:
                    routes[piece], boundary[start + piece] = found.routes, found.on_boundary
            for i in range(m):
                s = start + i
                key = routes[i].tobytes()
                if key not in patterns:
                    patterns[key] = len(patterns)
                    pattern_routes.append(routes[i].copy())
                pattern_of[s] = patterns[key]
                if not boundary[s] and (witness is None or ranks[s] > witness[0]):
                    witness = (int(ranks[s]), theta[i].copy())
        null_blocks = _null_blocks(spec, x, witness, free_blocks, free, rtol)
    usable = ~boundary
    max_rank = int(ranks[usable].max()) if usable.any() else 0
    reached = int((ranks[usable] == max_rank).sum())
    pattern_samples = np.bincount(pattern_of, minlength=len(patterns)).astype(np.int64)
    pattern_max = np.zeros(len(patterns), dtype=np.int64)
    np.maximum.at(pattern_max, pattern_of[usable], ranks[usable])
    rank_by_inputs = np.maximum.accumulate(prefix[usable].max(axis=0)) if usable.any() else np.zeros(n, np.int64)
    return FunctionalDimension(
        max_rank=max_rank,
        reached=reached,
        ranks=ranks,
        gaps=gaps,
        ambiguous=np.flatnonzero(gaps < ambiguous_gap).astype(np.int64),
        on_boundary=boundary,
        pattern_routes=np.array(pattern_routes, dtype=np.uint32),
        pattern_samples=pattern_samples,
        pattern_max_rank=pattern_max,
        rank_by_inputs=rank_by_inputs.astype(np.int64),
        null_blocks=null_blocks,
        ambient=rows,
        free_params=width,
        active_params=spec.active_params,
        rtol=float(rtol),
        ambiguous_gap=float(ambiguous_gap),
        provenance={
            "spec": {name: getattr(spec, name) for name in spec.__dataclass_fields__ if name != "_core"},
            "pinned": sorted(pinned_names),
            "seed": seed,
            "sampler": sampler,
            "samples": samples,
            "inputs": n,
            "n_threads": threads,
            "version": __version__,
            "seconds": time.perf_counter() - started,
        },
    )


def _null_blocks(spec: MoESpec, x: NDArray[np.float64], witness: tuple[int, NDArray[np.float64]] | None,
                 free_blocks: list[Any], free: NDArray[np.int64], rtol: float) -> dict[str, float]:
    """Per free block, the dimensions of the witness's null space that lie in it: Σ over its
    columns of the squared null-space basis (the shares add up to the null space's dimension).
    With V_r the first r right singular vectors (a basis of J's row space), the null space's
    projector is I − V_r V_rᵀ, so a block's share is its size less Σ over its columns of ‖V_r[c]‖²:
    the thin SVD suffices, not the full P × P basis (40x less work on the benchmark class)."""
    if witness is None or len(free) == 0:
        return {}
    rank, theta = witness
    matrix = jacobian(spec, theta, x, n_threads=1).matrix[:, free]
    _, _, vt = np.linalg.svd(matrix, full_matrices=False)
    in_row_space = (vt[:rank] ** 2).sum(axis=0)
    shares = {}
    position = 0
    for block in free_blocks:
        shares[block.name] = float(block.size - in_row_space[position : position + block.size].sum())
        position += block.size
    return shares

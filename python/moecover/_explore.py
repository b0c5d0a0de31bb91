"""Exploring the class (definitions §7): a search that adds members farther than δ from every
centre, and classes whose image is known in closed form, to measure how complete a packing is.

Any θ in the box is a member, so the points of any sampler or search keep every greedy net a
certified lower bound; what exploration changes is how soon the net reaches the image's extremes,
which uniform sampling makes rare (its pushforward is bell-shaped).

The search, round by round:
1. a batch of members from the parameter sampler opens centres of a greedy δ-net (the net of
   everything evaluated, in order, so its centres are a δ-packing by construction);
2. each centre opened in the last round is a parent of a few children: a Gaussian step of random
   size, a move of some coordinates onto the box's faces, or a step through the exact Jacobian
   that moves the member by about 2δ in a random direction of the image (clipped to the box);
3. the children go into the same net, and the ones that open centres are the next parents.
It ends when `PATIENCE` rounds in a row, each from every centre with twice the fresh samples of
the last, open no centre, or when the budget of evaluations is spent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from . import _core
from ._checks import (
    DEFAULT_SAMPLER,
    TooLargeError,
    as_float64,
    as_scales,
    check_bytes,
    check_inputs,
    check_sampler,
    check_spec,
    memory_limit_bytes,
    positive_int,
    resolve_pinned,
    resolve_threads,
)
from ._cover import greedy_net
from ._evaluate import evaluate, sample_params
from ._jacobian import CHUNK_BYTES, jacobian
from ._progress import Progress
from ._rng import RngLike, resolve_seed
from ._spec import MoESpec

__all__ = ["Exploration", "KnownImageClass", "explore", "image_coverage", "known_image_class"]

#: Where a member came from: the parameter sampler, or one of the search's three moves.
SOURCES = ("sampler", "step", "faces", "jacobian")
#: Children per parent and move, per round.
CHILDREN = {"step": 4, "faces": 2, "jacobian": 4}
#: Rounds in a row that open no centre (each from every centre) before the search stops.
PATIENCE = 3
#: Jacobians computed per core call at most (and fewer when their (chunk, n·o, P) matrices would
#: pass `CHUNK_BYTES`).
JACOBIAN_CHUNK = 256
#: Members are drawn, evaluated, moved and copied in pieces of about this many bytes of θ. NumPy's
#: copies do not see Ctrl-C, and a fresh copy runs at the speed of page faults, which on some
#: virtual machines is 100-400 MB/s: 16 MiB keeps every step between two checks well under 0.2 s.
PIECE_BYTES = 1 << 24


@dataclass(frozen=True, repr=False)
class Exploration:
    """A δ-packing of members of a class found by `explore`.

    Attributes:
        delta: the packing's scale: rows of `values` are pairwise farther than δ apart (sup norm).
        values: float64 (K, n·o): f_θ(x_i) of each member, rows in the order they were found.
        params: float64 (K, P): each member's θ (in the box; pinned blocks as given).
        source: per member, which of `SOURCES` found it.
        evaluations: forward passes spent, a Jacobian counted as min(P_free, n·o) passes.
        growth: int64 (rounds + 1, 2): (evaluations, packing size) after each round.
        patterns: distinct dataset-wide routing patterns among every member evaluated, per source
            and in total ("all"): the search's share of the router's growth function.
        sampler, seed, n_threads, version: provenance (same seed, same result for any threads).
        stopped: why it ended: "no new centres" or "budget".
    """

    delta: float
    values: NDArray[np.float64]
    params: NDArray[np.float64]
    source: NDArray[np.str_]
    evaluations: int
    growth: NDArray[np.int64]
    patterns: dict[str, int]
    sampler: str
    seed: int
    n_threads: int
    version: str
    stopped: str
    found_by: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        shares = ", ".join(f"{k}: {v}" for k, v in self.found_by.items())
        return (
            f"Exploration(delta={self.delta:g}, members={len(self)}, evaluations={self.evaluations}, "
            f"found_by={{{shares}}}, patterns={self.patterns.get('all', 0)}, stopped={self.stopped!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (the packing's values and parameters as nested lists)."""
        return {
            "delta": self.delta,
            "values": self.values.tolist(),
            "params": self.params.tolist(),
            "source": self.source.tolist(),
            "evaluations": self.evaluations,
            "growth": self.growth.tolist(),
            "patterns": dict(self.patterns),
            "found_by": dict(self.found_by),
            "sampler": self.sampler,
            "seed": self.seed,
            "n_threads": self.n_threads,
            "version": self.version,
            "stopped": self.stopped,
        }


class _Packing:
    """The greedy δ-net of every member evaluated, in order, with the θ of its centres.

    Centres are kept as the blocks they were found in, never concatenated while the search runs:
    a (K, P) copy of a large class takes seconds and cannot be interrupted."""

    def __init__(self, delta: float, dim: int, threads: int):
        self.engine = _core.CoverEngine([delta], dim, True, False, memory_limit_bytes())
        self.threads = threads
        self.values: list[NDArray[np.float64]] = []
        self.params: list[NDArray[np.float64]] = []
        self.source: list[str] = []

    def __len__(self) -> int:
        return int(self.engine.net_sizes()[0])

    def add(self, values: NDArray[np.float64], params: NDArray[np.float64], source: str) -> NDArray[np.float64]:
        """Scans `values` after everything before; returns the θ that opened centres."""
        first, before = int(self.engine.n_points), len(self)
        self.engine.add(np.ascontiguousarray(values), self.threads, "values")
        opened = np.asarray(self.engine.centres(0)[before:], dtype=np.int64) - first
        held = len(self) * 8 * (values.shape[1] + params.shape[1])
        if held > memory_limit_bytes():
            raise TooLargeError(
                f"delta: the packing holds {len(self)} members ({held / 2**30:.3g} GiB of values and parameters), "
                "more than this machine's free memory; use a larger delta or a smaller budget"
            )
        if len(opened) < len(params):  # when every row opened a centre (often, at small δ), no copy
            values, params = values[opened], params[opened]
        self.values.append(values)
        self.params.append(params)
        self.source.extend([source] * len(opened))
        return params


def _stacked(blocks: list[NDArray[np.float64]], width: int) -> NDArray[np.float64]:
    """The rows of `blocks` as one (rows, width) array, copied a piece at a time (Ctrl-C is seen
    between pieces); each block is released once copied."""
    out = np.empty((sum(len(block) for block in blocks), width))
    step, at = max(1, PIECE_BYTES // (8 * max(width, 1))), 0
    blocks.reverse()  # so that each block leaves from the end, without moving the rest
    while blocks:
        block = blocks.pop()
        for start in range(0, len(block), step):
            part = block[start : start + step]
            out[at : at + len(part)] = part
            at += len(part)
    return out


def explore(
    spec: MoESpec,
    inputs: ArrayLike,
    delta: float,
    budget: int,
    rng: RngLike = None,
    pinned: Mapping[str, ArrayLike] | None = None,
    sampler: str = DEFAULT_SAMPLER,
    n_threads: int | None = None,
    batch: int = 4096,
    progress: bool = False,
) -> Exploration:
    """Searches the class for members pairwise farther than `delta` apart on `inputs`.

    Args:
        spec, inputs: the class and the inputs (n, seq_len, d_model) its members are compared on.
        delta: the packing's scale (> 0, sup norm over the inputs' outputs).
        budget: forward passes to spend at most (a Jacobian counts as min(P_free, n·o)).
        rng: the seed of every random choice (same seed, same result for any `n_threads`).
        pinned: blocks held fixed, as in `sample_params`; the search never moves them.
        sampler: the parameter sampler of the first batch and of each round's fresh batch.
        batch: members drawn from the sampler per round.
        progress: a progress bar on stderr.

    Returns:
        An `Exploration`: its rows are f_θ of their θ, pairwise farther than δ apart, so
        `len(result)` is a certified lower bound on the packing number at δ and on the covering
        number at δ/2 (definitions §3).
    """
    from . import __version__

    spec = check_spec(spec)
    x = check_inputs(spec, inputs)
    delta = _one_scale(delta)
    budget = positive_int("budget", budget, maximum=1 << 48)
    batch = positive_int("batch", batch, maximum=1 << 24)
    sampler = check_sampler(sampler)
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress: expected True or False, got {progress!r}")
    pinned_blocks = resolve_pinned(spec, pinned)
    threads = resolve_threads(n_threads)
    seed = resolve_seed(rng)
    moves = np.random.default_rng([seed, 0x6578706C])  # the search's own stream, apart from the sampler's

    n, o, p = x.shape[0], spec.output_dim, spec.total_params
    dim = n * o
    free = np.ones(p, dtype=bool)
    for offset, values in pinned_blocks:
        free[offset : offset + len(values)] = False
    free_columns = np.flatnonzero(free)
    jacobian_cost = min(len(free_columns), dim)
    bound = spec.param_bound

    packing = _Packing(delta, dim, threads)
    patterns: dict[str, set[bytes]] = {name: set() for name in SOURCES}
    spent = 0
    sampled = 0
    growth = [(0, 0)]
    bar = Progress(budget, "evaluations") if progress else None

    def count(rows: int) -> None:
        nonlocal spent
        spent += rows
        if bar is not None:
            bar.advance(rows)

    def record_patterns(routes: NDArray[np.uint32], source: str) -> None:
        flat = np.ascontiguousarray(routes.reshape(len(routes), -1))
        patterns[source].update(row.tobytes() for row in np.unique(flat, axis=0))

    def take(theta: NDArray[np.float64], source: str) -> NDArray[np.float64]:
        """Evaluates `theta`, scans the values into the packing; the θ that opened centres."""
        out = evaluate(spec, theta, x, n_threads=threads)
        count(len(theta))
        record_patterns(out.routes, source)
        return packing.add(out.values.reshape(len(theta), dim), theta, source)

    # Parameters are made, evaluated and kept in pieces of about PIECE_BYTES, whatever the batch
    # and the number of parents; parents are lists of such pieces, never one concatenated array.
    rows = max(1, PIECE_BYTES // (8 * p))

    def draw(m: int) -> list[NDArray[np.float64]]:
        nonlocal sampled
        opened = []
        for piece in range(0, m, rows):
            size = min(rows, m - piece)
            theta = sample_params(spec, size, rng=seed, start=sampled, pinned=pinned, n_threads=threads, sampler=sampler)
            sampled += size
            opened.append(take(theta, "sampler"))
        return opened

    def search(parents: list[NDArray[np.float64]]) -> list[NDArray[np.float64]]:
        opened: list[NDArray[np.float64]] = []
        step = max(1, rows // sum(CHILDREN.values()))  # parents whose children fill one piece
        for block in parents:
            for piece in range(0, len(block), step):
                if spent >= budget:
                    return opened
                chunk = block[piece : piece + step]
                children = _children(spec, chunk, x, delta, free_columns, bound, moves, threads, budget - spent, jacobian_cost, count)
                opened.extend(take(theta, source) for source, theta in children if len(theta))
        return opened

    stopped = "budget"
    parents = draw(min(batch, budget))
    growth.append((spent, len(packing)))
    fresh_batch, empty_rounds = batch, 0
    while spent < budget:
        found = search(parents)
        if spent < budget:
            found.extend(draw(min(fresh_batch, budget - spent)))
        growth.append((spent, len(packing)))
        parents = [block for block in found if len(block)]
        if parents:
            empty_rounds, fresh_batch = 0, batch
            continue
        # A round that opened nothing: the holes left, if any, are small or beside old centres.
        # Search again from every centre with twice the fresh samples, PATIENCE times, then stop.
        empty_rounds += 1
        if empty_rounds > PATIENCE:
            stopped = "no new centres"
            break
        parents, fresh_batch = list(packing.params), 2 * fresh_batch
    if bar is not None:
        bar.close()

    sources = np.asarray(packing.source, dtype=str)
    union: set[bytes] = set().union(*patterns.values())
    return Exploration(
        delta=delta,
        values=_stacked(packing.values, dim),
        params=_stacked(packing.params, p),
        source=sources,
        evaluations=spent,
        growth=np.asarray(growth, dtype=np.int64),
        patterns={**{name: len(found) for name, found in patterns.items()}, "all": len(union)},
        found_by={name: int((sources == name).sum()) for name in SOURCES},
        sampler=sampler,
        seed=seed,
        n_threads=threads,
        version=__version__,
        stopped=stopped,
    )


def _one_scale(delta: Any) -> float:
    if isinstance(delta, (list, tuple, np.ndarray)):
        raise TypeError(f"delta: expected one scale, got {type(delta).__name__}")
    return float(as_scales("delta", [delta])[0])


def _children(
    spec: MoESpec,
    parents: NDArray[np.float64],
    x: NDArray[np.float64],
    delta: float,
    free: NDArray[np.int64],
    bound: float,
    moves: np.random.Generator,
    threads: int,
    left: int,
    jacobian_cost: int,
    count: Callable[[int], None],
) -> list[tuple[str, NDArray[np.float64]]]:
    """The children of `parents` by each move, within the `left` evaluations of the budget. Only
    the `free` coordinates move, and they stay in the box (pinned values may lie outside it)."""
    out: list[tuple[str, NDArray[np.float64]]] = []
    k = len(parents)
    if k == 0:
        return out
    width = len(free)
    # Gaussian steps of sizes log-uniform from 1 % to 50 % of the box, on the free coordinates.
    steps = np.repeat(parents, CHILDREN["step"], axis=0)
    scale = bound * np.exp(moves.uniform(np.log(0.01), np.log(0.5), size=(len(steps), 1)))
    steps[:, free] = np.clip(steps[:, free] + scale * moves.standard_normal((len(steps), width)), -bound, bound)
    out.append(("step", steps[: max(left, 0)]))
    left -= len(out[-1][1])
    # Some coordinates (each with a probability drawn per child) moved onto the face they lean to.
    faces = np.repeat(parents, CHILDREN["faces"], axis=0)
    rate = moves.uniform(0.0, 0.5, size=(len(faces), 1))
    hit = moves.uniform(size=(len(faces), width)) < rate
    sub = faces[:, free]
    sub[hit] = np.where(sub[hit] >= 0, bound, -bound)
    faces[:, free] = sub
    out.append(("faces", faces[: max(left, 0)]))
    left -= len(out[-1][1])
    # Steps through the exact Jacobian: δθ = J⁺u moves the member by u to first order, whatever
    # the pushforward's density; u = 2δ·(random signs)·(a size in [1/2, 2]), several per Jacobian
    # (each costs one evaluation more). Parents on a routing or ReLU boundary are skipped.
    per = CHILDREN["jacobian"]
    affordable = min(k, max(left, 0) // (jacobian_cost + per))
    if affordable and width:
        chosen = parents[moves.permutation(k)[:affordable]]
        stepped = np.repeat(chosen, per, axis=0)
        keep = np.ones(len(stepped), dtype=bool)
        per_jacobian = 8 * len(x) * spec.output_dim * spec.total_params
        chunk = max(1, min(JACOBIAN_CHUNK, CHUNK_BYTES // per_jacobian))
        check_bytes("inputs", 3 * chunk * per_jacobian, f"the Jacobians of {chunk} members")
        for first in range(0, affordable, chunk):
            part = range(first, min(first + chunk, affordable))
            found = jacobian(spec, chosen[part.start : part.stop], x, n_threads=threads)
            count(len(part) * jacobian_cost)
            for i, parent in enumerate(part):
                rows = slice(parent * per, (parent + 1) * per)
                if found.on_boundary[i]:
                    keep[rows] = False  # the Jacobian is undefined there
                    continue
                matrix = found.matrix[i][:, free]
                signs = moves.choice([-1.0, 1.0], size=(matrix.shape[0], per))
                size = 2.0 * delta * np.exp(moves.uniform(np.log(0.5), np.log(2.0), size=per))
                # NumPy's BLAS on one thread: the same bits for any n_threads, no oversubscription
                with threadpool_limits(limits=1, user_api="blas"):
                    move, *_ = np.linalg.lstsq(matrix, signs * size, rcond=None)
                stepped[rows, free] = np.clip(stepped[rows, free] + move.T, -bound, bound)
        out.append(("jacobian", stepped[keep]))
    return out


@dataclass(frozen=True, repr=False)
class KnownImageClass:
    """A class whose image on its inputs is a box, known in closed form (definitions §7).

    `experts` linear (or constant) experts in `d_model` dimensions, top-1 routing with the router pinned so that
    input i reaches expert i, scalar readout: f_θ(x_i) = x_i[0] + A_i[0]·x_i + a_i[0], a sum of
    d_model + 1 coordinates of θ, so the image is the box ∏_i [x_i[0] ± B(1 + ‖x_i‖₁)] while the
    uniform pushforward is a product of bell-shaped densities whose corners are rare.
    """

    spec: MoESpec
    inputs: NDArray[np.float64]
    pinned: dict[str, NDArray[np.float64]]
    low: NDArray[np.float64]
    high: NDArray[np.float64]

    def covering_number(self, delta: float) -> int:
        """N(δ) of the image in the sup norm, exactly: ∏_i ⌈(high_i − low_i) / (2δ)⌉."""
        return math.prod(math.ceil((h - lo) / (2 * delta)) for lo, h in zip(self.low, self.high))

    def uniform_points(self, m: int, rng: RngLike = None) -> NDArray[np.float64]:
        """m points uniform in the image."""
        generator = np.random.default_rng(resolve_seed(rng))
        return generator.uniform(self.low, self.high, size=(m, len(self.low)))

    def __repr__(self) -> str:
        return f"KnownImageClass(experts={self.spec.experts}, d_model={self.spec.d_model}, image=box of {len(self.low)} sides)"


def known_image_class(
    experts: int = 4, d_model: int = 2, param_bound: float = 1.0, expert: str = "linear"
) -> KnownImageClass:
    """The class of `KnownImageClass` with `experts` ≤ 2·d_model experts, d_model a power of two.

    `expert="constant"` makes f_θ(x_i) = x_i[0] + c_i[0] instead: the image is the box
    ∏_i [x_i[0] ± B] and the uniform pushforward is uniform on it (the easy case of the same
    family; `"linear"` is the one whose corners are rare).

    Input i is ±h (a row of the Sylvester–Hadamard matrix over √d_model, each sign once), and the
    router's weights are the inputs themselves: expert i scores 1 on input i and at most 0 on the
    others, so every θ routes input i to expert i, with a margin of 1.
    """
    experts = positive_int("experts", experts)
    d_model = positive_int("d_model", d_model)
    if d_model & (d_model - 1):
        raise ValueError(f"d_model: expected a power of two, got {d_model}")
    if experts > 2 * d_model:
        raise ValueError(f"experts: at most 2·d_model = {2 * d_model}, got {experts}")
    if expert not in ("linear", "constant"):
        raise ValueError(f"expert: expected 'linear' or 'constant', got {expert!r}")
    hadamard = np.ones((1, 1))
    while len(hadamard) < d_model:
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    directions = np.concatenate([hadamard, -hadamard]) / np.sqrt(d_model)
    # Pair each row with its negation first, so that few experts still see both signs.
    order = np.ravel(np.column_stack([np.arange(d_model), np.arange(d_model) + d_model]))
    tokens = directions[order[:experts]]
    spec = MoESpec(
        experts=experts, top_k=1, d_model=d_model, seq_len=1, heads=0, expert=expert,  # type: ignore[arg-type]
        param_bound=param_bound,
    )
    pinned = {"layers.0.router.weight": tokens.copy(), "layers.0.router.bias": np.zeros(experts)}
    half = param_bound * (1.0 + np.abs(tokens).sum(axis=1)) if expert == "linear" else np.full(experts, param_bound)
    return KnownImageClass(
        spec=spec,
        inputs=tokens.reshape(experts, 1, d_model),
        pinned=pinned,
        low=tokens[:, 0] - half,
        high=tokens[:, 0] + half,
    )


def image_coverage(
    centres: ArrayLike, points: ArrayLike, delta: float, n_threads: int | None = None
) -> float:
    """The fraction of `points` within `delta` (sup norm) of some row of `centres`.

    Exactly, by one greedy net: the centres are scanned first, so a point within δ of any of them
    is assigned to one of them (the earliest within δ), and a point assigned to a later centre
    has none within δ. `centres` must be pairwise farther than δ apart (a packing, as `explore`
    returns), so that each opens its own centre.
    """
    c = as_float64("centres", centres, ndim=2)
    q = as_float64("points", points, ndim=2)
    if len(q) == 0:
        raise ValueError("points: need at least one point")
    if len(c) and c.shape[1] != q.shape[1]:
        raise ValueError(f"points: expected {c.shape[1]} columns, as the centres have; got shape {q.shape}")
    net = greedy_net(np.concatenate([c.reshape(-1, q.shape[1]), q]), delta, n_threads=n_threads)
    if len(c) and not np.array_equal(net.centers[: len(c)], np.arange(len(c))):
        raise ValueError("centres: not pairwise farther than delta apart (not a packing)")
    return float((net.assignment[len(c) :] < len(c)).mean())


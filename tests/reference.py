"""Slow, obviously-correct NumPy references of docs/definitions.md, written from the text, not from the Rust code."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np


def reference_layout(spec) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every block of θ in flat order (issue 2's naming)."""
    d, h, m = spec.d_model, spec.expert_hidden, spec.experts
    blocks = []
    for layer in range(spec.layers):
        if spec.heads:
            blocks += [(f"layers.{layer}.attn.{w}", (d, d)) for w in ("wq", "wk", "wv", "wo")]
        blocks += [(f"layers.{layer}.router.weight", (m, d)), (f"layers.{layer}.router.bias", (m,))]
        for j in range(m):
            e = f"layers.{layer}.experts.{j}"
            if spec.expert == "constant":
                blocks += [(f"{e}.value", (d,))]
            elif spec.expert == "linear":
                blocks += [(f"{e}.weight", (d, d)), (f"{e}.bias", (d,))]
            else:
                blocks += [(f"{e}.w1", (h, d)), (f"{e}.b1", (h,)), (f"{e}.w2", (d, h)), (f"{e}.b2", (d,))]
    return blocks


def unpack(spec, theta: np.ndarray) -> dict[str, np.ndarray]:
    out, offset = {}, 0
    for name, shape in reference_layout(spec):
        size = int(np.prod(shape))
        out[name] = theta[offset : offset + size].reshape(shape)
        offset += size
    assert offset == theta.size
    return out


def colex_rank(subset) -> int:
    """Σ_i C(s_i, i) over the sorted subset, i from 1 (definitions §2)."""
    return sum(comb(int(s), i) for i, s in enumerate(sorted(subset), start=1))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention(H, wq, wk, wv, wo, heads):
    d = H.shape[1]
    dh = d // heads
    Q, K, V = H @ wq, H @ wk, H @ wv
    parts = []
    for h in range(heads):
        cols = slice(h * dh, (h + 1) * dh)
        A = softmax(Q[:, cols] @ K[:, cols].T / np.sqrt(dh), axis=1)
        parts.append(A @ V[:, cols])
    return np.concatenate(parts, axis=1) @ wo


def expert(spec, p, layer, j, z):
    e = f"layers.{layer}.experts.{j}"
    if spec.expert == "constant":
        return p[f"{e}.value"].copy()
    if spec.expert == "linear":
        return p[f"{e}.weight"] @ z + p[f"{e}.bias"]
    hidden = np.maximum(p[f"{e}.w1"] @ z + p[f"{e}.b1"], 0.0)
    return p[f"{e}.w2"] @ hidden + p[f"{e}.b2"]


def moe(spec, p, layer, Z):
    out = np.zeros_like(Z)
    ranks = []
    W, b = p[f"layers.{layer}.router.weight"], p[f"layers.{layer}.router.bias"]
    for t, z in enumerate(Z):
        s = W @ z + b
        # highest score first, ties to the lower index: a stable sort on -s
        chosen = np.sort(np.argsort(-s, kind="stable")[: spec.top_k])
        if spec.gate == "renormalized_softmax":
            g = softmax(s[chosen])
        elif spec.gate == "full_softmax":
            g = softmax(s)[chosen]
        else:
            g = np.full(spec.top_k, 1.0 / spec.top_k)
        for gj, j in zip(g, chosen):
            out[t] += gj * expert(spec, p, layer, j, z)
        ranks.append(colex_rank(chosen))
    return out, ranks


def forward(spec, theta: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f_θ(X) and the (layers, seq_len) colex ranks of its routing pattern."""
    p = unpack(spec, np.asarray(theta, dtype=np.float64))
    H = np.array(X, dtype=np.float64)
    routes = []
    for layer in range(spec.layers):
        a = f"layers.{layer}.attn"
        attn = (
            attention(H, p[f"{a}.wq"], p[f"{a}.wk"], p[f"{a}.wv"], p[f"{a}.wo"], spec.heads)
            if spec.heads
            else np.zeros_like(H)
        )
        if spec.block == "sequential":
            Y = H + attn
            mix, ranks = moe(spec, p, layer, Y)
            H = Y + mix
        else:
            mix, ranks = moe(spec, p, layer, H)
            H = H + attn + mix
        routes.append(ranks)
    if spec.readout == "scalar":
        value = H[0, :1]
    elif spec.readout == "token0":
        value = H[0]
    else:
        value = H.ravel()
    return value, np.array(routes, dtype=np.uint32)


def evaluate(spec, params: np.ndarray, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values (m, n, o) and routes (m, n, layers, seq_len), one forward pass at a time."""
    values, routes = [], []
    for theta in np.atleast_2d(params):
        pairs = [forward(spec, theta, x) for x in inputs]
        values.append([v for v, _ in pairs])
        routes.append([r for _, r in pairs])
    return np.array(values), np.array(routes, dtype=np.uint32)


def greedy_net(points: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """The sequential greedy net of definitions §3, literally: centres (row indices) and assignment.

    Distances in the points' own precision; δ is rounded to it too (NumPy's weak-scalar rule)."""
    delta = points.dtype.type(delta)
    centres: list[int] = []
    assignment = np.empty(len(points), dtype=np.int64)
    for i, row in enumerate(points):
        if centres:
            close = np.flatnonzero(np.abs(points[centres] - row).max(axis=1) <= delta)
            if close.size:
                assignment[i] = close[0]
                continue
        assignment[i] = len(centres)
        centres.append(i)
    return np.array(centres, dtype=np.int64), assignment


#: Every option of the class as MoESpec keywords (heads × block × gate × expert-and-readout pairs):
#: the grid on which the JAX references (tests/test_jacobian_jax.py, tests/test_erm.py) are checked.
OPTIONS = [
    dict(heads=heads, block=block, gate=gate, expert=expert, readout=readout)
    for heads, block, gate, (expert, readout) in itertools.product(
        [0, 1, 2], ["sequential", "parallel"], ["renormalized_softmax", "full_softmax", "uniform"],
        [("mlp", "scalar"), ("linear", "token0"), ("constant", "all"), ("mlp", "all")],
    )
]


def option_case(options):
    """(case number, a small spec with `options`, its θ, 5 inputs): layers and top_k cycle with the
    case so that every value appears; θ and the inputs are seeded by the case."""
    import moecover

    case = OPTIONS.index(options)
    spec = moecover.MoESpec(layers=1 + case % 2, experts=4, top_k=1 + case % 3, d_model=4, seq_len=2,
                            expert_hidden=3, **options)
    theta = moecover.sample_params(spec, 1, rng=case, sampler="uniform")[0]
    return case, spec, theta, np.random.default_rng(case).uniform(-1, 1, (5, spec.seq_len, spec.d_model))

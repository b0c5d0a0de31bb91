"""The code a user would write without moecover: batched NumPy evaluation, SciPy nets."""

from __future__ import annotations

from math import comb

import numpy as np


def _blocks(spec, params):
    """`{name: (m, *shape) array}` views of a (m, P) parameter matrix."""
    return {b.name: params[:, b.offset : b.offset + b.size].reshape(-1, *b.shape) for b in spec.layout}


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def numpy_evaluate(spec, params, inputs, chunk=256):
    """values (m, n, o) and routes (m, n, layers, seq_len), batched with einsum over samples.

    Computes every expert densely and mixes with a sparse gate matrix, as one writes it in NumPy.
    Supports mlp experts, both block forms, the three gates and every readout.
    """
    m, n = params.shape[0], inputs.shape[0]
    L, M, k, D, S = spec.layers, spec.experts, spec.top_k, spec.d_model, spec.seq_len
    rank_table = np.array([[comb(s, i + 1) for i in range(k)] for s in range(M)], dtype=np.uint32)
    values = np.empty((m, n, spec.output_dim))
    routes = np.empty((m, n, L, S), dtype=np.uint32)
    for lo in range(0, m, chunk):
        p = _blocks(spec, params[lo : lo + chunk])
        B = p[f"layers.0.router.bias"].shape[0]
        H = np.broadcast_to(inputs, (B, n, S, D)).copy()
        for layer in range(L):
            a = f"layers.{layer}.attn"
            if spec.heads:
                dh = D // spec.heads
                q, kk, v = (np.einsum("bntd,bde->bnte", H, p[f"{a}.{w}"]).reshape(B, n, S, spec.heads, dh)
                            for w in ("wq", "wk", "wv"))
                att = _softmax(np.einsum("bnthe,bnuhe->bnhtu", q, kk) / np.sqrt(dh))
                ctx = np.einsum("bnhtu,bnuhe->bnthe", att, v).reshape(B, n, S, D)
                attn = np.einsum("bntd,bde->bnte", ctx, p[f"{a}.wo"])
            else:
                attn = 0.0
            Y = H + attn if spec.block == "sequential" else H
            r = f"layers.{layer}.router"
            scores = np.einsum("bntd,bmd->bntm", Y, p[f"{r}.weight"]) + p[f"{r}.bias"][:, None, None, :]
            chosen = np.sort(np.argsort(-scores, axis=-1, kind="stable")[..., :k], axis=-1)
            picked = np.take_along_axis(scores, chosen, axis=-1)
            if spec.gate == "renormalized_softmax":
                g = _softmax(picked)
            elif spec.gate == "full_softmax":
                g = np.take_along_axis(_softmax(scores), chosen, axis=-1)
            else:
                g = np.full(picked.shape, 1.0 / k)
            gates = np.zeros_like(scores)
            np.put_along_axis(gates, chosen, g, axis=-1)
            e = f"layers.{layer}.experts"
            W1 = np.stack([p[f"{e}.{j}.w1"] for j in range(M)], axis=1)  # (B, M, h, D)
            b1 = np.stack([p[f"{e}.{j}.b1"] for j in range(M)], axis=1)
            W2 = np.stack([p[f"{e}.{j}.w2"] for j in range(M)], axis=1)  # (B, M, D, h)
            b2 = np.stack([p[f"{e}.{j}.b2"] for j in range(M)], axis=1)
            hidden = np.maximum(np.einsum("bntd,bmhd->bntmh", Y, W1) + b1[:, None, None], 0.0)
            experts = np.einsum("bntmh,bmdh->bntmd", hidden, W2) + b2[:, None, None]
            mix = np.einsum("bntm,bntmd->bntd", gates, experts)
            H = Y + mix if spec.block == "sequential" else H + attn + mix
            routes[lo : lo + B, :, layer, :] = rank_table[chosen, np.arange(k)].sum(axis=-1)
        if spec.readout == "scalar":
            values[lo : lo + B] = H[:, :, 0, :1]
        elif spec.readout == "token0":
            values[lo : lo + B] = H[:, :, 0, :]
        else:
            values[lo : lo + B] = H.reshape(B, n, -1)
    return values, routes


def _resolve_in_block(points, block_start, found, centres, delta):
    """Sequential pass over a block: points not covered by older centres check the centres opened
    in this block (in order), else open a centre. Returns the block's assignment."""
    block_centres = []  # (centre id, row)
    for i, hit in enumerate(found):
        if hit >= 0:
            continue
        row = points[block_start + i]
        for cid, c_row in block_centres:
            if np.abs(row - c_row).max() <= delta:
                found[i] = cid
                break
        else:
            found[i] = len(centres)
            centres.append(block_start + i)
            block_centres.append((found[i], row))
    return found


def ckdtree_net(points, delta, block=1024):
    """Greedy net with a cKDTree over the current centres, rebuilt as the net grows (p = inf)."""
    from scipy.spatial import cKDTree

    centres: list[int] = []
    assignment = np.empty(len(points), dtype=np.int64)
    tree, in_tree = None, 0
    for start in range(0, len(points), block):
        rows = points[start : start + block]
        found = np.full(len(rows), -1, dtype=np.int64)
        if tree is not None:
            for i, hits in enumerate(tree.query_ball_point(rows, r=delta, p=np.inf)):
                if hits:
                    found[i] = min(hits)
        if in_tree < len(centres):  # centres opened since the last rebuild: brute force
            recent = points[centres[in_tree:]]
            for i in np.flatnonzero(found < 0):
                close = np.flatnonzero(np.abs(recent - rows[i]).max(axis=1) <= delta)
                if close.size:
                    found[i] = in_tree + close[0]
        assignment[start : start + len(rows)] = _resolve_in_block(points, start, found, centres, delta)
        if len(centres) > 2 * max(in_tree, 64):  # rebuild when the net has doubled
            tree, in_tree = cKDTree(points[centres]), len(centres)
    return np.asarray(centres), assignment


def ckdtree_cover_net(points, delta, block=1024, workers=1):
    """The centres of the greedy net, the fastest honest way with SciPy: a cKDTree over the current
    centres, rebuilt when the net has doubled; each block of 1024 points asks it for the nearest
    centre (p = inf, bounded at δ) and the few centres opened since the rebuild with `cdist`; the
    points left are resolved in order against each other (one `cdist` of the block's leftovers).
    Only whether some centre covers a point matters for the net, so the nearest one will do.
    `workers` is passed to the tree's queries (the only step SciPy runs in parallel)."""
    from scipy.spatial import cKDTree
    from scipy.spatial.distance import cdist

    centres: list[int] = []
    tree, in_tree = None, 0
    bound = np.nextafter(delta, np.inf)  # the tree's bound is strict; balls are closed
    for start in range(0, len(points), block):
        rows = points[start : start + block]
        covered = np.zeros(len(rows), dtype=bool)
        if tree is not None:
            distance, _ = tree.query(rows, k=1, p=np.inf, distance_upper_bound=bound, workers=workers)
            covered = distance <= delta
        todo = np.flatnonzero(~covered)
        if in_tree < len(centres) and todo.size:
            recent = points[centres[in_tree:]]
            covered[todo] = cdist(rows[todo], recent, "chebyshev").min(axis=1) <= delta
        todo = np.flatnonzero(~covered)
        if todo.size:
            close = cdist(rows[todo], rows[todo], "chebyshev") <= delta
            alive = np.ones(todo.size, dtype=bool)
            for i in range(todo.size):
                if alive[i]:
                    centres.append(start + int(todo[i]))
                    alive &= ~close[i]
        if len(centres) > 2 * max(in_tree, 64):
            tree, in_tree = cKDTree(points[centres]), len(centres)
    return np.asarray(centres, dtype=np.int64)


def cdist_net(points, delta, block=1024):
    """Greedy net with blocked scipy.spatial.distance.cdist(..., 'chebyshev') against all centres."""
    from scipy.spatial.distance import cdist

    centres: list[int] = []
    assignment = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), block):
        rows = points[start : start + block]
        found = np.full(len(rows), -1, dtype=np.int64)
        if centres:
            close = cdist(rows, points[centres], "chebyshev") <= delta
            anyhit = close.any(axis=1)
            found[anyhit] = close[anyhit].argmax(axis=1)
        assignment[start : start + len(rows)] = _resolve_in_block(points, start, found, centres, delta)
    return np.asarray(centres), assignment

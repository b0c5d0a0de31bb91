"""moecover.jacobian and functional_dimension: finite differences of `evaluate`, the closed forms
and symmetries of definitions §6, invariants, bad input."""

import numpy as np
import pytest

import moecover
from moecover import MoESpec, functional_dimension, jacobian
from moecover.inputs import one_per_expert_router


def central_differences(spec, theta, x, step=1e-6):
    """∂ values / ∂θ by central differences through `evaluate`, and whether any route changed."""
    columns, changed = [], False
    base = moecover.evaluate(spec, theta, x).routes
    for j in range(spec.total_params):
        plus, minus = theta.copy(), theta.copy()
        plus[j] += step
        minus[j] -= step
        up, down = moecover.evaluate(spec, plus, x), moecover.evaluate(spec, minus, x)
        changed |= not (np.array_equal(up.routes, base) and np.array_equal(down.routes, base))
        columns.append((up.values - down.values).ravel() / (2 * step))
    return np.array(columns).T, changed


@pytest.mark.parametrize("options", [
    dict(layers=2, experts=4, top_k=2, d_model=2, seq_len=2, heads=1, expert="mlp", expert_hidden=3),
    dict(layers=1, experts=3, top_k=1, d_model=4, seq_len=3, heads=2, expert="linear", gate="full_softmax",
         block="parallel", readout="all"),
    dict(layers=2, experts=5, top_k=3, d_model=2, seq_len=1, expert="constant", gate="uniform", readout="token0"),
    # the widths the core compiles as constants: (d_model, expert_hidden) = (4, 8) and (2, 2)
    dict(layers=1, experts=3, top_k=2, d_model=4, seq_len=2, heads=2, expert="mlp", expert_hidden=8,
         gate="full_softmax"),
    dict(layers=2, experts=3, top_k=1, d_model=2, seq_len=3, heads=1, expert="mlp", expert_hidden=2,
         block="parallel", readout="token0"),
])
def test_the_jacobian_equals_central_differences_of_evaluate(options):
    spec = MoESpec(**options)
    rng = np.random.default_rng(3)
    theta = moecover.sample_params(spec, 1, rng=4, sampler="uniform")[0]
    x = rng.uniform(-1, 1, (4, spec.seq_len, spec.d_model))
    found = jacobian(spec, theta, x)
    assert found.matrix.shape == (4 * spec.output_dim, spec.total_params)
    reference = moecover.evaluate(spec, theta, x)
    np.testing.assert_allclose(found.values, reference.values, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(found.routes, reference.routes)
    differences, changed = central_differences(spec, theta, x)
    assert not changed and not found.on_boundary
    np.testing.assert_allclose(found.matrix, differences, rtol=1e-6, atol=1e-7)


def test_rows_follow_the_values_and_columns_the_layout():
    spec = MoESpec(layers=1, experts=3, top_k=1, d_model=2, seq_len=2, readout="all", expert="linear")
    theta = moecover.sample_params(spec, 1, rng=1, sampler="uniform")[0]
    x = np.random.default_rng(2).normal(size=(3, 2, 2))
    found = jacobian(spec, theta, x)
    # one named block, moved along one of its coordinates: the change of every output, in order
    block = spec.param_block("layers.0.router.bias")
    step = np.zeros(spec.total_params)
    step[block.offset + 1] = 1e-7
    moved = (moecover.evaluate(spec, theta + step, x).values - moecover.evaluate(spec, theta - step, x).values) / 2e-7
    np.testing.assert_allclose(found.matrix[:, block.offset + 1], moved.reshape(-1), rtol=1e-5, atol=1e-8)


def test_constant_experts_reached_one_per_input_give_the_number_of_experts():
    # definitions §6: router pinned so that input i reaches expert i: r* = the experts reached
    for experts, reached in [(4, 4), (6, 3)]:
        spec = MoESpec(experts=experts, top_k=1, d_model=2, expert="constant")
        x = np.zeros((reached, 1, 2))
        x[:, 0, 0] = 0.1 * np.arange(reached)
        x[:, 0, 1] = np.random.default_rng(0).normal(size=reached)
        result = functional_dimension(spec, x, samples=20, rng=0, pinned=one_per_expert_router(spec))
        assert result.max_rank == reached and result.reached == 20
        assert result.free_params == experts * 2


def test_linear_experts_give_the_sum_of_min_inputs_and_d_plus_one():
    # inputs reaching experts 0, 1, 2 in numbers 1, 2, 5 (D = 2): r* = 1 + 2 + 3. Expert j's
    # score is highest where the first coordinate is within 0.05 of 0.1·j; inside that the inputs
    # are in general position (a constant first coordinate would make them collinear: rank 2)
    spec = MoESpec(experts=3, top_k=1, d_model=2, expert="linear")
    counts = [1, 2, 5]
    owner = np.repeat(np.arange(3), counts)
    rng = np.random.default_rng(5)
    x = np.zeros((len(owner), 1, 2))
    x[:, 0, 0] = 0.1 * owner + rng.uniform(-0.04, 0.04, size=len(owner))
    x[:, 0, 1] = rng.normal(size=len(owner))
    assert np.array_equal(moecover.evaluate(spec, np.zeros(spec.total_params) + np.concatenate(
        [one_per_expert_router(spec)[k].ravel() for k in ("layers.0.router.weight", "layers.0.router.bias")]
        + [np.zeros(spec.total_params - 9)]), x).routes.ravel(), owner)
    result = functional_dimension(spec, x, samples=10, rng=1, pinned=one_per_expert_router(spec))
    assert result.max_rank == sum(min(c, spec.d_model + 1) for c in counts)
    assert list(result.rank_by_inputs) == [1, 2, 3, 4, 5, 6, 6, 6]


def reference_ranks(one, rtol, o):
    """Rank, gap and the rank on every prefix of the inputs, from an SVD of each prefix of J."""
    values = np.linalg.svd(one, compute_uv=False)
    threshold = rtol * values[0]
    rank = int((values > threshold).sum())
    gap = np.inf if rank == len(values) or values[rank] == 0 else values[rank - 1] / values[rank]
    prefix = [int((np.linalg.svd(one[: j * o], compute_uv=False) > threshold).sum()) for j in range(1, len(one) // o + 1)]
    return rank, gap, prefix


@pytest.mark.parametrize("o", [1, 2, 3])
def test_prefix_ranks_equal_an_svd_of_every_prefix(o):
    # rows built so that each input adds 0 … o new directions (the rest are combinations of earlier
    # rows), some matrices wider than their rank, some narrower than their rows
    from moecover._jacobian import RANK_RTOL, _ranks

    rng = np.random.default_rng(o)
    n = 24
    for width in (7, 40):
        matrices = []
        for _ in range(6):
            directions = rng.normal(size=(n * o, width))
            rows, used = [], 0
            for _ in range(n):
                new = int(rng.integers(0, o + 1)) if rng.random() < 0.6 else 0
                for _ in range(o):
                    if new > 0 and used < len(directions):
                        rows.append(directions[used] * rng.uniform(0.5, 2))
                        used, new = used + 1, new - 1
                    else:  # a combination of earlier rows, or zero
                        rows.append(rng.normal(size=len(rows)) @ np.array(rows) if rows else np.zeros(width))
            matrices.append(np.array(rows))
        matrix = np.array(matrices)
        prefix = np.zeros((len(matrix), n), dtype=np.int64)
        ranks, gaps = _ranks(matrix, RANK_RTOL, n, o, prefix)
        for j, one in enumerate(matrix):
            rank, gap, expected = reference_ranks(one, RANK_RTOL, o)
            assert ranks[j] == rank and list(prefix[j]) == expected, (width, j)
            # below the rank only rounding noise: both gaps far above the ambiguous 10³
            assert gaps[j] == gap if np.isinf(gap) else gaps[j] > 1e6 and gap > 1e6


def test_the_gram_certifies_full_rank_only_where_rounding_cannot_decide_it():
    # J = U diag(σ) Vᵀ with σ_min / σ_1 of 1e-2 (certified by the Gram), 1e-7 (full rank at
    # rtol 1e-9, but below what the Gram resolves: the QR decides) and 1e-11 (rank one less)
    from moecover import _core
    from moecover._jacobian import RANK_RTOL, _ranks

    rng = np.random.default_rng(0)
    rows, width = 12, 50
    matrices = []
    for smallest in (1e-2, 1e-7, 1e-11):
        u = np.linalg.qr(rng.normal(size=(rows, rows)))[0]
        v = np.linalg.qr(rng.normal(size=(width, rows)))[0]
        sigma = np.linspace(1, 0.5, rows)
        sigma[-1] = smallest
        matrices.append(u @ np.diag(sigma) @ v.T)
    matrix = np.array(matrices)
    assert _core.gram_full_row_rank(matrix.ravel(), rows, width, RANK_RTOL) == [True, False, False]
    prefix = np.zeros((3, rows), dtype=np.int64)
    ranks, gaps = _ranks(matrix, RANK_RTOL, rows, 1, prefix)
    assert list(ranks) == [rows, rows, rows - 1]
    for j, one in enumerate(matrix):
        rank, gap, expected = reference_ranks(one, RANK_RTOL, 1)
        assert ranks[j] == rank and list(prefix[j]) == expected
        assert gaps[j] == pytest.approx(gap, rel=1e-3) if np.isfinite(gap) else np.isinf(gaps[j])


def null_vectors(spec, theta):
    """The symmetries of definitions §6 as explicit directions v in θ (each J v = 0)."""
    d, h = spec.d_model, spec.expert_hidden
    vectors = {}
    for layer in range(spec.layers):
        # ReLU rescaling of hidden unit 0 of expert 0: (w1_u, b1_u) up, W2[:, u] down
        v = np.zeros_like(theta)
        w1, b1, w2 = (spec.param_block(f"layers.{layer}.experts.0.{t}") for t in ("w1", "b1", "w2"))
        v[w1.offset : w1.offset + d] = theta[w1.offset : w1.offset + d]
        v[b1.offset] = theta[b1.offset]
        column = w2.offset + np.arange(d) * h
        v[column] = -theta[column]
        vectors[f"relu rescaling, layer {layer}"] = v
        # every router score shifted by one affine function of the token
        v = np.zeros_like(theta)
        weight, bias = spec.param_block(f"layers.{layer}.router.weight"), spec.param_block(f"layers.{layer}.router.bias")
        shift = np.random.default_rng(layer).normal(size=d)
        v[weight.offset : weight.offset + weight.size] = np.tile(shift, spec.experts)
        v[bias.offset : bias.offset + bias.size] = 0.7
        vectors[f"router shift, layer {layer}"] = v
        if spec.heads:
            width = d // spec.heads
            a = np.zeros((d, d))
            for head in range(spec.heads):  # block-diagonal: one G per head
                a[head * width : (head + 1) * width, head * width : (head + 1) * width] = (
                    np.random.default_rng(10 + head).normal(size=(width, width)))
            blocks = {t: spec.param_block(f"layers.{layer}.attn.{t}") for t in ("wq", "wk", "wv", "wo")}
            w = {t: theta[b.offset : b.offset + b.size].reshape(d, d) for t, b in blocks.items()}
            v = np.zeros_like(theta)  # W_Q → W_Q G, W_K → W_K G^{-T}
            v[blocks["wq"].offset : blocks["wq"].offset + d * d] = (w["wq"] @ a).ravel()
            v[blocks["wk"].offset : blocks["wk"].offset + d * d] = (-w["wk"] @ a.T).ravel()
            vectors[f"query-key, layer {layer}"] = v
            v = np.zeros_like(theta)  # W_V → W_V G, W_O → G^{-1} W_O
            v[blocks["wv"].offset : blocks["wv"].offset + d * d] = (w["wv"] @ a).ravel()
            v[blocks["wo"].offset : blocks["wo"].offset + d * d] = (-a @ w["wo"]).ravel()
            vectors[f"value-output, layer {layer}"] = v
    return vectors


@pytest.mark.parametrize("heads, gate", [(1, "renormalized_softmax"), (2, "full_softmax"), (0, "uniform")])
def test_each_symmetry_is_a_null_vector(heads, gate):
    spec = MoESpec(layers=2, experts=4, top_k=2, d_model=4, seq_len=3, heads=heads, expert="mlp", expert_hidden=3,
                   gate=gate)
    x = np.random.default_rng(8).uniform(-1, 1, (6, 3, 4))
    for s, theta in enumerate(moecover.sample_params(spec, 3, rng=9, sampler="uniform")):
        matrix = jacobian(spec, theta, x).matrix
        scale = np.linalg.norm(matrix, 2)
        for name, v in null_vectors(spec, theta).items():
            assert np.linalg.norm(matrix @ v) <= 1e-10 * scale * np.linalg.norm(v), (s, name)


def test_invariants_and_threads():
    spec = MoESpec(layers=1, experts=4, top_k=2, d_model=2, expert="mlp", expert_hidden=2)
    x = moecover.inputs.box(12, d_model=2, rng=0)
    one = functional_dimension(spec, x, samples=60, rng=3, n_threads=1)
    two = functional_dimension(spec, x, samples=60, rng=3, n_threads=2)
    assert np.array_equal(one.ranks, two.ranks) and np.array_equal(one.gaps, two.gaps)
    assert one.max_rank == two.max_rank and one.null_blocks == two.null_blocks
    assert one.max_rank <= min(one.ambient, one.free_params)
    assert np.all(np.diff(one.rank_by_inputs) >= 0) and one.rank_by_inputs[-1] == one.max_rank
    assert one.rank_by_inputs[0] <= spec.output_dim
    assert sum(one.pattern_samples) == 60 and one.pattern_max_rank.max() == one.max_rank
    patterns = one.by_pattern
    assert patterns[0]["max_rank"] == one.max_rank and sum(p["samples"] for p in patterns) == 60
    assert [p["max_rank"] for p in patterns] == sorted((p["max_rank"] for p in patterns), reverse=True)
    assert patterns[0]["routes"].shape == (12, spec.layers, spec.seq_len)
    assert sum(one.null_blocks.values()) == pytest.approx(one.free_params - one.max_rank, abs=1e-8)
    # experts' parameters at the size of the class: the paper's count is not the rank
    assert one.active_params == spec.active_params
    assert one.to_dict()["max_rank"] == one.max_rank and "r*=" in repr(one)


@pytest.mark.parametrize("pinned", [False, True])
def test_the_core_certifies_exactly_ranks_the_svd_finds_full(pinned):
    # few inputs, many parameters: most Jacobians have full row rank and are certified by the
    # core's Gram test without being returned; the ranks must still be the SVD's
    from moecover import _core
    from moecover._jacobian import RANK_RTOL

    spec = MoESpec(layers=2, experts=4, top_k=2, d_model=2, seq_len=2, heads=1, expert="mlp", expert_hidden=3)
    x = moecover.inputs.box(6, seq_len=2, d_model=2, rng=1)
    pins = {"layers.0.router.bias": np.zeros(4)} if pinned else None
    free = [b for b in spec.layout if not (pinned and b.name == "layers.0.router.bias")]
    columns = np.concatenate([np.arange(b.offset, b.offset + b.size) for b in free])
    found = functional_dimension(spec, x, samples=40, rng=5, pinned=pins)
    theta = moecover.sample_params(spec, 40, rng=found.provenance["seed"], pinned=pins, sampler="uniform")
    matrices = jacobian(spec, theta, x).matrix[:, :, columns]
    _, _, flags = _core.certify_full_row_rank(spec._core, theta.ravel(), np.asarray(x).ravel(),
                                              [(b.offset, b.offset + b.size) for b in free], RANK_RTOL, 2)
    assert 0 < sum(flags)
    for s, matrix in enumerate(matrices):
        rank, gap, prefix = reference_ranks(matrix, RANK_RTOL, spec.output_dim)
        assert found.ranks[s] == rank, s
        if flags[s]:
            assert rank == len(x) and prefix == list(range(1, len(x) + 1))
    assert found.max_rank == max(reference_ranks(m, RANK_RTOL, 1)[0] for m in matrices)


def test_null_blocks_equal_the_full_null_space_basis():
    from moecover._jacobian import RANK_RTOL, _null_blocks

    spec = MoESpec(layers=1, experts=4, top_k=2, d_model=2, expert="mlp", expert_hidden=2)
    x = np.asarray(moecover.inputs.box(12, d_model=2, rng=0))
    theta = moecover.sample_params(spec, 1, rng=2, sampler="uniform")[0]
    matrix = jacobian(spec, theta, x).matrix
    singular = np.linalg.svd(matrix, compute_uv=False)
    rank = int((singular > RANK_RTOL * singular[0]).sum())
    null = np.linalg.svd(matrix, full_matrices=True)[2][rank:]
    free = np.arange(spec.total_params)
    shares = _null_blocks(spec, x, (rank, theta), list(spec.layout), free, RANK_RTOL)
    for block in spec.layout:
        expected = (null[:, block.offset : block.offset + block.size] ** 2).sum()
        assert shares[block.name] == pytest.approx(expected, abs=1e-10), block.name


def test_pinned_blocks_leave_the_columns():
    spec = MoESpec(layers=1, experts=3, top_k=1, d_model=2, expert="constant")
    x = moecover.inputs.one_per_expert(spec)
    free = functional_dimension(spec, x, samples=5, rng=0)
    pinned = functional_dimension(spec, x, samples=5, rng=0, pinned=one_per_expert_router(spec))
    assert free.free_params == spec.total_params and pinned.free_params == spec.total_params - 9
    assert set(pinned.null_blocks) == {b.name for b in spec.layout if b.kind == "experts"}


@pytest.mark.parametrize("call, error, argument", [
    (lambda s, x: jacobian(s, np.zeros(3), x), ValueError, "params"),
    (lambda s, x: jacobian(s, np.full(s.total_params, np.nan), x), ValueError, "params"),
    (lambda s, x: jacobian(s, np.zeros(s.total_params), x[:, :, :1]), ValueError, "inputs"),
    (lambda s, x: jacobian(5, np.zeros(3), x), TypeError, "spec"),
    (lambda s, x: jacobian(s, np.zeros((0, s.total_params)), x), None, None),
    (lambda s, x: functional_dimension(s, x, samples=0), ValueError, "samples"),
    (lambda s, x: functional_dimension(s, x, samples=2, rtol=2.0), ValueError, "rtol"),
    (lambda s, x: functional_dimension(s, x, samples=2, pinned={"nope": [1]}), ValueError, "nope"),
])
def test_bad_input_names_the_argument(call, error, argument):
    spec = MoESpec(experts=2, d_model=2)
    x = np.zeros((3, 1, 2))
    if error is None:
        assert call(spec, x).matrix.shape == (0, 3, spec.total_params)
        return
    with pytest.raises(error, match=argument):
        call(spec, x)


def test_too_many_jacobians_for_memory_are_refused_up_front():
    spec = MoESpec(experts=8, d_model=8, expert_hidden=16, seq_len=4, readout="all")
    params = np.broadcast_to(np.zeros(spec.total_params), (200_000, spec.total_params))
    with pytest.raises(moecover.TooLargeError, match="params"):
        jacobian(spec, params, np.zeros((64, 4, 8)))


def test_theory_gives_the_functional_dimension_beside_the_other_slopes():
    spec = MoESpec(experts=4, top_k=1, d_model=1, expert="constant")
    x = moecover.inputs.one_per_expert(spec)
    pinned = one_per_expert_router(spec)
    assert moecover.theory.functional_slope(spec, x, samples=10, rng=0, pinned=pinned) == 4  # definitions §4
    assert moecover.theory.paper_slope(spec) == 1
    assert moecover.theory.ambient_dimension(spec, len(x)) == 4


def test_the_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    spec = MoESpec(experts=2, d_model=2, expert_hidden=2)
    result = functional_dimension(spec, moecover.inputs.box(6, d_model=2, rng=0), samples=10, rng=0)
    result.plot(str(tmp_path / "fd.png"))
    assert (tmp_path / "fd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_numpy_blas_runs_on_one_thread(monkeypatch):
    # the ranks' QRs and SVDs run in NumPy's BLAS, which otherwise takes every core (and whose
    # sums could depend on its thread count)
    from threadpoolctl import threadpool_info

    from moecover import _jacobian

    seen = []
    original = _jacobian._ranks

    def recording(*args):
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return original(*args)

    monkeypatch.setattr(_jacobian, "_ranks", recording)
    spec = MoESpec(experts=4, top_k=1, d_model=2, expert="mlp", expert_hidden=2)
    functional_dimension(spec, moecover.inputs.box(8, d_model=2, rng=0), samples=4, rng=0, n_threads=2)
    assert seen and set(seen) == {1}

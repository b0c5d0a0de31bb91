"""sample_params / evaluate / evaluate_sampled against the NumPy reference, determinism, bad input."""

import itertools

import numpy as np
import pytest
import reference
from scipy import stats

import moecover
from moecover import MoESpec, evaluate, evaluate_sampled, sample_params

OPTION_GRID = list(
    itertools.product([0, 1, 2], ["sequential", "parallel"], ["renormalized_softmax", "full_softmax", "uniform"],
                      ["constant", "linear", "mlp"])
)


def random_spec(case: int, heads, block, gate, expert) -> MoESpec:
    """A small spec with the given options; readout, layers and top_k cycle so every value appears."""
    rng = np.random.default_rng(case)
    top_k = (1, 2, 3)[case % 3]
    return MoESpec(
        layers=(1, 2)[case % 2],
        experts=top_k + int(rng.integers(0, 3)),
        top_k=top_k,
        d_model=2 * int(rng.integers(1, 3)),
        seq_len=int(rng.integers(1, 4)),
        heads=heads,
        expert=expert,
        expert_hidden=int(rng.integers(1, 5)),
        gate=gate,
        block=block,
        readout=("scalar", "token0", "all")[(case // 3) % 3],
        param_bound=float(rng.uniform(0.5, 2.0)),
    )


@pytest.mark.parametrize(("case", "options"), list(enumerate(OPTION_GRID)))
def test_evaluate_matches_numpy_reference(case, options):
    spec = random_spec(case, *options)
    rng = np.random.default_rng(1000 + case)
    # 37 inputs: a batch of 32 in SIMD lanes, then 5 one at a time (the core's two paths)
    inputs = rng.normal(size=(37, spec.seq_len, spec.d_model))
    params = sample_params(spec, 4, rng=case)
    got = evaluate(spec, params, inputs, n_threads=2)
    want_values, want_routes = reference.evaluate(spec, params, inputs)
    np.testing.assert_array_equal(got.routes, want_routes)
    np.testing.assert_allclose(got.values, want_values, rtol=1e-12, atol=1e-12 * np.abs(want_values).max())


@pytest.mark.parametrize("heads", [0, 1])
@pytest.mark.parametrize("expert_hidden", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("d_model", [1, 2, 3, 4, 5, 8])
def test_every_compiled_width_matches_numpy_reference(d_model, expert_hidden, heads):
    # the core compiles the forward pass separately for small d_model and expert_hidden (and
    # folds one head's W_Q W_Kᵀ, W_V W_O per θ); each instance must compute the same function
    spec = MoESpec(layers=2, experts=5, top_k=2, d_model=d_model, seq_len=3, heads=heads, expert_hidden=expert_hidden,
                   readout="all")
    rng = np.random.default_rng(d_model * 100 + expert_hidden)
    inputs = rng.normal(size=(20, 3, d_model))  # 16 in lanes, 4 one at a time
    params = sample_params(spec, 5, rng=d_model)
    got = evaluate(spec, params, inputs, n_threads=1)
    want_values, want_routes = reference.evaluate(spec, params, inputs)
    np.testing.assert_array_equal(got.routes, want_routes)
    np.testing.assert_allclose(got.values, want_values, rtol=1e-12, atol=1e-12 * np.abs(want_values).max())


def test_every_option_value_is_covered_by_the_reference_grid():
    specs = [random_spec(case, *options) for case, options in enumerate(OPTION_GRID)]
    assert {s.readout for s in specs} == {"scalar", "token0", "all"}
    assert {s.layers for s in specs} == {1, 2}
    assert {s.top_k for s in specs} == {1, 2, 3}


def test_routes_are_colex_ranks_of_a_known_router():
    # d_model=1, no attention, router weight w_j = j-1 and bias 0: scores (j-1)·x, so for x > 0 the
    # top-2 experts are {M-2, M-1}, rank C(M-2,1) + C(M-1,2); for x < 0 they are {0, 1}, rank 0.
    spec = MoESpec(experts=5, top_k=2, d_model=1, expert="constant", gate="uniform")
    pinned = {"layers.0.router.weight": np.arange(-1.0, 4.0).reshape(5, 1), "layers.0.router.bias": np.zeros(5)}
    out = evaluate_sampled(spec, np.array([[[0.7]], [[-0.3]]]), 3, rng=0, pinned=pinned)
    assert (out.routes[:, 0, 0, 0] == 3 + 6).all()
    assert (out.routes[:, 1, 0, 0] == 0).all()
    params = sample_params(spec, 3, rng=0, pinned=pinned)
    constants = params[:, spec.param_block("layers.0.experts.3.value").offset :][:, :2]
    np.testing.assert_allclose(out.values[:, 0, 0], 0.7 + constants.mean(axis=1), rtol=1e-14)


def test_uniform_samples_are_uniform_in_the_box():
    spec = MoESpec(param_bound=2.5)
    params = sample_params(spec, 2000, rng=3, sampler="uniform")
    assert params.shape == (2000, spec.total_params)
    assert params.min() >= -2.5 and params.max() < 2.5
    assert stats.kstest(params.ravel(), stats.uniform(loc=-2.5, scale=5.0).cdf).pvalue > 1e-3
    # coordinates of one row are uncorrelated with their neighbours
    assert abs(np.corrcoef(params[:, 0], params[:, 1])[0, 1]) < 0.1


def test_arcsine_samples_follow_the_arcsine_law():
    spec = MoESpec(param_bound=2.5)
    params = sample_params(spec, 2000, rng=3, sampler="arcsine")
    assert np.abs(params).max() <= 2.5
    # SciPy's arcsine law lives on [0, 1]: x = 2.5 (2u − 1)
    assert stats.kstest((params.ravel() / 2.5 + 1) / 2, stats.arcsine.cdf).pvalue > 1e-3


def test_face_samples_put_a_row_rate_of_coordinates_on_the_faces():
    spec = MoESpec(param_bound=2.5)
    params = sample_params(spec, 3000, rng=3, sampler="faces")
    assert np.abs(params).max() <= 2.5
    on_face = (np.abs(params) == 2.5).mean(axis=1)
    # the per-row rate ρ is uniform on [0, 1): so is each row's fraction on the faces, up to noise
    assert stats.kstest(on_face, stats.uniform.cdf).pvalue > 1e-4
    signs = np.sign(params[np.abs(params) == 2.5])
    assert abs(signs.mean()) < 0.02  # either face, equally
    inner = params[np.abs(params) < 2.5]
    assert stats.kstest(inner, stats.uniform(loc=-2.5, scale=5.0).cdf).pvalue > 1e-3


def test_mixture_rows_are_rows_of_its_components():
    spec = MoESpec()
    mixed = sample_params(spec, 600, rng=5, sampler="mixture")
    parts = {name: sample_params(spec, 600, rng=5, sampler=name) for name in ("uniform", "arcsine", "faces")}
    which = np.array([[np.array_equal(mixed[s], parts[name][s]) for name in parts] for s in range(600)])
    assert (which.sum(axis=1) == 1).all()  # each row is exactly one component's row of its index
    shares = which.mean(axis=0)
    np.testing.assert_allclose(shares, [1 / 6, 1 / 6, 2 / 3], atol=0.06)


@pytest.mark.parametrize("sampler", ["uniform", "arcsine", "faces", "mixture"])
def test_every_sampler_keeps_pins_and_is_thread_independent(sampler):
    block = SPEC.param_block("layers.1.router.bias")
    pinned = {"layers.1.router.bias": np.arange(5.0)}
    free = sample_params(SPEC, 300, rng=8, sampler=sampler, n_threads=1)
    held = sample_params(SPEC, 300, rng=8, sampler=sampler, pinned=pinned, n_threads=2)
    np.testing.assert_array_equal(held[:, block.offset : block.offset + block.size], np.tile(np.arange(5.0), (300, 1)))
    others = np.ones(SPEC.total_params, dtype=bool)
    others[block.offset : block.offset + block.size] = False
    np.testing.assert_array_equal(held[:, others], free[:, others])
    out = evaluate_sampled(SPEC, INPUTS, 300, rng=8, sampler=sampler, pinned=pinned, n_threads=2)
    np.testing.assert_array_equal(out.values, evaluate(SPEC, held, INPUTS, n_threads=1).values)
    assert out.sampler == sampler


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="sampler"):
        sample_params(MoESpec(), 3, sampler="gauss")
    with pytest.raises(ValueError, match="sampler"):
        evaluate_sampled(MoESpec(), np.zeros((1, 1, 2)), 3, sampler=None)


SPEC = MoESpec(layers=2, experts=5, top_k=2, d_model=4, seq_len=3, heads=2, expert_hidden=3)
INPUTS = np.random.default_rng(7).normal(size=(9, 3, 4))


def test_bit_identical_for_one_and_two_threads():
    a = sample_params(SPEC, 500, rng=42, n_threads=1)
    b = sample_params(SPEC, 500, rng=42, n_threads=2)
    assert a.tobytes() == b.tobytes()
    for f in (lambda t: evaluate(SPEC, a, INPUTS, n_threads=t), lambda t: evaluate_sampled(SPEC, INPUTS, 500, 42, n_threads=t)):
        one, two = f(1), f(2)
        assert one.values.tobytes() == two.values.tobytes()
        assert one.routes.tobytes() == two.routes.tobytes()


def test_evaluate_sampled_equals_evaluate_of_sampled_params():
    pinned = {"layers.1.router.bias": np.linspace(-1, 1, 5)}
    params = sample_params(SPEC, 300, rng=5, start=17, pinned=pinned)
    direct = evaluate(SPEC, params, INPUTS)
    streamed = evaluate_sampled(SPEC, INPUTS, 300, rng=5, start=17, pinned=pinned)
    assert direct.values.tobytes() == streamed.values.tobytes()
    assert direct.routes.tobytes() == streamed.routes.tobytes()
    assert streamed.seed == 5 and streamed.start == 17


def test_sub_range_regenerates_rows_of_the_full_run():
    full = sample_params(SPEC, 400, rng=9)
    np.testing.assert_array_equal(sample_params(SPEC, 50, rng=9, start=123), full[123:173])
    full_eval = evaluate_sampled(SPEC, INPUTS, 400, rng=9)
    part = evaluate_sampled(SPEC, INPUTS, 50, rng=9, start=350)
    np.testing.assert_array_equal(part.values, full_eval.values[350:])
    np.testing.assert_array_equal(part.routes, full_eval.routes[350:])


def test_sub_range_replay_holds_across_work_chunks():
    # 1000 inputs make each sample's work large enough that 5000 samples span a few of the core's
    # chunks (about 2400 samples each at one thread here); each sample is still keyed by its index
    # in the seed, not by its place in a chunk
    spec = MoESpec(experts=2, top_k=1, d_model=1, expert="constant")
    x = np.linspace(-1, 1, 1000).reshape(1000, 1, 1)
    full = evaluate_sampled(spec, x, 5000, rng=3, n_threads=1)
    for start in (0, 2500, 4900):
        part = evaluate_sampled(spec, x, 100, rng=3, start=start, n_threads=1)
        np.testing.assert_array_equal(part.values, full.values[start:start + 100])
    direct = evaluate(spec, sample_params(spec, 5000, rng=3), x, n_threads=2)
    assert direct.values.tobytes() == full.values.tobytes()


def test_pinned_blocks_replace_values_and_leave_the_rest_alone():
    weight = np.arange(20.0).reshape(5, 4) / 20
    free = sample_params(SPEC, 10, rng=1)
    pinned = sample_params(SPEC, 10, rng=1, pinned={"layers.0.router.weight": weight})
    block = SPEC.param_block("layers.0.router.weight")
    inside = slice(block.offset, block.offset + block.size)
    np.testing.assert_array_equal(pinned[:, inside], np.tile(weight.ravel(), (10, 1)))
    mask = np.ones(SPEC.total_params, bool)
    mask[inside] = False
    np.testing.assert_array_equal(pinned[:, mask], free[:, mask])


def test_seed_sources_replay():
    gen_eval = evaluate_sampled(SPEC, INPUTS, 20, rng=np.random.default_rng(0))
    replay = evaluate_sampled(SPEC, INPUTS, 20, rng=gen_eval.seed)
    np.testing.assert_array_equal(gen_eval.values, replay.values)
    fresh = evaluate_sampled(SPEC, INPUTS, 20)
    assert isinstance(fresh.seed, int) and 0 <= fresh.seed < 2**64
    np.testing.assert_array_equal(evaluate_sampled(SPEC, INPUTS, 20, rng=fresh.seed).values, fresh.values)
    seed = moecover.resolve_seed(np.random.default_rng(3))
    assert seed == moecover.resolve_seed(np.random.default_rng(3))


def test_single_parameter_vector_drops_the_sample_axis():
    theta = sample_params(SPEC, 1, rng=0)
    out = evaluate(SPEC, theta[0], INPUTS)
    assert out.values.shape == (9, 1) and out.routes.shape == (9, 2, 3)
    np.testing.assert_array_equal(out.values, evaluate(SPEC, theta, INPUTS).values[0])


def test_float32_and_non_contiguous_inputs_are_accepted():
    params = sample_params(SPEC, 6, rng=2)
    base = evaluate(SPEC, params, INPUTS)
    wide = np.zeros((9, 3, 8))
    wide[:, :, ::2] = INPUTS
    strided = evaluate(SPEC, np.asfortranarray(params), wide[:, :, ::2])
    np.testing.assert_array_equal(strided.values, base.values)
    single = evaluate(SPEC, params.astype(np.float32), INPUTS.astype(np.float32))
    want, _ = reference.evaluate(SPEC, params.astype(np.float32).astype(np.float64), INPUTS.astype(np.float32))
    np.testing.assert_allclose(single.values, want, rtol=1e-12, atol=1e-12)


def test_repr_is_compact():
    text = repr(evaluate_sampled(SPEC, INPUTS, 3, rng=1))
    assert text.startswith("Evaluation(values=float64[3, 9, 1], routes=uint32[3, 9, 2, 3], seed=1")


def test_threads_default_from_environment(monkeypatch):
    monkeypatch.setenv("MOECOVER_NUM_THREADS", "1")
    assert evaluate_sampled(SPEC, INPUTS, 3, rng=1).n_threads == 1
    for bad in ("zero", "0", "-2", "2147483648", "30000"):
        monkeypatch.setenv("MOECOVER_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="^MOECOVER_NUM_THREADS"):
            evaluate_sampled(SPEC, INPUTS, 3, rng=1)


@pytest.mark.parametrize("threads", [2**31, 2**63 - 1, 30_000, 1025])
def test_thread_counts_past_the_cap_are_refused_before_any_thread_starts(threads):
    # once a process abort (2**31: a 48 GiB allocation), a panic (2**63 - 1) or 30 000 threads
    with pytest.raises(ValueError, match=r"^n_threads: at most 1024"):
        evaluate_sampled(SPEC, INPUTS, 3, rng=1, n_threads=threads)


BAD_CALLS = [
    (lambda: evaluate(SPEC, np.zeros((2, 7)), INPUTS), ValueError, "params"),
    (lambda: evaluate(SPEC, np.zeros((2, 2, SPEC.total_params)), INPUTS), ValueError, "params"),
    (lambda: evaluate(SPEC, np.full((1, SPEC.total_params), np.nan), INPUTS), ValueError, "params"),
    (lambda: evaluate(SPEC, np.zeros(SPEC.total_params), INPUTS[:, :, :3]), ValueError, "inputs"),
    (lambda: evaluate(SPEC, np.zeros(SPEC.total_params), INPUTS[0]), ValueError, "inputs"),
    (lambda: evaluate(SPEC, np.zeros(SPEC.total_params), np.where(INPUTS > 1, np.inf, INPUTS)), ValueError, "inputs"),
    (lambda: evaluate(SPEC, np.zeros(SPEC.total_params, complex), INPUTS), TypeError, "params"),
    (lambda: evaluate(SPEC, np.zeros(SPEC.total_params), INPUTS.astype(object)), TypeError, "inputs"),
    (lambda: evaluate("spec", np.zeros(SPEC.total_params), INPUTS), TypeError, "spec"),
    (lambda: evaluate(SPEC, np.zeros(SPEC.total_params), INPUTS, n_threads=0), ValueError, "n_threads"),
    (lambda: sample_params(SPEC, 0), ValueError, "m"),
    (lambda: sample_params(SPEC, -3), ValueError, "m"),
    (lambda: sample_params(SPEC, 2.0), TypeError, "m"),
    (lambda: sample_params(SPEC, 2, start=-1), ValueError, "start"),
    (lambda: sample_params(SPEC, 2, rng=-1), ValueError, "rng"),
    (lambda: sample_params(SPEC, 2, rng="seed"), TypeError, "rng"),
    (lambda: sample_params(SPEC, 2, pinned={"layers.9.router.bias": np.zeros(5)}), ValueError, "pinned"),
    (lambda: sample_params(SPEC, 2, pinned={"layers.0.router.bias": np.zeros(4)}), ValueError, "pinned"),
    (lambda: sample_params(SPEC, 2, pinned={"layers.0.router.bias": [np.nan] * 5}), ValueError, "pinned"),
    (lambda: sample_params(SPEC, 2, pinned=[("layers.0.router.bias", np.zeros(5))]), TypeError, "pinned"),
    (lambda: evaluate_sampled(SPEC, INPUTS, 0), ValueError, "m"),
    (lambda: evaluate_sampled(SPEC, INPUTS, 10**13), ValueError, "m"),
    (lambda: sample_params(SPEC, 10**12), ValueError, "m"),
]


@pytest.mark.parametrize(("call", "error", "name"), BAD_CALLS)
def test_bad_input_raises_a_clear_exception(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize("where", [0, 2**21 - 1, 2**21, -1])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_bad_value_is_found_in_any_piece_of_the_finiteness_check(where, bad):
    # the check reads 2^21 entries at a time: a bad value on either side of a piece's edge, or last
    params = np.zeros((2**21 // SPEC.total_params + 2, SPEC.total_params))
    params.reshape(-1)[where] = bad
    with pytest.raises(ValueError, match=r"^params: contains 1 NaN or infinite"):
        evaluate(SPEC, params, INPUTS)


def test_too_large_is_also_a_memory_error():
    with pytest.raises(MemoryError, match="GiB"):
        evaluate_sampled(SPEC, INPUTS, 10**13)


def test_a_request_at_99_percent_of_available_memory_is_refused_up_front():
    # the check compared with total RAM, so 0.99 x RAM passed and the kernel killed the process;
    # it now leaves headroom below the memory available now
    from moecover import TooLargeError, inputs
    from moecover._checks import available_memory_bytes

    available = available_memory_bytes()
    m = int(0.99 * available) // (8 * SPEC.total_params)
    with pytest.raises(TooLargeError, match="^m: .*available now"):
        sample_params(SPEC, m, rng=0)
    per_pair = 8 * SPEC.output_dim + 4 * SPEC.layers * SPEC.seq_len
    with pytest.raises(TooLargeError, match="^m: "):
        evaluate_sampled(SPEC, INPUTS, int(0.99 * available) // (len(INPUTS) * per_pair), rng=0)
    with pytest.raises(TooLargeError, match="^n: "):
        inputs.box(int(0.99 * available) // (3 * 8 * 2), d_model=2, rng=0)
    # the long calls that hold more than their arguments: each refuses its peak by name
    from moecover import functional_dimension, jacobian, theory

    rows = int(0.99 * available) // (len(INPUTS) * SPEC.output_dim * 8 * SPEC.total_params)
    theta = np.broadcast_to(sample_params(SPEC, 1, rng=0), (rows, SPEC.total_params))  # a view: no memory
    with pytest.raises(TooLargeError, match="^params: "):
        jacobian(SPEC, theta, INPUTS)
    with pytest.raises(TooLargeError, match="^samples: "):
        functional_dimension(SPEC, INPUTS, samples=int(0.99 * available) // (8 * len(INPUTS)), rng=0)
    with pytest.raises(TooLargeError, match="^samples: "):
        theory.estimate_lipschitz(SPEC, INPUTS, samples=int(0.99 * available) // (6 * 8 * SPEC.total_params), rng=0)
    from moecover import routing

    one_layer = MoESpec(experts=3, top_k=1, d_model=4, expert_hidden=2)
    with pytest.raises(TooLargeError, match="^max_patterns: "):
        routing.exact_patterns(one_layer, INPUTS[:4, :1], max_patterns=int(0.99 * available) // (4 * 4), return_patterns=True)
    # well inside the limit, the same calls run
    assert sample_params(SPEC, 1000, rng=0).shape == (1000, SPEC.total_params)


@pytest.mark.parametrize("huge", [2**64, 10**400])
def test_integers_past_64_bits_name_their_argument(huge):
    # once an OverflowError from the conversion into the core
    with pytest.raises(ValueError, match="^m: must be <="):
        evaluate_sampled(SPEC, INPUTS, huge, rng=0)
    with pytest.raises(ValueError, match="^start: must be <="):
        sample_params(SPEC, 2, rng=0, start=huge)


def test_a_huge_broadcast_view_is_a_too_large_error_before_any_copy():
    # once NumPy's MemoryError from the contiguous copy
    from moecover import TooLargeError

    view = np.broadcast_to(INPUTS[:1], (10**12,) + INPUTS.shape[1:])
    with pytest.raises(TooLargeError, match="^inputs: a contiguous float64 copy"):
        evaluate(SPEC, sample_params(SPEC, 1, rng=0)[0], view)


def test_results_with_extended_precision_numbers_serialise():
    # to_dict once recursed forever on a longdouble
    from moecover._serial import to_plain

    assert to_plain({"x": np.longdouble(1.5), "y": [np.float16(0.5)]}) == {"x": 1.5, "y": [0.5]}

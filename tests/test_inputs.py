"""moecover.inputs: shapes, seeds, and the geometry each manifold must have."""

import numpy as np
import pytest

from moecover import inputs


def test_box_full_and_embedded():
    x = inputs.box(500, seq_len=2, d_model=3, rng=0)
    assert x.shape == (500, 2, 3) and x.intrinsic_dim == 3 and x.seed == 0
    assert np.abs(x).max() <= 1.0
    embedded = inputs.box(400, d_model=6, dim=2, rng=1)
    assert embedded.intrinsic_dim == 2
    singular = np.linalg.svd(embedded.reshape(-1, 6), compute_uv=False)
    assert singular[2] < 1e-10 * singular[0]  # the tokens span a 2-plane


@pytest.mark.parametrize(("d_model", "dim"), [(3, None), (5, 2), (2, 1)])
def test_sphere_points_have_unit_norm(d_model, dim):
    x = inputs.sphere(300, d_model=d_model, dim=dim, rng=2)
    np.testing.assert_allclose(np.linalg.norm(x.reshape(-1, d_model), axis=1), 1.0, rtol=1e-12)
    assert x.intrinsic_dim == (d_model - 1 if dim is None else dim)


def test_torus_is_a_product_of_unit_circles():
    x = inputs.torus(300, d_model=4, rng=3).reshape(-1, 4)
    np.testing.assert_allclose(np.linalg.norm(x[:, :2], axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(x[:, 2:], axis=1), 1.0, rtol=1e-12)
    wide = inputs.torus(300, d_model=7, rng=3).reshape(-1, 7)
    np.testing.assert_allclose(np.linalg.norm(wide, axis=1), np.sqrt(2), rtol=1e-12)  # isometry keeps norms
    assert inputs.torus(3, d_model=4, rng=0).intrinsic_dim == 2


def test_swiss_roll_lies_in_a_three_dimensional_subspace():
    x = inputs.swiss_roll(400, d_model=5, rng=4).reshape(-1, 5)
    singular = np.linalg.svd(x, compute_uv=False)
    assert singular[3] < 1e-10 * singular[0]
    assert np.abs(inputs.swiss_roll(400, rng=4)).max() <= 1.0


def test_grid_is_evenly_spaced():
    x = inputs.grid(5, seq_len=2, d_model=3)
    np.testing.assert_array_equal(x[:, 0, 0], [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(x[:, 1, 0], x[:, 0, 0])
    assert (x[:, :, 1:] == 0).all() and x.intrinsic_dim == 1


def test_same_seed_same_points_and_plain_arrays_in_numpy():
    a, b = inputs.sphere(50, rng=9), inputs.sphere(50, rng=9)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, inputs.sphere(50, rng=10))
    assert type(np.asarray(a)) is np.ndarray


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: inputs.box(0), "n"),
        (lambda: inputs.box(5, d_model=2, dim=3), "dim"),
        (lambda: inputs.sphere(5, d_model=1), "dim"),
        (lambda: inputs.torus(5, d_model=3), "d_model"),
        (lambda: inputs.swiss_roll(5, d_model=2), "d_model"),
        (lambda: inputs.grid(5, low=1.0, high=0.0), "low"),
    ],
)
def test_bad_sizes_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize("sampler", ["box", "sphere", "torus", "swiss_roll", "grid"])
def test_sizes_beyond_memory_are_refused_before_any_work(sampler):
    from moecover import TooLargeError

    with pytest.raises(TooLargeError, match=r"^n: .* GiB"):
        getattr(inputs, sampler)(10**13)


@pytest.mark.parametrize(("low", "high", "name"), [(-np.inf, np.inf, "low"), (0.0, np.nan, "high"), (True, 2.0, "low")])
def test_grid_bounds_must_be_finite_numbers(low, high, name):
    # low = -inf, high = inf once returned NaN inputs
    with pytest.raises(ValueError, match=f"^{name}:"):
        inputs.grid(5, low=low, high=high)


def test_a_size_too_large_for_memory_is_blamed_on_the_size_that_makes_it():
    from moecover import TooLargeError

    with pytest.raises(TooLargeError, match="^seq_len: "):
        inputs.box(5, seq_len=2**31)
    with pytest.raises(TooLargeError, match="^n: "):
        inputs.box(2**33, seq_len=2)
    with pytest.raises(TooLargeError, match="^d_model: "):
        inputs.sphere(3, d_model=2**34)

"""moecover.jacobian against JAX autodiff of an independent JAX model (tests/jax_model.py), on
every option combination the NumPy reference tests cover, to 1e-10."""

import itertools

import numpy as np
import pytest

import moecover

jax = pytest.importorskip("jax")
from jax_model import outputs  # noqa: E402

OPTIONS = [
    dict(heads=heads, block=block, gate=gate, expert=expert, readout=readout)
    for heads, block, gate, (expert, readout) in itertools.product(
        [0, 1, 2], ["sequential", "parallel"], ["renormalized_softmax", "full_softmax", "uniform"],
        [("mlp", "scalar"), ("linear", "token0"), ("constant", "all"), ("mlp", "all")],
    )
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_the_jacobian_equals_jax_autodiff(options):
    case = OPTIONS.index(options)
    spec = moecover.MoESpec(layers=1 + case % 2, experts=4, top_k=1 + case % 3, d_model=4, seq_len=2,
                            expert_hidden=3, **options)
    theta = moecover.sample_params(spec, 1, rng=case)[0]
    x = np.random.default_rng(case).uniform(-1, 1, (3, spec.seq_len, spec.d_model))
    found = moecover.jacobian(spec, theta, x)
    assert not found.on_boundary
    np.testing.assert_allclose(found.values.ravel(), np.asarray(outputs(spec, theta, x)), rtol=0, atol=1e-12)
    reference = np.asarray(jax.jacrev(lambda t: outputs(spec, t, x))(theta))
    np.testing.assert_allclose(found.matrix, reference, rtol=0, atol=1e-10 * max(1.0, np.abs(reference).max()))

"""moecover.jacobian against JAX autodiff of an independent JAX model (tests/jax_model.py), on
every option combination the NumPy reference tests cover, to 1e-10."""

import numpy as np
import pytest

import moecover

jax = pytest.importorskip("jax")
from jax_model import outputs  # noqa: E402
from reference import OPTIONS, option_case  # noqa: E402


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_the_jacobian_equals_jax_autodiff(options):
    _, spec, theta, x = option_case(options)
    x = x[:3]  # three inputs: the JAX Jacobian is slow
    found = moecover.jacobian(spec, theta, x)
    assert not found.on_boundary
    np.testing.assert_allclose(found.values.ravel(), np.asarray(outputs(spec, theta, x)), rtol=0, atol=1e-12)
    reference = np.asarray(jax.jacrev(lambda t: outputs(spec, t, x))(theta))
    np.testing.assert_allclose(found.matrix, reference, rtol=0, atol=1e-10 * max(1.0, np.abs(reference).max()))

"""jdeconv._objective: the quadratic objective, the optimality measure and the Lipschitz bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jdeconv import _priors
from jdeconv._objective import Objective, lipschitz as _lipschitz, optimality
from jdeconv._solvers.exact import solve_qp

lipschitz = jax.jit(_lipschitz)  # one program per size (eager loops re-trace every call)


def rand_psd(rng, n, cond):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    d = np.logspace(0, -np.log10(cond), n)
    g = (q * d) @ q.T
    return 0.5 * (g + g.T)


def simplex_prox(v):
    mask = jnp.ones(v.shape, bool)
    return _priors.project_flags(v, mask, jnp.asarray(True), jnp.asarray(True))


@jax.jit
def simplex_optimality(h, G, b, L):
    return optimality(h, G @ h - b, simplex_prox, L, jnp.max(jnp.abs(b)))


def test_value_and_gradient():
    rng = np.random.default_rng(0)
    G, b, h = rand_psd(rng, 6, 1e2), rng.standard_normal(6), rng.standard_normal(6)
    obj = Objective(jnp.asarray(G), jnp.asarray(b), jnp.asarray(0.75), jnp.asarray(0.1))
    g = obj.grad(jnp.asarray(h))
    np.testing.assert_allclose(g, G @ h - b, atol=1e-12)
    expected = 0.5 * h @ G @ h - b @ h + 0.75 + 0.1 * np.abs(h).sum()
    assert float(obj.value_from_grad(jnp.asarray(h), g)) == pytest.approx(expected, rel=1e-12)


def test_optimality_is_zero_at_the_optimum_and_scale_free():
    rng = np.random.default_rng(1)
    n = 9
    G = rand_psd(rng, n, 1e3)
    b = G @ np.abs(rng.standard_normal(n)) + 0.1 * rng.standard_normal(n)
    res = solve_qp(G, b, prior="simplex")
    L = float(lipschitz(jnp.asarray(G)))

    def measure(h, G, b, L):
        return float(simplex_optimality(jnp.asarray(h), jnp.asarray(G), jnp.asarray(b), L))

    h = np.asarray(res.solution)
    assert measure(h, G, b, L) <= 1e-9
    # invariant to scaling the problem (G, b) -> (c G, c b)
    for c in (1e-6, 1e6):
        assert measure(h, c * G, c * b, c * L) == pytest.approx(measure(h, G, b, L), abs=1e-12)
    # and clearly positive away from the optimum
    h_bad = np.full(n, 1.0 / n)
    bad = measure(h_bad, G, b, L)
    assert bad > 1e-3
    assert measure(h_bad, 1e6 * G, 1e6 * b, 1e6 * L) == pytest.approx(bad, rel=1e-9)


def test_optimality_of_zero_is_finite():
    n = 4
    z = jnp.zeros((n,))
    val = optimality(z, z, lambda v: v, jnp.asarray(1.0), jnp.asarray(0.0))
    assert float(val) == 0.0


@settings(max_examples=15)
@given(n=st.sampled_from([1, 4, 9, 25]), seed=st.integers(0, 2**16),
       log_cond=st.sampled_from([0, 3, 6]), scale=st.sampled_from([1e-4, 1.0, 1e5]))
def test_lipschitz_is_an_upper_bound_close_to_the_largest_eigenvalue(n, seed, log_cond, scale):
    rng = np.random.default_rng(seed)
    G = scale * (rand_psd(rng, n, 10.0 ** log_cond) if n > 1 else np.eye(1))
    L = float(lipschitz(jnp.asarray(G)))
    lam = np.linalg.eigvalsh(G)[-1]
    gersh = np.abs(G).sum(axis=1).max()
    assert L >= lam * (1 - 1e-12)
    assert L <= gersh * (1 + 1e-12)
    # nonnegative matrices (normal matrices of nonnegative images): within 2 % of the top
    A = np.abs(rng.standard_normal((3 * n, n)))
    P = A.T @ A
    LP = float(lipschitz(jnp.asarray(P)))
    top = np.linalg.eigvalsh(P)[-1]
    assert top * (1 - 1e-12) <= LP <= 1.03 * top

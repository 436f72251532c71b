"""ShiftedGram: G + mu (a I + b DᵀD) without the n x n sum, as the exact solver reads it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdeconv import _regularizers, _shifted_gram
from jdeconv._shifted_gram import ShiftedGram
from jdeconv._solvers import exact

SHAPE, N = (6, 5), 30


def _gram(seed):
    A = np.random.default_rng(seed).standard_normal((60, N))
    return jnp.asarray(A.T @ A)


@pytest.mark.parametrize("a, b", [(1.0, 0.0), (0.0, 1.0), (0.5, 2.0)])
def test_blocks_products_and_dense_equal_the_formed_matrix(a, b):
    G, mu = _gram(0), 0.7
    M = np.asarray(G + mu * _regularizers.traced_quadratic(SHAPE, a, b, jnp.float64))
    S = ShiftedGram(G, mu, a, b, SHAPE)
    np.testing.assert_allclose(_shifted_gram.dense(S), M, rtol=1e-14, atol=1e-12)
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.standard_normal(N))
    np.testing.assert_allclose(_shifted_gram.matvec(S, h), M @ np.asarray(h), rtol=1e-12,
                               atol=1e-10)
    idx = jnp.asarray(np.sort(rng.choice(N, 12, replace=False)))
    np.testing.assert_allclose(_shifted_gram.block(S, idx),
                               M[np.ix_(np.asarray(idx), np.asarray(idx))], rtol=1e-14,
                               atol=1e-12)
    hs = h[idx]
    full = jnp.zeros(N).at[idx].set(hs)
    np.testing.assert_allclose(_shifted_gram.rows_matvec(S, hs, idx, full),
                               M @ np.asarray(full), rtol=1e-12, atol=1e-10)


def test_is_a_pytree_with_a_static_shape():
    S = ShiftedGram(_gram(0), jnp.asarray(0.5), 1.0, 2.0, SHAPE)
    leaves, tree = jax.tree_util.tree_flatten(S)
    assert len(leaves) == 4
    back = jax.tree_util.tree_unflatten(tree, leaves)
    assert back.kernel_shape == SHAPE and back.dtype == S.dtype and back.shape == (N, N)


@pytest.mark.parametrize("prior", ["simplex", "nonneg", "none"])
def test_exact_solver_on_the_unformed_sum_equals_the_formed_one(prior):
    # the same KKT point, with free-set blocks and with the full matrix
    G, mu = _gram(2), 3.0
    rng = np.random.default_rng(3)
    h_true = np.abs(rng.standard_normal(N)) * (rng.random(N) < 0.4)
    rhs = G @ jnp.asarray(h_true / h_true.sum()) + 0.05 * jnp.asarray(rng.standard_normal(N))
    M = G + mu * _regularizers.traced_quadratic(SHAPE, 0.1, 1.0, jnp.float64)
    S = ShiftedGram(G, mu, 0.1, 1.0, SHAPE)
    for blocks in ((), (16,)):
        ref = exact.solve_qp(M, rhs, prior=prior, block_sizes=blocks)
        got = exact.solve_qp(S, rhs, prior=prior, block_sizes=blocks, history=True)
        assert bool(ref.converged) and bool(got.converged)
        np.testing.assert_allclose(got.solution, ref.solution, atol=1e-10)
        np.testing.assert_array_equal(got.active_set, ref.active_set)
        hist = np.asarray(got.optimality_history)
        assert np.isfinite(hist[: int(got.iterations) + 1]).all()

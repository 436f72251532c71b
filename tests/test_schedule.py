"""Tests for jdeconv._schedule: the helpers change where buffers live, never values."""

import jax
import jax.numpy as jnp
import numpy as np

from jdeconv import _schedule


def _f(a, dep):
    return jnp.sum(_schedule.after(_schedule.materialize(a * 2.0), dep) ** 2) + jnp.sum(dep)


def test_values_and_derivatives_unchanged_under_jit_vmap_grad():
    a = jnp.arange(6.0).reshape(2, 3)
    dep = jnp.array([1.0, -2.0])
    want = float(jnp.sum((a * 2.0) ** 2) + jnp.sum(dep))
    assert float(_f(a, dep)) == want
    assert float(jax.jit(_f)(a, dep)) == want
    ga, gd = jax.jit(jax.grad(_f, argnums=(0, 1)))(a, dep)
    np.testing.assert_array_equal(ga, 8.0 * a)
    np.testing.assert_array_equal(gd, jnp.ones(2))
    batch = jax.vmap(_f)(jnp.stack([a, -a]), jnp.stack([dep, dep]))
    np.testing.assert_array_equal(batch, [want, want])


def test_nan_in_the_dependency_or_the_array_passes_through():
    # the condition tests the first entry for NaN; either branch gives the same values
    a = jnp.array([jnp.nan, 1.0])
    np.testing.assert_array_equal(jax.jit(_schedule.materialize)(a), a)
    np.testing.assert_array_equal(jax.jit(_schedule.after)(a, jnp.array([jnp.nan])), a)

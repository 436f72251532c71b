"""The estimation objective in normal-equation form, and its Lipschitz constant.

For a kernel ``h`` raveled to ``n = k l`` taps the objective is

    q(h) = ½ hᵀ G h − bᵀ h + c + λ₁ ||h||₁,     G = XᵀX + R,  b = Xᵀy,  c = ½||y||²

with ``R`` the quadratic regularisation. Every iteration of a first-order
solver costs one ``G h`` product, O(n²), independent of the image size.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class Objective(NamedTuple):
    """Quadratic objective (a pytree).

    Attributes:
      gram: (n, n) ``XᵀX + R``.
      rhs: (n,) ``Xᵀ y``.
      half_yy: scalar ``½ ||y||²``.
      l1: scalar absolute l1 weight (0 for none).
    """

    gram: jax.Array
    rhs: jax.Array
    half_yy: jax.Array
    l1: jax.Array

    def grad(self, h: jax.Array) -> jax.Array:
        """Gradient of the smooth part, ``G h − b``."""
        return jnp.dot(self.gram, h, precision=lax.Precision.HIGHEST) - self.rhs

    def value_from_grad(self, h: jax.Array, g: jax.Array) -> jax.Array:
        """``q(h)`` reusing ``g = G h − b`` (``½hᵀGh − bᵀh = ½hᵀ(g − b)``)."""
        return 0.5 * jnp.vdot(h, g - self.rhs) + self.half_yy + self.l1 * jnp.sum(jnp.abs(h))


def optimality(h: jax.Array, g: jax.Array, prox, lipschitz, bmax) -> jax.Array:
    """The scale-free optimality measure every solver stops on and reports.

    ``max|h − P(h − g/L)| / max(max|h|, max|b|/L, tiny)`` with ``P`` the prior's
    projection (and l1 prox) and ``g`` the gradient at ``h``: zero exactly at
    the constrained optimum, invariant to scaling the problem.

    Args:
      h: (n,) iterate.
      g: (n,) gradient of the smooth objective at ``h``.
      prox: the projection (prox with step 1/L) on flat kernels.
      lipschitz: scalar L (an upper bound of the largest eigenvalue of G).
      bmax: ``max|b|`` (``b = Xᵀy``), for the scale of the denominator.

    Returns:
      Scalar measure.
    """
    step = h - prox(h - g / lipschitz)
    denom = jnp.maximum(jnp.max(jnp.abs(h)), bmax / lipschitz)
    denom = jnp.maximum(denom, jnp.finfo(h.dtype).tiny)
    return jnp.max(jnp.abs(step)) / denom


def lipschitz(gram: jax.Array, iters: int = 60) -> jax.Array:
    """An upper bound on the largest eigenvalue of a PSD matrix ``gram``.

    Power iteration (from the all-ones vector, which for nonnegative images is
    close to the Perron vector) gives a lower estimate; it is enlarged by 2 %
    and capped by Gershgorin's bound (max absolute row sum), which is always
    an upper bound.

    Args:
      gram: (n, n) symmetric positive semidefinite.
      iters: power iterations.

    Returns:
      Scalar ``L`` with ``L >= λ_max(gram)`` in all but pathological cases.
    """
    n = gram.shape[0]
    v0 = jnp.ones((n,), gram.dtype) / jnp.sqrt(jnp.asarray(n, gram.dtype))

    def body(_, v):
        w = jnp.dot(gram, v, precision=lax.Precision.HIGHEST)
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(gram.dtype).tiny)

    v = lax.fori_loop(0, iters, body, v0)
    est = jnp.vdot(v, jnp.dot(gram, v, precision=lax.Precision.HIGHEST))
    gersh = jnp.max(jnp.sum(jnp.abs(gram), axis=1))
    return jnp.minimum(1.02 * est, gersh)

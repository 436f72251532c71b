"""FISTA: accelerated projected gradient with adaptive restart.

Beck & Teboulle's FISTA with O'Donoghue & Candès' gradient restart: the
momentum is reset whenever the step goes against the last move
(``<y − h⁺, h⁺ − h> > 0``), which restores linear convergence on strongly
convex (well-posed) problems. The gradient step itself is ``optax.sgd(1/L)``.

Example:
  >>> import jdeconv
  >>> x = jdeconv.data.noise_target((40, 40), seed=1)
  >>> h = jdeconv.data.gaussian_kernel(5, 0.6)
  >>> est = jdeconv.estimate_kernel(x, jdeconv.conv2d(x, h), 5, solver="fista",
  ...                               max_iters=3000)
  >>> est.solver, bool(est.converged)
  ('fista', True)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class FistaState(NamedTuple):
    """Extrapolated point ``y``, momentum parameter ``t`` and the sgd state."""

    y: jax.Array
    t: jax.Array
    sgd_state: optax.OptState


def make(lipschitz, *, restart: bool = True):
    """Returns ``(init, update)`` for FISTA with step ``1/lipschitz``.

    Args:
      lipschitz: L, the step is 1/L.
      restart: O'Donoghue–Candès gradient restart (``solver_options={"restart": False}``
        gives plain FISTA).
    """
    opt = optax.sgd(learning_rate=1.0 / lipschitz)

    def init(h0):
        return FistaState(h0, jnp.asarray(1.0, h0.dtype), opt.init(h0))

    def update(h, g, state, objective, prox):
        gy = objective.grad(state.y)
        updates, sgd_state = opt.update(gy, state.sgd_state, state.y)
        h_new = prox(optax.apply_updates(state.y, updates))
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * state.t ** 2))
        y_acc = h_new + ((state.t - 1.0) / t_new) * (h_new - h)
        if restart:
            bad = jnp.vdot(state.y - h_new, h_new - h) > 0
            y_new = jnp.where(bad, h_new, y_acc)
            t_new = jnp.where(bad, jnp.ones_like(t_new), t_new)
        else:
            y_new = y_acc
        return h_new, FistaState(y_new, t_new, sgd_state)

    return init, update

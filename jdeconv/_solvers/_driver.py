"""The loop shared by first-order solvers: step, measure, stop.

A first-order solver is a pair of pure functions (optax style), made by a
``make(lipschitz, **options)`` factory in its module:

* ``init(h0) -> state``
* ``update(h, g, state, objective, prox) -> (h_new, state)`` where ``g`` is the
  gradient at ``h`` and ``prox(v)`` applies the prior (and l1) with step 1/L.

:func:`run` iterates in a ``lax.while_loop`` until the optimality measure (:func:`jdeconv._objective.optimality`, the
one the exact solver uses too) is at most ``tol`` or ``max_iters`` is reached,
recording the objective after every iteration.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jdeconv import _objective, _progress
from jdeconv._solution import RESULTS


class SolverOutput(NamedTuple):
    """What every solver returns (flattened kernel and diagnostics)."""

    h: jax.Array
    iterations: jax.Array
    result: jax.Array
    optimality: jax.Array
    loss_history: jax.Array
    error_history: jax.Array


class _LoopState(NamedTuple):
    h: jax.Array
    g: jax.Array
    solver_state: Any
    it: jax.Array
    kkt: jax.Array
    history: jax.Array
    errors: jax.Array


def projected(opt: optax.GradientTransformation):
    """``(init, update)`` of an optax transformation followed by the projection.

    The projection is applied after ``optax.apply_updates``, as optax's own
    documentation does for projected methods.
    """

    def update(h, g, state, objective, prox):
        updates, state = opt.update(g, state, h)
        return prox(optax.apply_updates(h, updates)), state

    return opt.init, update


def relative_error(h, reference):
    """``||h − ref|| / ||ref||`` (NaN without a reference)."""
    if reference is None:
        return jnp.asarray(jnp.nan, h.dtype)
    return jnp.linalg.norm(h - reference) / jnp.linalg.norm(reference)


def run(init: Callable, update: Callable, objective, h0, prox, lipschitz, bmax, *,
        max_iters: int, tol, reference=None, progress: bool = False) -> SolverOutput:
    """Runs a first-order solver to convergence or ``max_iters``.

    Args:
      init, update: the solver's pure functions (see module docstring).
      objective: a :class:`jdeconv._objective.Objective`.
      h0: (n,) feasible starting point.
      prox: projection (and l1 prox) for step 1/L.
      lipschitz: scalar L.
      bmax: ``max|b|``, the scale of the optimality measure.
      max_iters: static iteration cap.
      tol: stopping tolerance on the gradient-mapping norm.
      reference: optional (n,) true kernel; its relative error is recorded
        after every iteration (for convergence studies).
      progress: static; report the iterations (:mod:`jdeconv._progress`).

    Returns:
      A :class:`SolverOutput`.
    """
    g0 = objective.grad(h0)
    history = jnp.full((max_iters + 1,), jnp.nan, h0.dtype)
    history = history.at[0].set(objective.value_from_grad(h0, g0))
    errors = jnp.full((max_iters + 1,), jnp.nan, h0.dtype).at[0].set(relative_error(h0, reference))
    state = _LoopState(h0, g0, init(h0), jnp.asarray(0, jnp.int32),
                       _objective.optimality(h0, g0, prox, lipschitz, bmax), history, errors)

    def cond(s):
        return (s.it < max_iters) & (s.kkt > tol) & jnp.isfinite(s.kkt)

    def body(s):
        h, solver_state = update(s.h, s.g, s.solver_state, objective, prox)
        g = objective.grad(h)
        kkt = _objective.optimality(h, g, prox, lipschitz, bmax)
        history = s.history.at[s.it + 1].set(objective.value_from_grad(h, g))
        errors = s.errors.at[s.it + 1].set(relative_error(h, reference))
        _progress.tick(progress, "iterations", s.it + 1, max_iters)
        return _LoopState(h, g, solver_state, s.it + 1, kkt, history, errors)

    s = lax.while_loop(cond, body, state)
    finite = jnp.isfinite(s.kkt) & jnp.all(jnp.isfinite(s.h))
    converged = finite & (s.kkt <= tol)
    return SolverOutput(s.h, s.it, RESULTS.where(converged, finite), s.kkt, s.history, s.errors)

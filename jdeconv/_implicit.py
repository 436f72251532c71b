"""Derivatives of the exact QP solution by implicit differentiation on the active face.

The exact solver (:func:`jdeconv._solvers.exact.solve_qp`) returns the minimiser of

    q(h) = 1/2 h^T G h - b^T h   subject to the prior on the support ``mask``

with an active-set method: a loop with data-dependent control flow, which JAX could
only differentiate by unrolling (slow, memory-hungry, and wrong at the switches of
the active set).  Here the loop runs once, without derivatives, and the derivatives
of the solution are those of its optimality conditions on the face it ends on.

Optimality on the face
----------------------
Let ``A`` be the final active set (taps outside the mask and taps held at the bound
``h_i = 0``) and ``F`` its complement, the free taps.  With ``e = 1`` when the prior
has the equality ``sum(h) = 1`` ("sum_to_one", "simplex") and ``e = 0`` otherwise,
the solution and its multiplier ``mu`` satisfy

    G_FF h_F - b_F = mu 1_F,     e * (1^T h_F - 1) = 0,     h_A = 0.

Holding ``A`` fixed (the active set is locally constant when strict complementarity
holds: every active tap has a strictly positive bound multiplier) and
differentiating this linear system gives, for tangents ``(dG, db)``,

    dh_F = K_e (db_F - dG_F. h),    dh_A = 0,
    K_e  = K - e * K 1 1^T K / (1^T K 1),    K = G_FF^-1,

i.e. ``K_e`` is the inverse of ``G_FF`` restricted to the tangent space
``1^T dh_F = 0`` of the equality (a symmetric matrix, ``K_e 1 = 0`` when ``e = 1``).
Only the symmetric part ``(dG + dG^T) / 2`` enters (the objective depends on
``G`` through its symmetric part), so reverse-mode cotangents of ``gram`` are
symmetric: ``gram_bar = -sym(K_e h_bar h^T)`` and ``rhs_bar = K_e h_bar`` (on F).

Implementation
--------------
:func:`solve_qp_differentiable` calls the solver on ``stop_gradient`` inputs and
passes its solution through :func:`face_solution`, a ``jax.custom_jvp`` whose JVP
is the formula above, evaluated with one masked Cholesky factorisation of
``G_FF`` (static shapes: ``where(F_i & F_j, G, 0) + diag(~F)``; no boolean
indexing) and one step of iterative refinement.  The JVP is linear in the
tangents and built from transposable primitives, so JAX derives reverse mode by
transposition: ``jax.jvp``, ``jax.grad``, ``jax.vjp``, ``jax.jacfwd``/``jacrev``,
``jax.jit`` and ``jax.vmap`` all work.  Inside the JVP the primal output is
itself obtained from :func:`face_solution`, so higher derivatives (``jax.hessian``)
are also correct on the face.

Where the derivative is not defined
-----------------------------------
At a *weakly active* tap (``h_i = 0`` with a zero bound multiplier) the solution
is only one-sidedly differentiable; such taps are counted as active (the solver
reports every exact zero as active), which gives the derivative of the side on
which the tap stays at zero.  A non-finite solution (singular ``G_FF``) gives
non-finite derivatives.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jdeconv import _names, _validation
from jdeconv._solvers import exact

__all__ = ["face_inverse", "face_solve", "face_solution", "solve_qp_differentiable"]

# full float32 products on accelerators too (no TF32 / bfloat16 passes)
_HI = lax.Precision.HIGHEST


def _masked_cholesky(gram, free):
    """Lower Cholesky factor of ``where(F_i & F_j, G, 0) + diag(~F)`` (the free block)."""
    fz = free.astype(gram.dtype)
    gm = jnp.where(free[:, None] & free[None, :], gram, 0) + jnp.diag(1 - fz)
    return lax.linalg.cholesky(gm, symmetrize_input=True)


def _face_solve_once(chol, free, eq, r, c):
    """One solve of ``G_FF z - nu 1_F = r_F``, ``e (1^T z_F) = e c`` with the factor."""
    fz = free.astype(r.dtype)
    solve = partial(jax.scipy.linalg.cho_solve, (chol, True))
    x = solve(r * fz) * fz
    y = solve(fz) * fz
    s = jnp.dot(fz, y, precision=_HI)  # 1^T G_FF^-1 1 > 0 (guarded for an empty face)
    s = jnp.where(s > 0, s, 1)
    nu = jnp.where(eq, (c - jnp.dot(fz, x, precision=_HI)) / s, 0)
    return x + nu * y, nu


@jax.jit
def face_solve(gram, free, r, *, eq):
    """Solves the KKT system of the free face with zero equality right-hand side.

    Returns ``z = K_e r`` (see the module docstring): ``z_A = 0`` and

        G_FF z_F - nu 1_F = r_F,     e * 1^T z_F = 0.

    One masked Cholesky factorisation and one step of iterative refinement.  The
    map ``r -> z`` is linear and transposable (usable inside JVP rules).  Jitted; ``eq``
    may be a Python or a traced bool.

    Args:
      gram: (n, n) symmetric matrix, positive definite on the free block.
      free: (n,) bool, the free taps ``F``.
      r: (n,) right-hand side (entries outside ``F`` are ignored).
      eq: whether the equality ``sum(h) = 1`` holds (bool or traced bool).

    Returns:
      (n,) ``z``, zero outside ``F``.

    Example:
      >>> import jax.numpy as jnp
      >>> G = jnp.array([[2.0, 0.0], [0.0, 4.0]])
      >>> z = face_solve(G, jnp.array([True, True]), jnp.array([1.0, 1.0]), eq=False)
      >>> [round(float(v), 6) for v in z]
      [0.5, 0.25]
      >>> z = face_solve(G, jnp.array([True, True]), jnp.array([1.0, 0.0]), eq=True)
      >>> [round(float(v), 6) for v in z]  # sum(z) = 0 on the tangent space
      [0.166667, -0.166667]
    """
    eq = jnp.asarray(eq, bool)
    chol = _masked_cholesky(gram, free)
    fz = free.astype(r.dtype)
    zero = jnp.zeros((), r.dtype)
    z, nu = _face_solve_once(chol, free, eq, r, zero)
    # iterative refinement of the whole KKT system (residuals of both equations)
    rr = fz * (r - jnp.matmul(gram, z, precision=_HI) + nu)
    rc = jnp.where(eq, -jnp.dot(fz, z, precision=_HI), 0)
    dz, _ = _face_solve_once(chol, free, eq, rr, rc)
    return (z + dz) * fz


@jax.jit
def face_inverse(gram, free, *, eq):
    """The matrix ``K_e`` (zero outside the free block): the inverse of ``G_FF`` on the face.

    ``K_e = K - e K 1 1^T K / (1^T K 1)`` with ``K = G_FF^-1`` (module docstring):
    the linear map from a change of the right-hand side to the change of the
    solution.  Symmetric; ``K_e 1 = 0`` when ``eq``.

    Args:
      gram: (n, n) symmetric matrix, positive definite on the free block.
      free: (n,) bool, the free taps.
      eq: whether the equality ``sum(h) = 1`` holds.

    Returns:
      (n, n) ``K_e``.

    Example:
      >>> import jax.numpy as jnp
      >>> K = face_inverse(jnp.eye(3), jnp.array([True, True, False]), eq=True)
      >>> [[round(float(v), 6) for v in row] for row in K]
      [[0.5, -0.5, 0.0], [-0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]
    """
    n = gram.shape[-1]
    eye = jnp.eye(n, dtype=gram.dtype)
    cols = jax.vmap(lambda r: face_solve(gram, free, r, eq=eq))(eye)
    return 0.5 * (cols + cols.T)


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def face_solution(gram, rhs, solution, free, eq):
    """Passes ``solution`` through, with the derivative of the face's KKT system.

    ``solution`` must be the minimiser for ``(gram, rhs)`` with free set ``free``
    (e.g. ``exact.solve_qp(...)`` computed on ``stop_gradient`` inputs); the value
    returned is ``solution`` and its derivative with respect to ``gram`` and
    ``rhs`` is ``dh = K_e (db - sym(dG) h)`` (module docstring).  The tangent of
    ``solution`` itself is ignored.

    Args:
      gram: (n, n) normal matrix (regularisation included).
      rhs: (n,) right-hand side.
      solution: (n,) minimiser, zero outside ``free``.
      free: (n,) bool, the free taps (not at a bound, inside the mask).
      eq: Python bool, whether the prior has the equality ``sum(h) = 1``.

    Returns:
      (n,) ``solution``.
    """
    del gram, rhs, free, eq
    return solution


@face_solution.defjvp
def _face_solution_jvp(eq, primals, tangents):
    gram, rhs, solution, free = primals
    dgram, drhs, _, _ = tangents
    # the primal through face_solution itself: higher derivatives see dh/dG
    h = face_solution(gram, rhs, solution, free, eq)
    dsym = 0.5 * (dgram + dgram.T)
    r = drhs - jnp.matmul(dsym, h, precision=_HI)
    return h, face_solve(gram, free, r, eq=eq)


def solve_qp_differentiable(
    gram,
    rhs,
    *,
    prior: str = "simplex",
    mask=None,
    max_iters: int = 100,
    tol=None,
    **options,
) -> exact.QPResult:
    """:func:`exact.solve_qp` with derivatives by implicit differentiation on the active face.

    The forward pass is the exact active-set solve (no derivatives traced through
    its loop); the solution's derivatives with respect to ``gram`` and ``rhs`` are
    those of the KKT conditions on the final face (module docstring), so gradients
    flow to whatever built ``gram`` and ``rhs``: the images through
    :func:`jdeconv.normal_equations`, the regularisation weights through
    ``gram = G0 + w * s * R``.  Works under ``jax.jit``, ``jax.vmap``, ``jax.grad``,
    ``jax.jvp``, ``jax.vjp`` (float32 and float64).

    Args:
      gram: (n, n) symmetric normal matrix, positive definite on the support.
      rhs: (n,) right-hand side.
      prior: "simplex" | "nonneg" | "sum_to_one" | "none" (Python value).
      mask: optional (n,) bool support; taps outside are fixed to 0.
      max_iters: iteration budget of the active-set method (Python int).
      tol: solver tolerance (default :func:`exact.default_tol`).
      **options: any other keyword of :func:`exact.solve_qp` (``max_fallback_iters``,
        ``warm_start``, ``block_sizes``, ``history``), passed through; they change
        how the solution is found, not the derivative.

    Returns:
      ``QPResult(solution, iterations, converged, kkt_residual, active_set)``;
      only ``solution`` carries derivatives (the other fields are piecewise
      constant, or, for ``kkt_residual``, a diagnostic).

    Notes:
      On the free set ``F = ~active_set`` with ``e = 1`` for the priors with
      ``sum(h) = 1``: ``dh_F = K_e (db_F - sym(dG)_F. h)``, ``dh_A = 0``,
      ``K_e = K - e K 1 1^T K / (1^T K 1)``, ``K = G_FF^-1``.  The active set is
      treated as locally constant (exact under strict complementarity).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> G = jnp.array([[2.0, 0.5], [0.5, 1.0]])
      >>> def first_tap(b):
      ...     return solve_qp_differentiable(G, b, prior="simplex").solution[0]
      >>> b = jnp.array([1.0, 1.0])
      >>> round(float(first_tap(b)), 6)
      0.25
      >>> [round(float(v), 6) for v in jax.grad(first_tap)(b)]
      [0.5, -0.5]
    """
    prior = _validation.check_prior(prior)
    max_iters = _validation.check_int(max_iters, "max_iters", minimum=1,
                                      maximum=_validation.MAX_ITERS, example=100)
    eq = prior in _names.EQUALITY_PRIORS
    dt = jnp.result_type(gram, rhs, jnp.float32)
    gram = jnp.asarray(gram, dt)
    rhs = jnp.asarray(rhs, dt)
    res = exact.solve_qp(
        lax.stop_gradient(gram), lax.stop_gradient(rhs),
        prior=prior, mask=mask, max_iters=max_iters, tol=tol, **options,
    )
    free = ~res.active_set
    h = face_solution(gram, rhs, res.solution, free, eq)
    return res._replace(solution=h)

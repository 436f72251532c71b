"""Exact solver for the small dense kernel-estimation QP.

Problem
-------
    minimise   q(h) = 1/2 h^T G h - b^T h
    subject to h_i = 0 for i outside ``mask``  and the ``prior``:

    ``"none"``        no further constraint,
    ``"sum_to_one"``  sum(h) = 1,
    ``"nonneg"``      h >= 0,
    ``"simplex"``     h >= 0 and sum(h) = 1.

``G`` (n x n) must be symmetric (it is not re-symmetrised: the Cholesky
factorisation reads one triangle, matrix-vector products use all of G) and
positive definite on the support (typically badly conditioned: kappa ~
1e4..1e9).  Everything is pure JAX and jit-compiled, with static shapes and
only bounded ``lax.while_loop`` s, so ``jax.vmap`` over a batch of problems
works (batch members that finish early are frozen while the others iterate).  ``prior`` and the iteration budgets
are Python values; they enter the compiled program as unbatched flags /
scalars, so the four priors and all budgets share one compiled program per
shape and dtype.

Algorithm
---------
* Every linear-algebra step is an *equality-constrained QP on a free set*
  ``F`` (entries outside ``F`` fixed to 0, optionally ``sum(h_F) = 1``),
  solved with a masked Cholesky factorisation of
  ``G_m = where(F_i & F_j, G, 0) + diag(~F)`` (static shape; the fixed block
  decouples exactly), followed by two steps of iterative refinement of the
  full KKT system (residual ``b + mu 1 - G h`` and ``1 - sum h`` re-solved
  with the existing factor, O(n^2) each).  With the equality constraint the
  two solves ``x = G_FF^-1 b_F`` and ``y = G_FF^-1 1_F`` give the Lagrange
  multiplier ``mu = (1 - 1^T x) / (1^T y)`` and ``h = x + mu y``.
* ``"none"`` / ``"sum_to_one"``: one such solve (closed form).
* ``"nonneg"`` / ``"simplex"``: primal-dual active set method (PDAS,
  Hintermueller-Ito-Kunisch = semismooth Newton on the complementarity
  function).  Bound multipliers are ``lam = G h - b - mu 1``; the next active
  set is ``{i free: h_i < -tau_h} U {i active: lam_i >= -tau_lam}``.  It stops
  when the set no longer changes (then the iterate satisfies the KKT
  conditions to the tolerances).  The tolerances
  ``tau_h = tol * max|h|`` and ``tau_lam = tol * (Lg max|h| + max|b|)`` act
  as hysteresis so nearly-degenerate taps (h ~ 1e-11 with lam ~ 0, e.g.
  Gaussian tails, or the exact zeros of a noise-free motion blur) do not
  flip-flop because of rounding.
* Fallback: PDAS is not globally convergent for non-M-matrices and can cycle.
  If it has not converged after ``max_iters`` iterations, or the number of
  KKT violations has not improved for ``_STALL`` consecutive iterations, a
  primal active-set method (Lawson-Hanson for NNLS, generalised to the
  equality constraint: feasible iterates, ratio-test line search that adds
  one blocking bound, drop of the most negative multiplier at a face
  optimum) takes over, warm-started at the projection onto the feasible set
  of the PDAS iterate with the fewest violations.  Its objective decreases
  monotonically so it terminates finitely; it has its own bounded budget
  ``max_fallback_iters`` (default ``2 n + max_iters``).
* Start: from the full support (every tap free), or from ``initial_active``.
  The engine passes, from 400 taps with a bounded prior on the plain model,
  the zeros of a frequency-domain estimate
  (:func:`jdeconv._solvers.fourier.active_set_guess`): the first iteration
  then factors its support (100-650 of 961 taps at 31x31) instead of the
  whole matrix. The answer does not depend on the start beyond the
  solver's precision (see Precision below): both are the minimiser, unique
  for a positive definite G, to the tolerance. From the two starts, float64
  solutions agreed to 2e-10 relative over 90 camera-size problems; a
  float32 one at 21x21 (kappa ~1e5) to 0.8 % of its largest tap.
* Polish: entries with ``-tau_h <= h_i < 0`` are clipped to 0 and, for the
  simplex, ``h`` is divided by its sum (a relative change of order ``tol``),
  so the returned solution is exactly feasible (``h >= 0``, zero outside the
  mask, ``|sum h - 1|`` at rounding level).

KKT residual (reported, and used for the ``converged`` flag)
-----------------------------------------------------------
    kkt_residual = || h - P(h - (G h - b) / Lg) ||_inf / max(||h||_inf, ||b_S||_inf / Lg, tiny)

where ``P`` is the Euclidean projection onto the feasible set of the prior
(restricted to the mask; ``optax.projections``) and ``Lg`` is the Gershgorin
bound ``max_i sum_j |G_ij|`` over the support (``>= ||G_SS||_2``).  It is
zero exactly at the optimum, invariant to scaling (G, b) -> (cG, cb) and to
scaling b, and is a backward-error-type measure (small even when the forward
error is limited by the conditioning).  ``converged`` is true iff the method
terminated (set stable / face optimum), the result is finite and
``kkt_residual <= tol`` (the internal hysteresis tolerances use ``tol / 10``).
The same measure (:func:`jdeconv._objective.optimality`) decides convergence
of the first-order solvers and is what ``KernelEstimate.optimality`` reports.

Precision
---------
``tol`` defaults to 1e-9 in float64 and 1e-4 in float32 (never below
``40 sqrt(n) eps``).  The forward error of the solution is ~ kappa(G_FF) * eps
(eps = 2.2e-16 / 1.2e-7); measured kernel recovery on noise-free
convolution Gram matrices (relative 2-norm error):

    kappa      2.8e3    1.4e4    1.5e5    2.5e6    5e6      4.7e9
    float64    1e-13    1e-12    1e-11    1e-10    2e-10    2e-7
    float32    1.5e-5   7e-5     ~1e-3    1e-2     1e-2     Cholesky fails

i.e. float32 is only useful for kappa <~ 1e4 (<= 1e-4), and once the float32
Cholesky breaks down (kappa >~ 1e7..1e9) the result is non-finite and
``converged=False``.  Nothing is added to G silently: a singular / indefinite
G (e.g. a constant image) gives a non-finite solution and ``converged=False``.
"""

from __future__ import annotations

import functools
import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jdeconv import _names, _objective, _priors, _shifted_gram, _validation

_HI = lax.Precision.HIGHEST  # full float32 products on accelerators (no TF32 passes)

__all__ = ["QPResult", "default_tol", "solve_qp"]

PRIORS = _names.PRIORS

# PDAS gives up (and hands over to the primal active-set fallback) once the
# number of KKT violations has not improved for this many iterations.
_STALL = 8
_REFINE_STEPS = 2


class QPResult(NamedTuple):
    """Result of :func:`solve_qp`.

    solution:      (n,) minimiser (exactly 0 outside the mask / on active bounds).
    iterations:    int32, number of Cholesky factorisations used (PDAS + fallback;
                   1 for "none" / "sum_to_one").
    converged:     bool, method terminated, result finite, kkt_residual <= 10 * tol.
    kkt_residual:  scale-free KKT violation (see module docstring).
    active_set:    (n,) bool, entries fixed at zero (outside mask or active bound).
    """

    solution: jax.Array
    iterations: jax.Array
    converged: jax.Array
    kkt_residual: jax.Array
    active_set: jax.Array
    objective_history: jax.Array
    optimality_history: jax.Array


def default_tol(dtype, n: int = 1) -> float:
    """Default tolerance on the optimality measure: 1e-9 (float64), 1e-4 (float32).

    Never below ``40 sqrt(n) eps`` (ten times the rounding level of the
    multipliers), which only matters for float32 with n >~ 1700.
    """
    base = 1e-9 if jnp.finfo(dtype).bits >= 64 else 1e-4
    return max(base, 40.0 * float(n) ** 0.5 * float(jnp.finfo(dtype).eps))


# --------------------------------------------------------------------------
# Building blocks.  The prior enters as two traced booleans (``eq``: sum = 1,
# ``ineq``: h >= 0) so all four priors share one compiled program per
# shape / dtype.
# --------------------------------------------------------------------------


def _masked_cholesky(G, free):
    """Lower Cholesky factor of G on ``free`` (identity elsewhere); NaNs if not PD."""
    fz = free.astype(G.dtype)
    # G is symmetric, so G_m may be assembled from G^T: LAPACK wants a
    # column-major operand, which for G^T is a free bitcast of the row-major
    # G (assembling from G costs a full transposing copy per iteration).
    # potrf reads one triangle only, hence no symmetrisation either.
    Gm = jnp.where(free[:, None] & free[None, :], G.T, 0) + jnp.diag(1 - fz)
    return lax.linalg.cholesky(Gm, symmetrize_input=False)


def _eqp(G, b, free, eq, first=None):
    """Minimise q on {h_i = 0, i not in free} (and sum h = 1 if ``eq``).

    Returns (h, mu, chol) with G_FF h_F - b_F = mu 1_F (mu = 0 without equality)
    and ``chol`` the factor of :func:`_masked_cholesky`.
    One Cholesky factorisation, then 1 + _REFINE_STEPS solves of the KKT
    system (the first, from h = 0, is the plain solve; the others are
    iterative refinement with the same factor). ``first``, if given, is
    ``(use, chol)``: where ``use`` is true, ``chol`` is this free set's factor.
    """
    dt = G.dtype
    fz = free.astype(dt)
    if first is None:
        chol = _masked_cholesky(G, free)
    else:
        use, chol0 = first
        chol = lax.cond(use, lambda: chol0, lambda: _masked_cholesky(G, free))
    bf = b * fz

    def solve(r):  # one right-hand side at a time (a 2-column trsm is slower on CPU)
        return jax.scipy.linalg.cho_solve((chol, True), r)

    # y = G_FF^-1 1_F, only needed with the equality.  (Computed always: a
    # lax.cond here makes XLA pick a row-major layout for the factor and
    # costs two transposing n x n copies per call, more than this solve.)
    y = solve(fz)
    s = jnp.where(eq, jnp.dot(fz, y), 1)  # 1^T G_FF^-1 1 > 0

    def step(_, carry):
        h, mu = carry
        r = fz * (bf + mu - G @ h)  # KKT residual (h is zero off the free set)
        dx = solve(r)
        dmu = jnp.where(eq, (1 - jnp.dot(fz, h) - jnp.dot(fz, dx)) / s, 0)
        return h + dx + dmu * y, mu + dmu

    h, mu = lax.fori_loop(
        0, 1 + _REFINE_STEPS, step, (jnp.zeros_like(b), jnp.zeros((), dt))
    )
    return h * fz, mu, chol


def _eqp_block(G, b, free, eq, size: int, project=None, stat=None):
    """:func:`_eqp` on the free taps gathered into a ``(size, size)`` block (``|free| <= size``).

    The factorisation then costs ``size³/3`` instead of ``n³/3``: at camera
    kernel sizes the optimum has 60–200 free taps out of ~1000.  Returns
    ``(h, mu, G h, p, G p)`` with ``p = project(h)``: the products come from
    the ``size`` gathered rows of ``G`` (``h`` and ``p`` vanish off the block;
    G symmetric), a fraction ``size / n`` of a full matrix-vector product.
    ``stat``: see :func:`_eqp_any` (its value is the sixth output).
    """
    n = G.shape[-1]
    idx = jnp.nonzero(free, size=size, fill_value=0)[0]
    valid = jnp.arange(size) < jnp.sum(free)
    hs, mu, chol = _eqp(_shifted_gram.block(G, idx), b[idx], valid, eq)
    hs = jnp.where(valid, hs, 0)
    h = jnp.zeros((n,), G.dtype).at[idx].add(hs)
    # G h = sum_i h[idx_i] G[idx_i, :], from the (size, n) gathered rows
    gh = _shifted_gram.rows_matvec(G, hs, idx, h, precision=_HI)
    extra = _face_stat(stat, chol, idx, valid, h, mu, gh)
    if project is None:
        return h, mu, gh, h, gh, extra
    ps = jnp.where(valid, project(h)[idx], 0)  # p's support lies in the block (see _eqp_any)
    p = jnp.zeros((n,), G.dtype).at[idx].add(ps)
    return h, mu, gh, p, _shifted_gram.rows_matvec(G, ps, idx, p, precision=_HI), extra


def _face_stat(stat, chol, idx, valid, h, mu, gh):
    """``stat(chol, idx, valid, h, mu, gh)``, or ``(0, False)`` without ``stat``."""
    if stat is None:
        return jnp.zeros((), chol.dtype), jnp.zeros((), bool)
    return stat(chol, idx, valid, h, mu, gh)


def _eqp_full(G, b, free, eq, project=None, first=None, stat=None):
    """:func:`_eqp` with the outputs of :func:`_eqp_block`, by full products."""
    G = _shifted_gram.dense(G)  # formed only where this branch runs
    h, mu, chol = _eqp(G, b, free, eq, first)
    gh = jnp.matmul(G, h, precision=_HI)
    extra = _face_stat(stat, chol, jnp.arange(free.shape[-1]), free, h, mu, gh)
    if project is None:
        return h, mu, gh, h, gh, extra
    p = project(h)
    return h, mu, gh, p, jnp.matmul(G, p, precision=_HI), extra


def _eqp_any(G, b, free, eq, block_sizes: tuple, project=None, first=None, stat=None):
    """Equality-constrained solve on ``free``, in the smallest block that holds it.

    Returns ``(h, mu, G h, p, G p, (value, ok))`` with ``p = project(h)`` (the
    identity without ``project``) and ``(value, ok) = stat(chol, idx, valid, h,
    mu, G h)``, a statistic of the face from its factor (``chol``: the block's
    :func:`_masked_cholesky` factor; ``idx``, ``valid``: see :func:`gather_block`),
    or ``(0, False)`` without ``stat``.  ``project`` must keep the support of ``h`` (the
    prior's projection of an equality-constrained iterate does: clipping at
    zero, and for the simplex a positive shift, since ``sum h = 1`` already);
    in a block, ``p`` is taken on the block. ``first``: see :func:`_eqp` (the
    full-size branch only).
    """
    if not block_sizes:
        return _eqp_full(G, b, free, eq, project, stat=stat)
    branches = [functools.partial(_eqp_block, size=sz, project=project, stat=stat)
                for sz in block_sizes]
    branches.append(functools.partial(_eqp_full, project=project, first=first, stat=stat))
    i = jnp.searchsorted(jnp.asarray(block_sizes), jnp.sum(free))
    return lax.switch(i, [lambda G, b, free, eq, f=f: f(G, b, free, eq) for f in branches],
                      G, b, free, eq)


def gather_block(free, size: int):
    """``(idx, valid)``: the free indices padded to ``size`` and which entries are real."""
    idx = jnp.nonzero(free, size=size, fill_value=0)[0]
    return idx, jnp.arange(size) < jnp.sum(free)


def on_free_block(fn, free, block_sizes: tuple, *operands):
    """``fn(idx, valid, *operands)`` on the smallest block that holds ``free``.

    ``idx``/``valid`` come from :func:`gather_block`; without block sizes the
    block is everything (``idx = arange(n)``, ``valid = free``).
    """
    n = free.shape[-1]
    full = lambda *ops: fn(jnp.arange(n), free, *ops)  # noqa: E731
    if not block_sizes:
        return full(*operands)
    branches = [lambda *ops, sz=sz: fn(*gather_block(free, sz), *ops) for sz in block_sizes]
    i = jnp.searchsorted(jnp.asarray(block_sizes), jnp.sum(free))
    return lax.switch(i, branches + [full], *operands)


# Block sizes of the free-set factorisation (see :func:`default_block_sizes`).
_FINE_BLOCKS = (64, 128, 256, 320, 384, 448, 512, 640, 768, 1024, 1536, 2048)
_COARSE_BLOCKS = (64, 128, 256, 512, 768, 1024, 1536, 2048)


def default_block_sizes(n: int, *, fine: bool = True) -> tuple:
    """Block sizes for the free-set factorisation of ``n`` taps, up to ``0.7 n``.

    Larger free sets use the full factorisation: a block of ``0.7 n`` taps
    costs a third of it, plus a gather of its ``(0.7 n)²`` entries.

    ``fine`` (the default): 64, 128, 256, 320, 384, 448, 512, 640, 768, 1024,
    1536 and 2048. Dense kernels keep 230-330 free taps in a 31 x 31 or 39 x 39
    box, and from the engine's first active set
    (:func:`jdeconv._solvers.fourier.active_set_guess`) their first free sets
    fall between 256 and 700; there a step of 1.14-1.25x costs at most twice the
    free set's own factorisation, where the powers of two cost up to eight times.
    Measured on the QP of a 255² defocus blur (2 cores, medians of 21):
    box 31 26.9 -> 19.5-20.3 ms, box 39 72 -> 51-52 ms; motion blur 13 -> 10 ms
    and 27 -> 24 ms.

    ``fine=False``: 64, 128, 256, 512, 768, 1024, 1536 and 2048, for large
    images. Each size is a branch of the compiled program, with its own
    buffers and compile time: the three sizes between 256 and 512 add about
    1 s to the first call at 31 x 31, and a 384 block alone raised the warm
    peak of a 2048² estimate by 5 MiB, where the process stays under 600 MiB
    only with the coarser steps.
    """
    ladder = _FINE_BLOCKS if fine else _COARSE_BLOCKS
    return tuple(sz for sz in ladder if sz <= 0.7 * n)


def _warm_start(G, b, mask, eq, ineq, lg, iters: int):
    """A cheap first guess of the active set: ``iters`` projected FISTA steps (O(n²) each)."""
    h0 = _project(jnp.zeros_like(b), mask, eq, ineq)

    def body(_, carry):
        h, z, t = carry
        h_new = _project(z - (_shifted_gram.matvec(G, z) - b) / lg, mask, eq, ineq)
        t_new = 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))
        return h_new, h_new + ((t - 1) / t_new) * (h_new - h), t_new

    h, _, _ = lax.fori_loop(0, iters, body, (h0, h0, jnp.ones((), G.dtype)))
    return ~mask | (ineq & (h <= 0))


def _with_product(G, h):
    return h, _shifted_gram.matvec(G, h, precision=_HI)


def _project(x, mask, eq, ineq):
    return _priors.project_flags(x, mask, eq, ineq)


def _kkt_residual(g, h, mask, eq, ineq, lg, bmax):
    """The optimality measure of ``h`` with gradient ``g = G h − b``."""
    return _objective.optimality(h, g, lambda v: _project(v, mask, eq, ineq), lg, bmax)


def _finite(x):
    return jnp.all(jnp.isfinite(x))


def _tolerances(h, tol, lg, bmax):
    hmax = jnp.max(jnp.abs(h))
    return tol * hmax, tol * (lg * hmax + bmax)


# --------------------------------------------------------------------------
# PDAS + primal active-set fallback
# --------------------------------------------------------------------------


def _active_set_solve(G, b, mask, eq, ineq, tol, lg, bmax, max_iters, max_total, history,
                      A0, block_sizes, chol0=None, face_stat=None):
    """PDAS, then (if needed) the primal active-set fallback, in one loop.

    One ``lax.while_loop`` (one Cholesky per iteration) whose carry has a
    phase flag: phase 0 = PDAS, phase 1 = primal active set.  Without bounds
    (``ineq`` False) the first iterate is accepted. ``chol0``: optional
    ``(use, factor)``, the Cholesky factor of ``G`` on ``~A0`` computed before
    the loop, and whether the first iteration takes it (it then depends on ``G``
    alone, and XLA computes it once for a batch of solves with one ``G``).
    ``face_stat``: optional ``fn(chol, idx, valid) -> scalar``, evaluated inside the
    factorisation's branch on the iteration where PDAS converges (the final face's
    factor is then at hand, and no second factorisation is needed). Returns
    (iterations, active set, h, terminated, finite, objective history, optimality
    history, (face_stat's value, the face it was taken on, whether it was taken)).
    """
    n = G.shape[-1]
    dt = G.dtype
    inf = jnp.array(jnp.inf, dt)
    idx = jnp.arange(n)

    def proj_finite(h):
        return _project(jnp.where(jnp.isfinite(h), h, 0), mask, eq, ineq)

    def cond(st):
        k, _, _, _, done, fin, *_ = st
        return (k < max_total) & ~done & fin

    def pdas_violations(A, heq, mu, g_heq):
        lam = g_heq - b - mu  # bound multipliers (~0 on the free set)
        tau_h, tau_l = _tolerances(heq, tol, lg, bmax)
        viol_free = ineq & ~A & mask & (heq < -tau_h)
        viol_act = ineq & mask & A & (lam < -tau_l)
        return lam, tau_h, tau_l, viol_free, viol_act

    def body(st):
        k, phase, A, h, _, _, stall, best_ninf, best_h, obj_h, opt_h, stat = st
        F = ~A
        free_s = F & mask
        def on_face(chol, sidx, valid, heq, mu, g_heq):  # only where PDAS converges
            *_, vf, va = pdas_violations(A, heq, mu, g_heq)
            ok = (phase == 0) & ~jnp.any(vf) & ~jnp.any(va)
            return lax.cond(ok, lambda: face_stat(chol, sidx, valid),
                            lambda: jnp.zeros((), dt)), ok

        stat_fn = None if face_stat is None else on_face
        # the projection of heq and its product serve only the history
        heq, mu, g_heq, hp_eq, g_hp_eq, (val, val_ok) = _eqp_any(
            G, b, F, eq, block_sizes, proj_finite if history else None,
            None if chol0 is None else ((k == 0) & chol0[0], chol0[1]), stat_fn)
        fin = _finite(heq) & jnp.isfinite(mu)
        lam, tau_h, tau_l, viol_free, viol_act = pdas_violations(A, heq, mu, g_heq)

        # ---- phase 0: primal-dual active set (semismooth Newton) step
        ninf = (jnp.sum(viol_free) + jnp.sum(viol_act)).astype(jnp.int32)
        A_p = ~mask | viol_free | (A & ~viol_act)
        conv_p = ninf == 0
        better = ninf < best_ninf
        best_ninf_n = jnp.where(better, ninf, best_ninf)
        best_h_n = jnp.where(better, heq, best_h)
        stall_n = jnp.where(better, 0, stall + 1).astype(jnp.int32)
        # give up on PDAS: budget spent or no progress (cycling)
        switch = ~conv_p & ((stall_n >= _STALL) | (k + 1 >= max_iters))
        # the fallback's start, projected only on the iteration that switches
        # (with optax's sort-based simplex projection this was ~1 ms of a 20 ms QP)
        h_start = lax.cond(
            switch, lambda: _project(jnp.where(jnp.isfinite(best_h_n), best_h_n, 0),
                                     mask, eq, ineq), lambda: best_h_n)
        A_start = ~mask | (h_start <= 0)

        # ---- phase 1: primal active set (Lawson-Hanson type), h feasible
        feasible = ~jnp.any(free_s & (heq < -tau_h))
        # (a) face optimum: drop the most negative multiplier, if any
        cand = mask & A & (lam < -tau_l)
        j = jnp.argmin(jnp.where(cand, lam, inf))
        any_cand = jnp.any(cand)
        h_a = jnp.maximum(heq, 0)
        A_a = (A | (free_s & (heq <= 0))) & ~(any_cand & (idx == j))
        # (b) infeasible: ratio test, step to the first blocking bound, add it
        p = heq - h
        blocking = free_s & (p < 0)
        ratios = jnp.where(blocking, h / jnp.where(blocking, -p, 1), inf)
        i = jnp.argmin(ratios)
        alpha = jnp.clip(ratios[i], 0, 1)
        hit = idx == i
        h_b = jnp.where(hit, 0, jnp.maximum(h + alpha * p, 0))
        A_b = A | hit
        h_f = jnp.where(feasible, h_a, h_b)
        A_f = jnp.where(feasible, A_a, A_b)
        done_f = feasible & ~any_cand

        in_p = phase == 0
        h_n = jnp.where(in_p, jnp.where(switch, h_start, heq), h_f)
        A_n = jnp.where(in_p, jnp.where(switch, A_start, A_p), A_f)
        done = jnp.where(in_p, conv_p, done_f)
        phase_n = jnp.where(in_p & switch, 1, phase).astype(jnp.int32)
        if history:  # objective and optimality of the feasible point P(h) after this iteration
            # a PDAS step keeps heq, whose projection and its product came with it
            hp, gp = lax.cond(in_p & ~switch, lambda: (hp_eq, g_hp_eq),
                              lambda: _with_product(G, proj_finite(h_n)))
            gp = gp - b
            i = jnp.minimum(k + 1, history - 1)
            obj_h = obj_h.at[i].set(0.5 * jnp.dot(hp, gp - b))
            opt_h = opt_h.at[i].set(_objective.optimality(
                hp, gp, lambda v: _project(v, mask, eq, ineq), lg, bmax))
        take = val_ok  # (phase 0, no violation: PDAS stops on this face)
        stat = (jnp.where(take, val, stat[0]), jnp.where(take, free_s, stat[1]), take | stat[2])
        return (k + 1, phase_n, A_n, h_n, done, fin, stall_n, best_ninf_n, best_h_n, obj_h, opt_h,
                stat)

    zeros = jnp.zeros((n,), dt)
    hist0 = jnp.full((max(history, 1),), jnp.nan, dt)
    if history:
        hp = _project(zeros, mask, eq, ineq)
        gp = _shifted_gram.matvec(G, hp) - b
        obj0 = hist0.at[0].set(0.5 * jnp.dot(hp, gp - b))
        opt0 = hist0.at[0].set(_objective.optimality(
            hp, gp, lambda v: _project(v, mask, eq, ineq), lg, bmax))
    else:
        obj0 = opt0 = hist0
    st0 = (
        jnp.int32(0),
        jnp.int32(0),
        A0,
        zeros,
        jnp.bool_(False),
        jnp.bool_(True),
        jnp.int32(0),
        jnp.int32(jnp.iinfo(jnp.int32).max),
        zeros,
        obj0,
        opt0,
        (jnp.zeros((), dt), jnp.zeros((n,), bool), jnp.zeros((), bool)),
    )
    k, _, A, h, done, fin, _, _, _, obj_h, opt_h, stat = lax.while_loop(cond, body, st0)
    return k, A, h, done, fin, obj_h, opt_h, stat


def gershgorin(G, mask):
    """``max_i Σ_j |G_ij|`` over the support ``mask`` (the solver's Lipschitz bound)."""
    both = mask[:, None] & mask[None, :]
    return jnp.max(jnp.sum(jnp.abs(jnp.where(both, G, 0)), axis=1))


@functools.partial(jax.jit, static_argnames=("history", "warm_start", "block_sizes", "face_stat"))
def _solve(G, b, mask, tol, eq, ineq, max_iters, max_fallback_iters, initial_active=None,
           lipschitz=None, history=0, warm_start=0, block_sizes=(), face_stat=None):
    dt = G.dtype
    lg = gershgorin(_shifted_gram.dense(G), mask) if lipschitz is None else lipschitz
    lg = jnp.maximum(lg, jnp.finfo(dt).tiny)
    bmax = jnp.max(jnp.abs(jnp.where(mask, b, 0)))

    if initial_active is not None:
        A0 = initial_active | ~mask
    elif warm_start:
        A0 = _warm_start(G, b, mask, eq, ineq, lg, warm_start)
    else:
        A0 = ~mask
    # From the full support, the first factorisation is of G on the mask: outside
    # the loop, where it does not depend on b (one original, many blurred images:
    # one factor for the batch). It serves when the full-size branch takes the first
    # iteration (a support larger than every block). Only with blocks, i.e. a single
    # solve: under vmap the conditions would evaluate both sides.
    first = None
    if block_sizes and initial_active is None and not warm_start:
        big = jnp.sum(mask) > block_sizes[-1]
        first = (big, lax.cond(big, lambda: _masked_cholesky(_shifted_gram.dense(G), mask),
                               lambda: jnp.eye(mask.shape[-1], dtype=dt)))
    iters, A, h, done, fin, obj_h, opt_h, stat = _active_set_solve(
        G, b, mask, eq, ineq, tol / 10, lg, bmax, max_iters, max_iters + max_fallback_iters,
        history, A0, block_sizes, first, face_stat)
    # polish: exact feasibility (clip the accepted -tau_h <= h_i < 0, renormalise)
    h = jnp.where(ineq, jnp.maximum(h, 0), h) * mask.astype(dt)
    h = jnp.where(eq, h / jnp.sum(h), h)
    active = A | ~mask | (ineq & (h == 0))
    g = _shifted_gram.matvec(G, h, precision=_HI) - b  # one product for both uses below
    kkt = _kkt_residual(g, h, mask, eq, ineq, lg, bmax)
    fin = fin & _finite(h)
    converged = done & fin & (kkt <= tol)
    if history:  # the last entry is the polished solution's
        i = jnp.minimum(iters, history - 1)
        obj_h = obj_h.at[i].set(0.5 * jnp.dot(h, g - b))
        opt_h = opt_h.at[i].set(kkt)
    # the statistic holds for the returned face only if the polish left that face as it was
    value, face, taken = stat
    taken = taken & jnp.all(face == (mask & ~active))
    return QPResult(h, iters, converged, kkt, active, obj_h, opt_h), (value, taken)


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def solve_qp(
    gram,
    rhs,
    *,
    prior: str = "simplex",
    mask=None,
    max_iters: int = 100,
    tol=None,
    max_fallback_iters: int | None = None,
    history: bool = False,
    warm_start: int | None = None,
    block_sizes: tuple | None = None,
    initial_active=None,
    lipschitz=None,
) -> QPResult:
    """Solve min 1/2 h^T G h - b^T h subject to ``prior`` on the support ``mask``.

    Jit-compiled (one program per shape / dtype, shared by the four priors
    and all budgets), usable inside ``jax.jit`` and ``jax.vmap``.

    Args:
      gram: (n, n) symmetric positive definite G (on the support), or a
        :class:`jdeconv._shifted_gram.ShiftedGram` ``G + mu R`` (never formed
        in full: its blocks and products come from ``G`` and ``R``'s stencil).
      rhs: (n,) b.
      prior: "none" | "sum_to_one" | "nonneg" | "simplex" (Python value).
      mask: optional (n,) bool support; entries outside are fixed to 0.
      max_iters: PDAS iteration budget (Python int).
      tol: tolerance on the optimality measure; default ``default_tol(dtype, n)``:
        1e-9 (float64) / 1e-4 (float32).
      max_fallback_iters: budget of the primal active-set fallback (Python
        int); default ``2 * n + max_iters``.  ``iterations`` never exceeds
        ``max_iters + max_fallback_iters``.
      history: record the objective ``q`` and the optimality measure of the
        (projected) iterate after every iteration, in arrays of length
        ``max_iters + max_fallback_iters + 1`` (NaN after the last). The
        budgets then become static (a new budget recompiles).
      warm_start: projected FISTA steps that guess the first active set (static;
        default 100 above 256 unknowns without ``block_sizes``, else 0: with
        blocks, one full first solve is cheaper than the 100 steps and guesses
        no worse). Exactness is unaffected: the active-set method still stops
        only at a KKT point.
      block_sizes: factor only the free taps, gathered into the smallest of
        these block sizes that holds them (static; default none). Worth it
        when the free set is much smaller than ``n`` (see
        :func:`default_block_sizes`); under ``jax.vmap`` every block size is
        evaluated, so leave it empty there.
      initial_active: optional (n,) bool first guess of the taps at a bound
        (e.g. the active set of a neighbouring problem, or
        :func:`jdeconv._solvers.fourier.active_set_guess`); replaces the warm start.
      lipschitz: optional :func:`gershgorin` bound of ``gram`` on ``mask`` (it scales
        the tolerances), when the caller has it more cheaply than the full pass over
        ``gram`` that computes it otherwise.

    Returns:
      QPResult(solution, iterations, converged, kkt_residual, active_set,
      objective_history, optimality_history) (the histories have length 1 and
      hold NaN without ``history``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdeconv._solvers.exact import solve_qp
      >>> res = solve_qp(jnp.eye(3), jnp.array([0.5, -1.0, 2.0]), prior="nonneg")
      >>> res.solution.tolist(), bool(res.converged)
      ([0.5, 0.0, 2.0], True)
    """
    return _solve_qp(gram, rhs, prior, mask, max_iters, tol, max_fallback_iters, history,
                     warm_start, block_sizes, initial_active, lipschitz)[0]


def solve_qp_with_face_statistic(gram, rhs, face_statistic, **options):
    """:func:`solve_qp`, and a statistic of the final face from the solver's own factor.

    ``face_statistic(chol, idx, valid) -> scalar`` receives the Cholesky factor of
    the final face's block of ``gram`` (``(s, s)``, identity on padding entries), the
    block's taps ``idx`` (s,) and which of them are real (``valid``, (s,)); it is
    evaluated inside the solver, on the iteration where the primal-dual active-set
    method converges, so the face needs no second factorisation. The statistic is a
    static argument of the solver's program: call this inside a ``jax.jit`` (as
    ``"auto"`` does), where it is traced once, not eagerly with a new function each
    time (each would compile again).

    Returns:
      ``(QPResult, value, taken)``: ``taken`` is false where the statistic was not
      evaluated on the returned face (the primal fallback ran, or the final polish
      moved a tap to its bound); the caller then computes it otherwise (``value`` is
      0 there).
    """
    try:  # solve_qp's own options and defaults
        bound = inspect.signature(solve_qp).bind(gram, rhs, **options)
    except TypeError as e:
        raise TypeError(f"unexpected options for solve_qp: {e}") from None
    bound.apply_defaults()
    res, (value, taken) = _solve_qp(**bound.arguments, face_stat=face_statistic)
    return res, value, taken


def _solve_qp(gram, rhs, prior, mask, max_iters, tol, max_fallback_iters, history, warm_start,
              block_sizes, initial_active, lipschitz, face_stat=None):
    _validation.check_prior(prior)
    shifted = isinstance(gram, _shifted_gram.ShiftedGram)
    dt = jnp.result_type(gram.G if shifted else gram, rhs, jnp.float32)
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.dtype(jnp.float32)
    G = (jax.tree_util.tree_map(lambda v: jnp.asarray(v, dt), gram) if shifted
         else jnp.asarray(gram, dt))
    b = jnp.asarray(rhs, dt)
    n = b.shape[-1] if b.ndim else 0
    if G.shape != (n, n) or b.shape != (n,):
        raise ValueError(f"expected gram (n, n) and rhs (n,), got {G.shape}, {b.shape}")
    mask = jnp.ones((n,), bool) if mask is None else jnp.asarray(mask, bool)
    if mask.shape != (n,):
        raise ValueError(f"mask must have shape ({n},), got {mask.shape}")
    tol = jnp.asarray(default_tol(dt, n) if tol is None else tol, dt)
    if max_fallback_iters is None:
        max_fallback_iters = 2 * n + max_iters
    eq = jnp.asarray(prior in ("sum_to_one", "simplex"))
    ineq = jnp.asarray(prior in ("nonneg", "simplex"))
    # The budgets are Python ints at the API but enter the compiled program
    # as (unbatched) int32 scalars: only loop conditions use them, so changing
    # them does not trigger a recompilation.
    size = int(max_iters) + int(max_fallback_iters) + 1 if history else 0
    if warm_start is None:  # with blocks, the first full solve is the better guess
        warm_start = 100 if n > 256 and initial_active is None and not block_sizes else 0
    if initial_active is not None:
        initial_active = jnp.asarray(initial_active, bool)
    return _solve(
        G, b, mask, tol, eq, ineq,
        jnp.int32(int(max_iters)), jnp.int32(int(max_fallback_iters)), initial_active,
        None if lipschitz is None else jnp.asarray(lipschitz, dt), history=size,
        warm_start=int(warm_start), block_sizes=tuple(block_sizes or ()), face_stat=face_stat,
    )

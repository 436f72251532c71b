"""Automatic choice of the regularisation weight from the data alone.

:func:`choose_regularization` picks the weight ``w`` of the quadratic
regularisers (``"smooth"`` by default) for ``estimate_kernel`` without the
true kernel. It forms the normal equations once, solves the constrained
problem for every candidate weight in one ``jax.vmap`` of the exact QP solver
(the candidates are an array argument: new weights never recompile), and
scores each solution with generalised cross-validation (GCV) computed from
the ``kl × kl`` matrices.

Notes:
  For candidate ``w`` with solution ``h_w`` (under the prior), ``μ = w s``
  (``s = trace(G) / (k l)``, see :mod:`jdeconv._regularizers`) and the
  regulariser matrix ``R``:

  * residual ``RSS(w) = ||A h_w − y||²``: one real convolution at the first
    candidate ``h_0``, the others by the exact expansion
    ``RSS(h) = RSS(h_0) + 2 dᵀ(G h_0 − b) + dᵀ G d`` with ``d = h − h_0``
    (no cancellation against ``||y||²``);
  * effective degrees of freedom (trace of the influence matrix of the
    constrained estimate, which is affine in ``y`` on the face where it
    lies): on the free taps ``F`` (inside the support, not at a bound),
    ``K = (G_FF + μ R_FF)⁻¹``, ``dof = |F| − μ tr(K R_FF)``, minus
    ``(Gu)ᵀu / 1ᵀu`` with ``u = K 1`` when the prior fixes ``sum h = 1``;
  * ``GCV(w) = (RSS / n) / (1 − dof / n)²`` with ``n`` the number of fitted
    pixels; the chosen weight minimises ``log GCV`` averaged with its two
    neighbours on the grid (the dof of a constrained estimate jumps when the
    active set changes, and a one-point dip there is an artefact).

  Other criteria (``method=``): ``"upre"`` (``RSS + 2 σ² dof``, σ from
  :func:`jdeconv._noise_level.estimate_noise`), ``"discrepancy"`` (largest
  ``w`` with ``RSS ≤ σ² (n − dof)``) and ``"lcurve"`` (corner of maximum
  curvature of ``(log RSS, log hᵀRh)``). They were measured against GCV and
  the oracle weight (``experiments/ACCURACY.md``): GCV on the constrained
  solutions was the most reliable; GCV of the unconstrained problem (closed
  form) over-smoothed sparse kernels under the simplex prior; held-out
  pixels were close but costlier and noisier; the discrepancy principle
  and the L-curve failed badly (the first is ruled by small errors of σ, the
  second finds no clear corner).

  ``fit_statistic = sqrt(RSS / (n − dof)) / σ`` at the chosen weight, σ from
  :func:`jdeconv.estimate_noise` on the blurred image: about 1 when the model
  explains the data up to white noise; well above 1 flags a wrong kernel size,
  misaligned images or a non-linear tone curve. On nearly noise-free data σ
  measures residual image structure instead, and the statistic falls below 1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jdeconv import _conv, _geometry, _gram, _names, _noise_level, _problem, _regularizers
from jdeconv import _progress, _shifted_gram, _validation
from jdeconv._solvers import exact

__all__ = ["AutoRegularization", "DEFAULT_CANDIDATES", "METHODS", "TERMS",
           "choose_regularization", "select", "solve_candidates"]

METHODS = _names.CRITERIA
TERMS = _names.QUADRATIC_REGULARIZERS
# 0 (the prior alone) and 25 weights, three per decade, from 1e-8 to 1.
_HI = lax.Precision.HIGHEST  # float32 on accelerators: no reduced-precision products
DEFAULT_CANDIDATES = (0.0,) + tuple(float(v) for v in np.logspace(-8.0, 0.0, 25))


class AutoRegularization(NamedTuple):
    """The weight chosen by :func:`choose_regularization` and the evidence.

    Attributes:
      weights: ``{"tikhonov": w, "smooth": w, "l1": 0.0}`` (floats) with the
        chosen ``w`` on the requested terms, ready for
        ``estimate_kernel(..., regularization=weights)``.
      weight: the chosen ``w`` (float).
      index: its position in ``candidates`` (int).
      method: the selection criterion (``"gcv"``, ...).
      noise_sigma: noise σ of the blurred image (:func:`estimate_noise`).
      fit_statistic: ``sqrt(RSS / (n − dof)) / noise_sigma`` at the chosen
        weight (≈ 1 when the model fits the data).
      candidates: (C,) candidate weights (sorted ascending).
      criterion: (C,) the criterion's value per candidate (minimised; for
        ``"discrepancy"``: ``RSS / (σ² (n − dof)) − 1``, the largest weight
        with a value ≤ 0 is chosen).
      rss: (C,) residual sum of squares ``||conv(x, h_w) − y||²``.
      dof: (C,) effective degrees of freedom (trace of the influence matrix).
      penalty: (C,) ``hᵀ R h``, the unweighted regulariser at ``h_w``.
      kernels: (C, k, l) the solution under the prior for every candidate.
      kernel: (k, l) the solution at the chosen weight.
      n_pixels: number of fitted pixels of the blurred image (int).
    """

    weights: dict
    weight: float
    index: int
    method: str
    noise_sigma: jax.Array
    fit_statistic: jax.Array
    candidates: jax.Array
    criterion: jax.Array
    rss: jax.Array
    dof: jax.Array
    penalty: jax.Array
    kernels: jax.Array
    kernel: jax.Array
    n_pixels: int


# ----------------------------------------------------------------------------
# Validation (eager)
# ----------------------------------------------------------------------------

def _check_terms(terms) -> tuple[str, ...]:
    if isinstance(terms, str):
        terms = (terms,)
    try:
        terms = tuple(terms)
    except TypeError:
        raise TypeError(f"terms must be a name or a sequence of names from {TERMS}, got "
                        f"{terms!r}.") from None
    if not terms:
        raise ValueError(f"terms is empty; give at least one of {TERMS}.")
    for t in terms:
        if t == "l1":
            raise ValueError("the l1 regulariser cannot be chosen automatically (it is not "
                             "quadratic, and constant under the simplex prior); use terms "
                             "from ('tikhonov', 'smooth').")
        _validation.check_choice("regularizer term", t, TERMS)
    return tuple(sorted(set(terms), key=TERMS.index))


def _check_candidates(candidates, dtype) -> np.ndarray:
    if candidates is None:
        candidates = DEFAULT_CANDIDATES
    try:
        c = np.asarray(candidates, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"candidates must be a sequence of numbers, got {candidates!r}.") from None
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"candidates must be a non-empty 1-D sequence of weights, got shape "
                         f"{c.shape}.")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("candidate weights must be finite and >= 0, got "
                         f"{c[~(np.isfinite(c) & (c >= 0))][:3].tolist()}.")
    return np.unique(c)


def stencil(terms) -> tuple:
    """``(a, b)`` with ``_basis(terms) = a I + b DᵀD`` (for :func:`_dof`)."""
    return (1.0 if "tikhonov" in terms else 0.0, 1.0 if "smooth" in terms else 0.0)


def _basis(terms, kernel_shape, dtype=jnp.float64) -> jax.Array:
    """The regulariser matrix the chosen weight multiplies (built in the program, no literal)."""
    return _regularizers.traced_quadratic(kernel_shape, 1.0 if "tikhonov" in terms else 0.0,
                                          1.0 if "smooth" in terms else 0.0, dtype)


# ----------------------------------------------------------------------------
# The jitted core: every candidate at once
# ----------------------------------------------------------------------------

def _dof(gram, R, mu, free, eq, block_sizes=(), *, stencil=None, kernel_shape=None,
         shifted=None):
    """Trace of the influence matrix of the estimate restricted to the face ``free``.

    With ``block_sizes`` the free taps are gathered into the smallest block that
    holds them (one small Cholesky instead of an ``n x n`` one). With
    ``stencil = (a, b)``, declaring ``R = a I + b DᵀD`` (``D`` the first
    differences of the ``kernel_shape`` grid, as
    :func:`jdeconv._regularizers.traced_quadratic` builds it), the trace is
    computed from the inverse factor and the difference stencil instead of a
    solve with the dense ``R``. ``shifted``: optionally ``gram + mu R`` (a matrix
    or a :class:`jdeconv._shifted_gram.ShiftedGram`, the QP's operand); with a
    stencil only its free block is read.
    """
    if stencil is not None and shifted is None:
        shifted = _shifted_gram.ShiftedGram(gram, mu, *stencil, kernel_shape)
    if block_sizes:
        def on_block(idx, valid, gram, R, shifted):
            sub = lambda a: a[idx[:, None], idx[None, :]]  # noqa: E731
            if stencil is not None:
                return _dof_stencil(_shifted_gram.block(shifted, idx), mu, valid, eq,
                                    stencil, kernel_shape, idx)
            return _dof_on(sub(gram), sub(R), mu, valid, eq)
        return exact.on_free_block(on_block, free, block_sizes, gram, R, shifted)
    if stencil is not None:
        return _dof_stencil(_shifted_gram.dense(shifted), mu, free, eq, stencil, kernel_shape,
                            jnp.arange(free.shape[-1]))
    return _dof_on(gram, R, mu, free, eq)


def _dof_on(gram, R, mu, free, eq):
    """:func:`_dof` on a gathered block with a dense ``R`` (``free`` (s,): the real taps)."""
    dt = gram.dtype
    fz = free.astype(dt)
    both = free[:, None] & free[None, :]
    Mm = jnp.where(both, gram + mu * R, 0) + jnp.diag(1 - fz)
    chol = lax.linalg.cholesky(Mm, symmetrize_input=False)
    KR = jax.scipy.linalg.cho_solve((chol, True), jnp.where(both, R, 0))
    dof = jnp.sum(fz) - mu * jnp.trace(KR)
    if eq:
        u = jax.scipy.linalg.cho_solve((chol, True), fz)
        Gu = jnp.where(both, gram, 0) @ u
        dof = dof - jnp.dot(Gu, u) / jnp.dot(fz, u)
    return dof


def _dof_stencil(shifted, mu, free, eq, stencil, kernel_shape, idx):
    """:func:`_dof` on a gathered block of ``G + mu R`` with ``R = a I + b DᵀD``.

    ``idx`` (s,) are the block's taps, ``free`` (s,) the real ones. With the
    prior's equality, ``uᵀ G u = 1ᵀu − mu uᵀRu`` for ``u = M⁻¹ 1`` (``M u = 1``
    on the face), and ``uᵀRu`` comes from the stencil on the kernel grid, so
    neither ``G`` nor ``R`` is gathered.
    """
    chol = exact._masked_cholesky(shifted, free)  # assembled as the QP's (no copy)
    return _dof_from_factor(chol, free, idx, mu, eq, stencil, kernel_shape)


def _dof_from_factor(chol, free, idx, mu, eq, stencil, kernel_shape):
    """:func:`_dof_stencil` from the face's factor ``chol`` (:func:`exact._masked_cholesky`
    of the block of ``G + mu R`` at ``idx`` (s,), ``free`` (s,) its real taps)."""
    fz = free.astype(chol.dtype)
    dof = jnp.sum(fz) - mu * _trace_inverse_stencil(chol, fz, idx, stencil, kernel_shape)
    if eq:
        u = jax.scipy.linalg.cho_solve((chol, True), fz)  # zero off the face
        fu = jnp.dot(fz, u)
        dof = dof - (fu - mu * _stencil_form(u, idx, stencil, kernel_shape)) / fu
    return dof


def _stencil_form(u, idx, stencil, kernel_shape):
    """``vᵀ (a I + b DᵀD) v`` for ``v`` the kernel with ``u`` (s,) at taps ``idx``
    (entries of ``u`` off the face must be 0)."""
    a, b = stencil
    k, l = kernel_shape
    v = jnp.zeros((k * l,), u.dtype).at[idx].add(u).reshape(k, l)
    out = jnp.zeros((), u.dtype)
    if not _is_zero(a):
        out = out + a * jnp.vdot(v, v)
    if not _is_zero(b):
        dr, dc = v[1:] - v[:-1], v[:, 1:] - v[:, :-1]
        out = out + b * (jnp.vdot(dr, dr) + jnp.vdot(dc, dc))
    return out


def _lower_inverse(L, base: int = 128):
    """``L⁻¹`` of a lower-triangular (s, s) ``L`` by halves, in matrix products.

    ``[[A, 0], [C, B]]⁻¹ = [[A⁻¹, 0], [−B⁻¹ C A⁻¹, B⁻¹]]``: ``s³/3`` flops,
    mostly in matrix products, against ``s³`` for a triangular solve with the
    identity (2.8x at s = 512, 5x at 961 on this CPU; ``base`` bounds the
    unrolled recursion, whose compile time grows with its depth).
    """
    s = L.shape[-1]
    if s <= base:
        return lax.linalg.triangular_solve(L, jnp.eye(s, dtype=L.dtype), left_side=True,
                                           lower=True)
    h = s // 2
    Ai, Bi = _lower_inverse(L[:h, :h], base), _lower_inverse(L[h:, h:], base)
    Ci = -jnp.matmul(Bi, jnp.matmul(L[h:, :h], Ai, precision=_HI), precision=_HI)
    return jnp.block([[Ai, jnp.zeros((h, s - h), L.dtype)], [Ci, Bi]])


def _is_zero(c) -> bool:
    """Whether a stencil coefficient is a Python zero (its term is then skipped at trace time)."""
    return isinstance(c, (int, float)) and c == 0


def _trace_inverse_stencil(chol, fz, idx, stencil, kernel_shape):
    """``tr(M⁻¹ R_FF)`` for ``M = L Lᵀ`` and ``R = a I + b DᵀD``, without ``R``.

    With ``W = L⁻¹`` (``M⁻¹ = WᵀW``, ``s³/3`` flops in matrix products) the
    trace is ``Σ_pq (M⁻¹)_pq R_pq``. ``R``'s entries are its stencil:
    ``R_pp = a + b deg(p)`` (``deg``: the tap's neighbours on the kernel grid,
    2 to 4) and ``R_pq = −b`` for neighbouring taps, so only the diagonal of
    ``M⁻¹`` (squared column norms of ``W``) and its entries between each free
    tap and its right and lower neighbours (when these are free) are needed:
    ``O(s²)`` after the inverse, against ``s³`` for the two solves of ``M⁻¹ R``.
    """
    a, b = stencil
    k, l = kernel_shape
    n, s = k * l, chol.shape[-1]
    W = _lower_inverse(chol)
    W = W * fz[None, :]  # only the face's columns (padding entries are unit vectors)
    diag = jnp.sum(W * W, axis=0)  # (s,) the diagonal of M⁻¹ on the face
    tr = jnp.zeros((), chol.dtype)
    if not _is_zero(a):
        tr = tr + a * jnp.sum(diag)
    if not _is_zero(b):
        valid = fz > 0
        row, col = idx // l, idx % l
        deg = ((row > 0).astype(chol.dtype) + (row < k - 1) + (col > 0) + (col < l - 1))
        # each free tap's position in the block, -1 for the others
        pos = jnp.full((n,), -1, jnp.int32).at[jnp.where(valid, idx, n)].set(
            jnp.arange(s, dtype=jnp.int32), mode="drop")

        def cross(has, step):  # Σ_p (M⁻¹)_{p, q(p)} over free neighbours q = p + step
            q = jnp.where(has, pos[jnp.minimum(idx + step, n - 1)], -1)
            ok = valid & (q >= 0)
            return jnp.sum(jnp.where(ok[None, :], W * W[:, jnp.maximum(q, 0)], 0))

        tr = tr + b * (jnp.vdot(deg, diag) - 2 * (cross(col < l - 1, 1) + cross(row < k - 1, l)))
    return tr


def _shifted_gershgorin(abs_rows, gram, mu, mask, stencil, kernel_shape):
    """:func:`jdeconv._solvers.exact.gershgorin` of ``gram + mu R``, ``R = a I + b DᵀD``.

    ``abs_rows`` (n,): ``Σ_j |gram_ij|`` over the support. A row of ``R`` has at
    most five non-zero entries (the tap and its grid neighbours), so only those
    five terms of each row sum change: O(n) instead of a pass over ``n²`` entries.
    """
    a, b = stencil
    k, l = kernel_shape
    n = k * l
    t = jnp.arange(n)
    row, col = t // l, t % l
    deg = (row > 0).astype(gram.dtype) + (row < k - 1) + (col > 0) + (col < l - 1)

    def change(g, r, ok):  # |g + mu r| − |g| for an entry inside the support
        return jnp.where(ok, jnp.abs(g + mu * r) - jnp.abs(g), 0)

    sums = abs_rows + change(jnp.diagonal(gram), a + b * deg, mask)
    for step, has in ((1, col < l - 1), (-1, col > 0), (l, row < k - 1), (-l, row > 0)):
        j = jnp.clip(t + step, 0, n - 1)
        sums = sums + change(gram[t, j], -b, has & mask & mask[j])
    return jnp.max(sums)


class CandidateSolutions(NamedTuple):
    """Every candidate weight's constrained solution and the numbers the criteria need."""

    kernels: jax.Array  # (C, n)
    rss: jax.Array  # (C,)
    dof: jax.Array  # (C,)
    penalty: jax.Array  # (C,)
    qp: exact.QPResult  # batched over candidates


def solve_candidates(ne, xp, y, candidates, R, mask, tol, *, kernel_shape, prior, max_iters,
                     history=False, residual=None, sequential=True,
                     block_sizes=(), progress=False, stencil=None) -> CandidateSolutions:
    """Solves the problem for every candidate weight from normal equations formed once.

    Traceable (the engine calls it inside its jitted, vmapped core).

    Args:
      ne: :class:`jdeconv.NormalEquations` of the pair (solver geometry).
      xp: the original padded for the solver geometry (``_geometry.pad``).
      y: the blurred image in the solver geometry.
      candidates: (C,) weights (relative, see :mod:`jdeconv._regularizers`).
      R: (n, n) the regulariser matrix the weight multiplies.
      mask: (n,) bool support.
      tol: solver tolerance.
      kernel_shape, prior, max_iters: static settings.
      history: record the exact solver's per-iteration history.
      residual: optional ``h (n,) -> residual`` (weighted, with photometric terms);
        default ``conv(xp, h) − y``.
      sequential: solve the candidates one after the other along the weight
        path (largest weight first), each from a warm start (a few active-set
        iterations each) instead of one vmap of independent cold solves. The
        start is the previous active set for the second candidate, and from the
        third on, under bounds, the taps where the linear extrapolation of the
        last two solutions (``2 h₁ − h₂``, the weights are evenly spaced in log)
        is not positive: 63 → 55 iterations over the 26 default weights for a
        defocus blur at 31 × 31 (the solutions are the same KKT points).
      block_sizes: with ``sequential``, factor only the free block (see
        :func:`jdeconv._solvers.exact.solve_qp`); leave empty under ``jax.vmap``.
      progress: static; with ``sequential``, report each candidate solved
        (:mod:`jdeconv._progress`).
      stencil: ``(a, b)`` (floats or traced scalars) when ``R = a I + b DᵀD``
        (:func:`stencil`): the degrees of freedom then need no solve against ``R``.
    """
    n = kernel_shape[0] * kernel_shape[1]
    gram, rhs = ne.gram, ne.rhs
    scale = jnp.trace(gram) / n
    R = R.astype(gram.dtype)
    eq = prior in _names.EQUALITY_PRIORS

    # |G|'s row sums, once: each candidate's bound on G + mu R differs only where R
    # is non-zero (one pass over the n x n matrix per candidate less)
    abs_rows = None if stencil is None else jnp.sum(
        jnp.abs(jnp.where(mask[:, None] & mask[None, :], gram, 0)), axis=1)

    def solve(w, active=None, blocks=()):
        mu = w * scale
        if stencil is None:
            shifted, lip = gram + mu * R, None
        else:  # G + mu R, never formed in full (blocks and products from the stencil)
            shifted = _shifted_gram.ShiftedGram(gram, mu, *stencil, kernel_shape)
            lip = _shifted_gershgorin(abs_rows, gram, mu, mask, stencil, kernel_shape)
        opts = dict(prior=prior, mask=mask, max_iters=max_iters, tol=tol, history=history,
                    initial_active=active, block_sizes=blocks, lipschitz=lip)

        def dof_otherwise(res, blocks):
            return _dof(gram, R, mu, mask & ~res.active_set, eq, blocks, stencil=stencil,
                        kernel_shape=kernel_shape, shifted=shifted)

        if stencil is None or not blocks:  # (under vmap a condition evaluates both sides)
            res = exact.solve_qp(shifted, rhs, **opts)
            return res, dof_otherwise(res, blocks)
        # the degrees of freedom from the solver's own factor of the final face (one
        # factorisation less), unless the solver ended elsewhere than on that face (not
        # seen in 260 candidates of the benchmark's pairs): that rare case takes the
        # full-size face, one branch instead of a block per size (7 s less compilation)
        res, dof, taken = exact.solve_qp_with_face_statistic(
            shifted, rhs, lambda chol, idx, valid: _dof_from_factor(
                chol, valid, idx, mu, eq, stencil, kernel_shape), **opts)
        return res, lax.cond(taken, lambda: dof, lambda: dof_otherwise(res, ()))

    if sequential:
        total = candidates.shape[0]
        bounds = prior in _names.BOUND_PRIORS

        def step(carry, w):
            active, h1, h2, done = carry
            if bounds:  # the taps that the last two solutions, extrapolated, put at zero
                active = jnp.where(done >= 2, 2 * h1 - h2 <= 0, active)
            res, dof = solve(w, active, block_sizes)
            _progress.tick(progress, "candidates", done + 1, total, every=1)
            return (res.active_set, res.solution, h1, done + 1), (res, dof)

        first, dof_first = solve(candidates[-1], None, block_sizes)
        _progress.tick(progress, "candidates", 1, total, every=1)
        carry = (first.active_set, first.solution, first.solution, jnp.ones((), jnp.int32))
        _, (rest, dof_rest) = jax.lax.scan(step, carry, candidates[-2::-1])
        qp = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([b[::-1], a[None]]), first,
                                    rest)
        dof = jnp.concatenate([dof_rest[::-1], dof_first[None]])
    else:
        qp, dof = jax.vmap(solve)(candidates)
    H = qp.solution
    # RSS: one real convolution, the rest by the exact quadratic expansion.
    h0 = H[0]
    r0 = (_conv.valid_conv(xp, h0.reshape(kernel_shape)) - y if residual is None
          else residual(h0))
    rss0 = jnp.vdot(r0, r0)
    g0 = gram @ h0 - rhs
    D = H - h0[None, :]
    GD = D @ gram
    rss = jnp.maximum(rss0 + 2 * (D @ g0) + jnp.sum(GD * D, axis=1), 0)
    if stencil is None:
        penalty = jnp.einsum("ci,ij,cj->c", H, R, H)
    else:  # on the kernel grid: O(C n) instead of a (C, n) x (n, n) product
        taps = jnp.arange(n)
        penalty = jax.vmap(lambda h: _stencil_form(h, taps, stencil, kernel_shape))(H)
    return CandidateSolutions(H, rss, dof, penalty, qp)


def _choose_jit(x, y, candidates, R, stencil, mask, tol, *, kernel_shape, mode, prior,
                max_iters, method):
    ne = _gram.normal_equations_impl(x, y, kernel_shape, mode)
    xp = _geometry.pad(x, kernel_shape, mode)
    sol = solve_candidates(ne, xp, y, candidates, R, mask, tol, kernel_shape=kernel_shape,
                           prior=prior, max_iters=max_iters, stencil=(stencil[0], stencil[1]))
    sigma = _noise_sigma_or_nan(y)
    crit, idx = select(method, sol.rss, sol.dof, sol.penalty, candidates, y.size, sigma)
    return sol, sigma, crit, idx


_choose_compiled = jax.jit(_choose_jit, static_argnames=(
    "kernel_shape", "mode", "prior", "max_iters", "method"))


def _noise_sigma_or_nan(y):
    r = _noise_level.DEFAULT_PATCH_SIZE
    if _noise_level.enough_patches(y.shape, r):
        return _noise_level.noise_sigma(y, r)
    return jnp.asarray(jnp.nan, y.dtype)  # too small to estimate: fit_statistic is NaN


def fit_statistic(rss, dof, n_pixels, sigma):
    """``sqrt(RSS / (n − dof)) / σ`` (≈ 1 when the model explains the data up to noise)."""
    resid_sd = jnp.sqrt(jnp.maximum(rss, 0) / jnp.maximum(n_pixels - dof, 1.0))
    return jnp.where(sigma > 0, resid_sd / jnp.where(sigma > 0, sigma, 1), jnp.inf)


# ----------------------------------------------------------------------------
# Selection (host side, a few numbers per candidate)
# ----------------------------------------------------------------------------

def _menger_curvature(a, b):
    """Signed curvature of the polyline (a, b) at its inner points (NaN at the ends);
    positive where the curve turns like the corner of an L-curve."""
    p0 = jnp.stack([a[:-2], b[:-2]])
    p1 = jnp.stack([a[1:-1], b[1:-1]])
    p2 = jnp.stack([a[2:], b[2:]])
    cross = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p1[1] - p0[1]) * (p2[0] - p0[0])
    den = (jnp.linalg.norm(p1 - p0, axis=0) * jnp.linalg.norm(p2 - p1, axis=0)
           * jnp.linalg.norm(p2 - p0, axis=0))
    inner = jnp.where(den > 0, -2 * cross / jnp.where(den > 0, den, 1), jnp.nan)
    nan = jnp.full((1,), jnp.nan, inner.dtype)
    return jnp.concatenate([nan, inner, nan])


def _smooth3(c):
    """Mean of each value and its two neighbours on the grid (edges repeated)."""
    p = jnp.concatenate([c[:1], c, c[-1:]])
    return (p[:-2] + p[1:-1] + p[2:]) / 3


def select(method, rss, dof, penalty, candidates, n_pixels, sigma, *, smooth=True):
    """Criterion values per candidate and the chosen index (traceable).

    Args:
      method: one of :data:`METHODS` (static).
      rss, dof, penalty, candidates: (C,) arrays as in :class:`AutoRegularization`.
      n_pixels: number of fitted pixels.
      sigma: noise σ (used by "upre" and "discrepancy").
      smooth: for "gcv" and "upre", minimise the 3-point running mean of the
        log criterion over the grid instead of the raw values. The degrees of
        freedom of a constrained estimate jump when taps enter or leave the
        active set, and an isolated dip of the criterion at such a jump is an
        artefact (it chose visibly over-smoothed motion blurs); a dip must
        persist over neighbouring weights to count.

    Returns:
      (criterion (C,), index): the raw criterion values and the chosen index.
    """
    rss, dof, penalty, candidates = (jnp.asarray(v) for v in (rss, dof, penalty, candidates))
    n = jnp.asarray(n_pixels, rss.dtype)
    s2 = jnp.asarray(sigma, rss.dtype) ** 2
    C = rss.shape[0]
    if method in ("gcv", "upre"):
        if method == "gcv":
            crit = (rss / n) / jnp.maximum(1 - dof / n, 1e-12) ** 2
        else:
            crit = rss + 2 * s2 * dof
        score = jnp.log(jnp.maximum(crit, 1e-300))
        if smooth and C > 2:
            score = _smooth3(score)
        return crit, jnp.nanargmin(score)
    if method == "discrepancy":
        crit = rss / jnp.maximum(s2 * (n - dof), jnp.finfo(rss.dtype).tiny) - 1
        ok = crit <= 0
        last = C - 1 - jnp.argmax(ok[::-1])
        return crit, jnp.where(jnp.any(ok), last, 0)
    # lcurve: corner of largest curvature among the positive weights
    pos = candidates > 0
    curv = _menger_curvature(jnp.log(jnp.maximum(rss, 1e-300)),
                             jnp.log(jnp.maximum(penalty, 1e-300)))
    prev_pos = jnp.concatenate([jnp.zeros((1,), bool), pos[:-1]])
    curv = jnp.where(pos & prev_pos, curv, jnp.nan)
    crit = jnp.where(pos, -curv, jnp.nan)  # minimised
    first_pos = jnp.argmax(pos)
    have = jnp.any(jnp.isfinite(curv))
    return crit, jnp.where(have, jnp.nanargmax(jnp.where(have, curv, 0)), first_pos)


# ----------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------

def choose_regularization(x, y, kernel_shape, *, mode: str = "valid", prior: str = "simplex",
                          support=None, terms=("smooth",), candidates=None,
                          method: str = "gcv", dtype=None, max_iters: int = 100,
                          tol: float | None = None) -> AutoRegularization:
    """Chooses the regularisation weight from the image pair alone.

    Solves the problem under ``prior`` for every candidate weight (one
    ``jax.vmap`` of the exact QP on normal equations formed once) and picks
    the weight that minimises generalised cross-validation (see the module
    notes for the formulas and ``experiments/ACCURACY.md`` for the evidence).

    Args:
      x: original image (m, n).
      y: blurred image, in ``mode``'s geometry (as for ``estimate_kernel``).
      kernel_shape: (k, l) or an int.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      prior: ``"simplex"`` (default), ``"nonneg"``, ``"sum_to_one"`` or
        ``"none"``.
      support: optional (k, l) bool mask of taps allowed to be non-zero.
      terms: which quadratic regularisers get the weight: ``"smooth"``
        (default), ``"tikhonov"`` or both (the same weight on each).
      candidates: weights to try (default: 0 and 25 log-spaced values from
        1e-8 to 1). Changing the values does not recompile; changing their
        number does.
      method: ``"gcv"`` (default), ``"upre"``, ``"discrepancy"`` or
        ``"lcurve"``.
      dtype: None (keep the inputs' float type), ``"float32"`` or ``"float64"``;
        float64 is recommended (the criterion compares residuals that differ
        by parts in 1e5).
      max_iters: iteration budget of the exact solver per candidate.
      tol: solver tolerance (default 1e-10 in float64, 1e-5 in float32).

    Returns:
      :class:`AutoRegularization` (weights, noise_sigma, fit_statistic, the
      candidates with their criterion values, kernels, ...).

    Raises:
      ValueError, TypeError: for inputs that do not fit (as ``estimate_kernel``),
        unknown terms or methods, or bad candidate weights.

    Example:
      >>> import jdeconv
      >>> x = jdeconv.data.natural_image("camera", shape=96)
      >>> h = jdeconv.data.gaussian_kernel(7, 1.2)
      >>> y = jdeconv.data.add_gaussian_noise(jdeconv.conv2d(x, h), 0.01, seed=0)
      >>> auto = jdeconv.choose_regularization(x, y, 7)
      >>> auto.method, auto.weights["smooth"] > 0
      ('gcv', True)
    """
    problem = _problem.make_problem(x, y, kernel_shape, mode=mode, dtype=dtype,
                                    support=support)
    prior = _validation.check_prior(prior)
    terms = _check_terms(terms)
    method = _validation.check_choice("method", method, METHODS)
    cand = _check_candidates(candidates, problem.dtype)
    max_iters = _validation.check_int(max_iters, "max_iters", minimum=1,
                                      maximum=_validation.MAX_ITERS, example=100)
    tol = exact.default_tol(problem.dtype, problem.n_taps) if tol is None else \
        _validation.check_tol(tol)
    return _choose(problem, cand, terms, method, prior, max_iters, tol)


def _choose(problem, cand, terms, method, prior, max_iters, tol) -> AutoRegularization:
    """:func:`choose_regularization` on a validated problem."""
    kshape, dt = problem.kernel_shape, problem.dtype
    mask = (jnp.ones((problem.n_taps,), bool) if problem.support is None
            else problem.support.reshape(-1))
    R = jnp.asarray(_basis(terms, kshape), dt)
    cands = jnp.asarray(cand, dt)
    sol, sigma, crit, idx = _choose_compiled(
        problem.x, problem.y, cands, R, jnp.asarray(stencil(terms), dt), mask,
        jnp.asarray(tol, dt), kernel_shape=kshape, mode=problem.solve_mode, prior=prior,
        max_iters=max_iters, method=method)
    idx = int(idx)
    w = float(cand[idx])
    weights = {name: 0.0 for name in _regularizers.REGULARIZERS}
    for t in terms:
        weights[t] = w
    n_pixels = int(np.prod(problem.y.shape))
    fit = fit_statistic(sol.rss[idx], sol.dof[idx], n_pixels, sigma)
    H = sol.kernels.reshape((-1,) + kshape)
    return AutoRegularization(
        weights=weights, weight=w, index=idx, method=method, noise_sigma=sigma,
        fit_statistic=fit, candidates=cands, criterion=crit, rss=sol.rss, dof=sol.dof,
        penalty=sol.penalty, kernels=H, kernel=H[idx], n_pixels=n_pixels)

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
  :func:`estimate_noise` on the blurred image: about 1 when the model
  explains the data up to white noise; well above 1 flags a wrong kernel size,
  misaligned images or a non-linear tone curve. On nearly noise-free data σ
  measures residual image structure instead, and the statistic falls below 1.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdeconv import _checks, _conv, _gram, _noise_level, _priors, _regularizers
from jdeconv._solvers import exact

__all__ = ["AutoRegularization", "DEFAULT_CANDIDATES", "METHODS", "TERMS",
           "choose_regularization", "select"]

METHODS = ("gcv", "upre", "discrepancy", "lcurve")
TERMS = ("tikhonov", "smooth")
# 0 (the prior alone) and 25 weights, three per decade, from 1e-8 to 1.
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
        _checks.check_choice("regularizer term", t, TERMS)
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


def _basis(terms, kernel_shape) -> np.ndarray:
    n = kernel_shape[0] * kernel_shape[1]
    R = np.zeros((n, n))
    if "tikhonov" in terms:
        R += np.eye(n)
    if "smooth" in terms:
        R += _regularizers.laplacian(kernel_shape)
    return R


# ----------------------------------------------------------------------------
# The jitted core: every candidate at once
# ----------------------------------------------------------------------------

def _dof(gram, R, mu, free, eq):
    """Trace of the influence matrix of the estimate restricted to the face ``free``."""
    dt = gram.dtype
    fz = free.astype(dt)
    both = free[:, None] & free[None, :]
    Mm = jnp.where(both, gram + mu * R, 0) + jnp.diag(1 - fz)
    chol = jnp.linalg.cholesky(Mm)
    KR = jax.scipy.linalg.cho_solve((chol, True), jnp.where(both, R, 0))
    dof = jnp.sum(fz) - mu * jnp.trace(KR)
    if eq:
        u = jax.scipy.linalg.cho_solve((chol, True), fz)
        Gu = jnp.where(both, gram, 0) @ u
        dof = dof - jnp.dot(Gu, u) / jnp.dot(fz, u)
    return dof


def _core(x, y, candidates, R, mask, tol, *, kernel_shape, mode, prior, max_iters):
    (k, l) = kernel_shape
    n = k * l
    dt = x.dtype
    ne = _gram.normal_equations(x, y, kernel_shape, mode)
    gram, rhs = ne.gram, ne.rhs
    scale = jnp.trace(gram) / n
    R = R.astype(dt)
    flat_mask = jnp.ones((n,), bool) if mask is None else mask.reshape(-1)
    eq = prior in ("sum_to_one", "simplex")

    def solve(w):
        mu = w * scale
        res = exact.solve_qp(gram + mu * R, rhs, prior=prior, mask=flat_mask,
                             max_iters=max_iters, tol=tol)
        free = flat_mask & ~res.active_set
        return res.solution, _dof(gram, R, mu, free, eq), res.converged

    H, dof, converged = jax.vmap(solve)(candidates)
    # RSS: one real convolution, the rest by the exact quadratic expansion.
    xp = _conv._pad(x, kernel_shape, mode)
    h0 = H[0]
    r0 = _conv._valid_conv(xp, h0.reshape(kernel_shape), "auto") - y
    rss0 = jnp.vdot(r0, r0)
    g0 = gram @ h0 - rhs
    D = H - h0
    GD = D @ gram
    rss = jnp.maximum(rss0 + 2 * (D @ g0) + jnp.sum(GD * D, axis=1), 0)
    penalty = jnp.einsum("ci,ij,cj->c", H, R, H)
    r = _noise_level.DEFAULT_PATCH_SIZE
    if _noise_level.enough_patches(y.shape, r):
        sigma = _noise_level._noise_impl(y, r)
    else:  # too small to estimate: fit_statistic becomes NaN
        sigma = jnp.asarray(jnp.nan, dt)
    return H.reshape((-1,) + kernel_shape), rss, dof, penalty, sigma, converged


@functools.lru_cache(maxsize=32)
def _compiled(kernel_shape, mode, prior, max_iters):
    return jax.jit(functools.partial(_core, kernel_shape=kernel_shape, mode=mode, prior=prior,
                                     max_iters=max_iters))


# ----------------------------------------------------------------------------
# Selection (host side, a few numbers per candidate)
# ----------------------------------------------------------------------------

def _menger_curvature(a, b):
    """Signed curvature of the polyline (a, b) at its inner points (NaN at the ends);
    positive where the curve turns like the corner of an L-curve."""
    c = np.full(len(a), np.nan)
    for i in range(1, len(a) - 1):
        p, q, r = (np.array([a[j], b[j]]) for j in (i - 1, i, i + 1))
        cross = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
        den = np.linalg.norm(q - p) * np.linalg.norm(r - q) * np.linalg.norm(r - p)
        if den > 0:
            c[i] = -2 * cross / den
    return c


def _smooth3(c):
    """Mean of each value and its two neighbours on the grid (edges repeated)."""
    p = np.concatenate([c[:1], c, c[-1:]])
    return (p[:-2] + p[1:-1] + p[2:]) / 3


def select(method, rss, dof, penalty, candidates, n_pixels, sigma, *, smooth=True):
    """Criterion values per candidate and the chosen index (host-side numpy).

    Args:
      method: one of :data:`METHODS`.
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
    rss = np.asarray(rss, np.float64)
    dof = np.asarray(dof, np.float64)
    n = float(n_pixels)
    s2 = float(sigma) ** 2
    if method in ("gcv", "upre"):
        if method == "gcv":
            crit = (rss / n) / np.maximum(1 - dof / n, 1e-12) ** 2
        else:
            crit = rss + 2 * s2 * dof
        score = np.log(np.maximum(crit, 1e-300))
        if smooth and len(score) > 2:
            score = _smooth3(score)
        return crit, int(np.nanargmin(score))
    if method == "discrepancy":
        crit = rss / np.maximum(s2 * (n - dof), np.finfo(np.float64).tiny) - 1
        ok = np.nonzero(crit <= 0)[0]
        return crit, int(ok.max()) if ok.size else 0
    # lcurve: corner of largest curvature among the positive weights
    pos = np.nonzero(np.asarray(candidates) > 0)[0]
    crit = np.full(rss.shape, np.nan)
    if pos.size < 3:
        return crit, int(pos[0]) if pos.size else 0
    curv = _menger_curvature(np.log(np.maximum(rss[pos], 1e-300)),
                             np.log(np.maximum(np.asarray(penalty, np.float64)[pos], 1e-300)))
    crit[pos] = -curv  # minimised
    if np.all(np.isnan(curv)):
        return crit, int(pos[0])
    return crit, int(pos[np.nanargmax(curv)])


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
      >>> from jdeconv._autoreg import choose_regularization
      >>> x = jdeconv.natural_image("camera", shape=96)
      >>> h = jdeconv.gaussian_kernel(7, 1.2)
      >>> y = jdeconv.add_gaussian_noise(jdeconv.conv2d(x, h), 0.01, seed=0)
      >>> auto = choose_regularization(x, y, 7)
      >>> auto.method, auto.weights["smooth"] > 0
      ('gcv', True)
    """
    from jdeconv import _estimate  # the engine imports this module lazily

    x, y, solve_mode, kshape = _estimate._prepare(x, y, kernel_shape, mode, dtype,
                                                  batched=False)
    prior = _priors.check_prior(prior)
    terms = _check_terms(terms)
    method = _checks.check_choice("method", method, METHODS)
    cand = _check_candidates(candidates, x.dtype)
    max_iters = _estimate._check_int("max_iters", max_iters)
    mask = _priors.check_support(support, kshape)
    if tol is None:
        tol = exact.default_tol(x.dtype, kshape[0] * kshape[1])
    tol = float(tol)
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol}.")
    R = jnp.asarray(_basis(terms, kshape), x.dtype)
    f = _compiled(kshape, solve_mode, prior, max_iters)
    H, rss, dof, penalty, sigma, _ = f(x, y, jnp.asarray(cand, x.dtype), R, mask,
                                       jnp.asarray(tol, x.dtype))
    n_pixels = int(np.prod(y.shape))
    rss_h, dof_h, pen_h = (np.asarray(a, np.float64) for a in (rss, dof, penalty))
    sig = float(sigma)
    crit, idx = select(method, rss_h, dof_h, pen_h, cand, n_pixels, sig)
    w = float(cand[idx])
    weights = {name: 0.0 for name in _regularizers.REGULARIZERS}
    for t in terms:
        weights[t] = w
    resid_sd = math.sqrt(max(rss_h[idx], 0.0) / max(n_pixels - dof_h[idx], 1.0))
    fit = resid_sd / sig if sig > 0 else (math.nan if math.isnan(sig) else math.inf)
    return AutoRegularization(
        weights=weights, weight=w, index=idx, method=method,
        noise_sigma=sigma, fit_statistic=jnp.asarray(fit, x.dtype),
        candidates=jnp.asarray(cand, x.dtype), criterion=jnp.asarray(crit, x.dtype),
        rss=rss, dof=dof, penalty=penalty, kernels=H, kernel=H[idx], n_pixels=n_pixels)

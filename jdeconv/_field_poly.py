"""Smoothly varying PSFs: kernels whose taps are polynomials of the position, solved exactly.

Model
-----
With ``(u, v) ∈ [-1, 1]²`` the position of an output pixel scaled over the fitted
(valid) area, and ``φ_j(u, v) = P_a(u) P_b(v)`` the Legendre products of total
degree ``a + b <= d`` (ordered ``1, u, v, P2(u), u v, P2(v), …``; ``nb =
(d+1)(d+2)/2`` terms)::

    h(u, v) = Σ_j φ_j(u, v) h_j,
    y(p)    = Σ_j φ_j(p) (h_j * x)(p) = (h(p) * x)(p),

the same "kernel at the output pixel" model as :mod:`jdeconv._field_conv`, with the
bilinear tile weights replaced by polynomials (Alard 2000; Bramich's and the sfft
difference-imaging codes). Beyond the fitted area the coordinates are clamped to
``[-1, 1]`` (the kernel of the nearest fitted position).

Normal equations (no im2col)
----------------------------
The unknowns ``θ = [h_0, …, h_{nb-1}]`` (``nb · k l``) satisfy ``G θ = b`` with blocks::

    G_ij = Σ_p φ_i(p) φ_j(p) X_p X_pᵀ,      b_i = Aᵀ (φ_i ⊙ y),

``X_p`` the patch of ``x`` under output pixel ``p``. ``G_ij`` is a *weighted* Gram
matrix with the pixel weights ``φ_i φ_j``. A product of two Legendre products is a
combination of the Legendre products ``ψ_r`` of degree ``<= 2d`` (exact
linearisation, ``numpy.polynomial.legendre.legmul``), so only the Grams ``Ĝ_r``
weighted by ``ψ_r`` are formed: ``G_ij = Σ_r C_ijr Ĝ_r``. As ``|ψ_r| <= 1``,
``Ĝ_r = G(ψ_r + 1) − G(1)`` with :func:`jdeconv._weighted_gram.weighted_normal_equations`
(non-negative weights: FFT correlations or patch strips, never the whole im2col
matrix) and the unweighted :func:`jdeconv.normal_equations`; ``b_i`` is
:func:`jdeconv.conv2d_adjoint_kernel` of the weighted blurred image. Cost:
``(2d+1)(2d+2)/2`` weighted Grams (15 for ``d = 2``, 45 for ``d = 4``, instead of the
21 and 120 pairs).

Prior at evaluation points
--------------------------
The prior (e.g. the simplex) is imposed on the kernels at a grid of evaluation points
``e`` (``h_e = Σ_j φ_j(e) h_j ∈ C``), which makes it a QP with general linear
constraints ``E θ ∈ C^{n_e}``, ``E = Φ_e ⊗ I``. It is solved by ADMM (Boyd et al. 2011,
§5; the splitting of OSQP): ``θ ← (G + ρ EᵀE)⁻¹ (b + ρ Eᵀ(z − w))`` (one Cholesky
factorisation per value of ρ), ``z ← Π_C(α E θ + (1−α) z + w)`` (over-relaxed, α = 1.6;
one projection per evaluation point, vmapped), ``w ← w + α E θ + (1−α) z − z``, with ρ
rescaled by ``sqrt(primal / dual)`` every 25 iterations when that ratio is off by more
than 5 (OSQP's rule; one new factorisation). It stops when the primal residual
``||E θ − z|| <= tol · max(||E θ||, ||z||)`` and the dual residual ``ρ ||Eᵀ(z − z_prev)||
<= tol · ||ρ Eᵀ w||``; θ then satisfies the prior at the evaluation points to
``tol`` (relative). With ``prior="none"`` the system is solved directly.

Masks, weights and a background
-------------------------------
Pixel weights ``w`` (``mask``, ``weights``, ``saturation``, ``nan``: the rule of
:func:`jdeconv.make_problem`) enter every Gram: ``Ĝ_r = G(w (ψ_r + 1)) − G(w)`` and
``b_i = Aᵀ (w φ_i y)``. A background polynomial ``Σ_t c_t β_t`` (Legendre, over the
fitted area, as in :func:`jdeconv.estimate_kernel`) adds the columns ``β_t``: the
blocks ``C_it = Aᵀ (w φ_i β_t)``, ``B = Σ w β β ᵀ`` and ``b_B = Σ w β y`` are
eliminated by the Schur complement (``G − C B⁻¹ Cᵀ``, ``b − C B⁻¹ b_B``) and
``c = B⁻¹ (b_B − Cᵀ θ)`` is recovered after the solve. A free gain would tie the
sums of the kernels at all evaluation points together (a constraint on θ the
evaluation-point projections do not express); it is not available, nor is the
Huber loss: use :func:`jdeconv.estimate_psf_field` for those.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jdeconv import (_conv, _field, _field_conv, _geometry, _gram, _names, _priors,
                     _regularizers, _validation, _weighted_gram)
from jdeconv._solution import RESULTS

__all__ = ["PolynomialPSF", "estimate_psf_polynomial", "polynomial_terms"]

MAX_DEGREE = 6
DEFAULT_TOL = {"float64": 1e-6, "float32": 1e-4}
DEFAULT_MAX_ITERS = 20_000
_HI = lax.Precision.HIGHEST
_RELAX = 1.6


def polynomial_terms(degree: int) -> tuple[tuple[int, int], ...]:
    """The exponents ``(a, b)`` of the basis ``P_a(u) P_b(v)``, ``a + b <= degree``.

    Example:
      >>> from jdeconv._field_poly import polynomial_terms
      >>> polynomial_terms(2)
      ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
    """
    return tuple((t - b, b) for t in range(degree + 1) for b in range(t + 1))


def _legendre(u, degree: int):
    out = [jnp.ones_like(u), u]
    for n in range(1, degree):
        out.append(((2 * n + 1) * u * out[n] - n * out[n - 1]) / (n + 1))
    return out[:degree + 1]


def _scaled(pos, lo, hi):
    """Position -> [-1, 1] over [lo, hi] (clamped; 0 when the range is one pixel)."""
    if hi <= lo:
        return jnp.zeros_like(pos)
    return jnp.clip(2 * (pos - lo) / (hi - lo) - 1, -1.0, 1.0)


def _axis_basis(rows, cols, window, degree):
    """Legendre values along rows (degree+1, len(rows)) and columns."""
    r_lo, r_hi, c_lo, c_hi = window
    return _legendre(_scaled(rows, r_lo, r_hi), degree), _legendre(_scaled(cols, c_lo, c_hi),
                                                                    degree)


def _basis_images(rows, cols, window, degree):
    """``φ_j`` on the grid ``rows × cols``: (nb, len(rows), len(cols))."""
    pu, pv = _axis_basis(rows, cols, window, degree)
    return jnp.stack([pu[a][:, None] * pv[b][None, :] for a, b in polynomial_terms(degree)])


def _basis_points(rows, cols, window, degree):
    """``φ_j`` at points ``(rows[i], cols[i])``: (len(rows), nb)."""
    pu, pv = _axis_basis(rows, cols, window, degree)
    return jnp.stack([pu[a] * pv[b] for a, b in polynomial_terms(degree)], axis=-1)


# ----------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PolynomialPSF:
    """A kernel whose taps are polynomials of the position (a pytree).

    Attributes:
      coefficients: (nb, k, l) kernels ``h_j`` of the basis ``φ_j``
        (:func:`polynomial_terms` order).
      evaluation_points: ``(rows, cols)`` (1-D arrays): the grid where the prior holds.
      result: :class:`jdeconv.RESULTS` code of the solve.
      primal_residual, dual_residual: the relative ADMM residuals reached (0
        for ``prior="none"``).
      iterations: ADMM iterations.
      window: ``(row_lo, row_hi, col_lo, col_hi)``: image positions of the first
        and last fitted output pixels (they map to ``u, v = ∓1``).
      background: (nbg,) background coefficients (Legendre over the fitted
        area; empty without a background, None for a hand-built field).
      degree, image_shape, mode, kernel_shape, prior: the settings used.
      background_degree: the background's polynomial degree (None: none).
    """

    coefficients: Any
    evaluation_points: Any
    result: Any
    primal_residual: Any
    dual_residual: Any
    iterations: Any
    background: Any = None
    window: tuple = ()
    degree: int = 0
    image_shape: tuple = ()
    mode: str = "valid"
    kernel_shape: tuple = ()
    prior: str = "simplex"
    background_degree: int | None = None

    @property
    def converged(self):
        """Whether the solve succeeded (a bool array)."""
        return jnp.asarray(self.result) == RESULTS.successful

    def kernel_at(self, row, col) -> jax.Array:
        """``h(u, v) = Σ_j φ_j(u, v) h_j`` at image position(s) ``(row, col)`` (broadcast).

        Returns:
          Array of shape ``broadcast(row, col).shape + (k, l)``.
        """
        dtype = self.coefficients.dtype
        row, col = jnp.asarray(row, dtype), jnp.asarray(col, dtype)
        shape = np.broadcast_shapes(row.shape, col.shape)
        phi = _basis_points(jnp.broadcast_to(row, shape).ravel(),
                            jnp.broadcast_to(col, shape).ravel(), self.window, self.degree)
        h = jnp.tensordot(phi, self.coefficients, axes=1, precision=_HI)
        return h.reshape(shape + tuple(self.kernel_shape))

    def kernels_on_grid(self, rows, cols) -> jax.Array:
        """Kernels at every ``(rows[i], cols[j])``: (len(rows), len(cols), k, l)."""
        r, c = jnp.meshgrid(jnp.asarray(rows), jnp.asarray(cols), indexing="ij")
        return self.kernel_at(r, c)

    def render(self, x, mode: str | None = None, *, method: str = "auto") -> jax.Array:
        """The forward model ``y(p) = Σ_j φ_j(p) conv2d(x, h_j, mode)(p)``.

        Args:
          x: an image in the original's coordinates (usually the original).
          mode: geometry (default: the mode of the estimate).
          method: ``"auto"``, ``"direct"`` or ``"fft"``.
        """
        mode = _validation.check_mode(self.mode if mode is None else mode)
        _validation.check_method(method)
        x = _validation.as_float_array("x (image)", x)
        x, h = _validation.common_float(x, self.coefficients)
        _validation.check_kernel_fits(x.shape, h.shape[1:], mode)
        out = _render(x, h, window=tuple(self.window), degree=self.degree, mode=mode,
                      method=method)
        if self.background_degree is not None and self.background is not None:
            u, v = _field_conv._output_positions(x.shape, tuple(h.shape[1:]), mode)
            basis = _basis_images(jnp.asarray(u, x.dtype), jnp.asarray(v, x.dtype),
                                  tuple(self.window), self.background_degree)
            out = out + jnp.tensordot(jnp.asarray(self.background, x.dtype), basis, axes=1)
        return out


jax.tree_util.register_dataclass(
    PolynomialPSF,
    data_fields=["coefficients", "evaluation_points", "result", "primal_residual",
                 "dual_residual", "iterations", "background"],
    meta_fields=["window", "degree", "image_shape", "mode", "kernel_shape", "prior",
                 "background_degree"])


@functools.partial(jax.jit, static_argnames=("window", "degree", "mode", "method"))
def _render(x, coefficients, *, window, degree, mode, method):
    kshape = tuple(coefficients.shape[1:])
    u, v = _field_conv._output_positions(x.shape, kshape, mode)
    pu, pv = _axis_basis(jnp.asarray(u, x.dtype), jnp.asarray(v, x.dtype), window, degree)
    terms = polynomial_terms(degree)
    a = jnp.stack([pu[i] for i, _ in terms])
    b = jnp.stack([pv[j] for _, j in terms])

    def step(acc, term):
        h, wa, wb = term
        return acc + wa[:, None] * wb[None, :] * _conv.conv2d(x, h, mode, method=method), None

    out = jnp.zeros((u.shape[0], v.shape[0]), x.dtype)
    return lax.scan(step, out, (coefficients, a, b))[0]


# ----------------------------------------------------------------------------
# Normal equations and the solve (jitted)
# ----------------------------------------------------------------------------

def _product_coefficients(degree: int) -> np.ndarray:
    """``C[(i, j), r]``: ``φ_i φ_j = Σ_r C[(i, j), r] ψ_r``, ``ψ`` the basis of degree ``2d``.

    Exact Legendre linearisation (``numpy.polynomial.legendre.legmul``) per axis:
    ``P_a P_c = Σ_e L[a, c, e] P_e``; pairs ``i <= j`` in row-major order.
    """
    terms, terms2 = polynomial_terms(degree), polynomial_terms(2 * degree)
    index = {t: r for r, t in enumerate(terms2)}
    unit = np.eye(degree + 1)
    lin = np.zeros((degree + 1, degree + 1, 2 * degree + 1))
    for a in range(degree + 1):
        for c in range(degree + 1):
            prod = np.polynomial.legendre.legmul(unit[a], unit[c])
            lin[a, c, :prod.size] = prod
    rows = []
    for i, (a, b) in enumerate(terms):
        for (c, d) in terms[i:]:
            row = np.zeros(len(terms2))
            for e in range(a + c + 1):
                for f in range(b + d + 1):
                    if lin[a, c, e] and lin[b, d, f]:
                        row[index[(e, f)]] += lin[a, c, e] * lin[b, d, f]
            rows.append(row)
    return np.asarray(rows)


@functools.partial(jax.jit, static_argnames=("kernel_shape", "window", "degree",
                                             "background_degree"))
def _polynomial_normal_equations(x, y, pw, *, kernel_shape, window, degree,
                                 background_degree=None):
    """``G`` (nb kl, nb kl), ``b`` (nb kl,), the plain Gram and the background elimination.

    ``G_ij = Σ_r C[(i, j), r] Ĝ_r`` with ``Ĝ_r`` the Gram weighted by the degree-``2d``
    basis image ``ψ_r`` (``(2d+1)(2d+2)/2`` weighted Grams instead of ``nb (nb+1)/2``),
    times the pixel weights ``pw`` (None: all 1). With a background, ``G`` and ``b`` are
    the Schur-reduced system and the last output ``(C, B⁻¹ factor, b_B)`` recovers it.
    """
    k, l = kernel_shape
    n = k * l
    M, N = y.shape
    rows = jnp.arange(M, dtype=x.dtype) + window[0]
    cols = jnp.arange(N, dtype=x.dtype) + window[2]
    psi = _basis_images(rows, cols, window, 2 * degree)  # |ψ_r| <= 1
    phi = psi[:len(polynomial_terms(degree))]  # the degree-d terms come first
    nb = phi.shape[0]
    if pw is None:
        plain = _gram.normal_equations(x, y, kernel_shape, "valid")
        ghat = lax.map(
            lambda w: _weighted_gram.weighted_normal_equations(x, y, w + 1, kernel_shape).gram,
            psi) - plain.gram[None]
    else:
        y = jnp.where(pw > 0, y, 0)
        plain = _weighted_gram._wne_jit(x, y, pw, kernel_shape, "auto")
        ghat = lax.map(
            lambda w: _weighted_gram._wne_jit(x, y, pw * (w + 1), kernel_shape, "auto").gram,
            psi) - plain.gram[None]
        y = pw * y
    pairs = jnp.einsum("pr,rij->pij", jnp.asarray(_product_coefficients(degree), x.dtype), ghat,
                       precision=_HI)
    iu, ju = np.triu_indices(nb)
    blocks = jnp.zeros((nb, nb, n, n), x.dtype).at[iu, ju].set(pairs)
    blocks = blocks.at[ju, iu].set(jnp.swapaxes(pairs, 1, 2))
    gram = jnp.transpose(blocks, (0, 2, 1, 3)).reshape(nb * n, nb * n)
    rhs = lax.map(lambda p: _conv.conv2d_adjoint_kernel(x, p * y, kernel_shape, "valid"), phi)
    rhs = rhs.reshape(nb * n)
    if background_degree is None:
        return gram, rhs, plain.gram, None
    # y holds w·y here; the background columns β_t, weighted: C_it = Aᵀ(w φ_i β_t)
    beta = _weighted_gram._basis((M, N), background_degree, x.dtype)
    wb = beta if pw is None else pw[None] * beta
    cross = lax.map(lambda b: lax.map(
        lambda p: _conv.conv2d_adjoint_kernel(x, p * b, kernel_shape, "valid").ravel(), phi),
        wb)  # (nbg, nb, n)
    cross = jnp.transpose(cross, (1, 2, 0)).reshape(nb * n, -1)
    bb = jnp.einsum("smn,tmn->st", wb, beta, precision=_HI)
    b_bg = jnp.einsum("tmn,mn->t", beta, y, precision=_HI)
    chol = jnp.linalg.cholesky(bb)
    binv_ct = jax.scipy.linalg.cho_solve((chol, True), cross.T)
    gram = gram - jnp.matmul(cross, binv_ct, precision=_HI)
    rhs = rhs - jnp.matmul(binv_ct.T, b_bg, precision=_HI)
    return gram, rhs, plain.gram, (cross, chol, b_bg)


@functools.partial(jax.jit, static_argnames=("kernel_shape", "prior", "max_iters"))
def _admm(gram, rhs, phi_eval, support, tol, *, kernel_shape, prior, max_iters):
    n = kernel_shape[0] * kernel_shape[1]
    nb = phi_eval.shape[1]
    dtype = gram.dtype
    ete = jnp.kron(phi_eval.T @ phi_eval, jnp.eye(n, dtype=dtype))
    project = jax.vmap(lambda h: _priors.project_prior(h.reshape(kernel_shape), prior,
                                                        support).ravel())

    def E(theta):  # (nb n,) -> (n_e, n): kernels at the evaluation points
        return jnp.matmul(phi_eval, theta.reshape(nb, n), precision=_HI)

    def Et(z):  # (n_e, n) -> (nb n,)
        return jnp.matmul(phi_eval.T, z, precision=_HI).reshape(nb * n)

    def factor(rho):  # the inverse, from a Cholesky factorisation (matvecs are cheapest)
        chol = jnp.linalg.cholesky(gram + rho * ete)
        return jax.scipy.linalg.cho_solve((chol, True), jnp.eye(nb * n, dtype=dtype))

    def solve(inverse, r):
        return jnp.matmul(inverse, r, precision=_HI)

    rho0 = (jnp.trace(gram) / jnp.trace(ete)).astype(dtype)
    tiny = jnp.finfo(dtype).tiny

    def cond(s):
        it, *_, rp, rd = s
        return (it < max_iters) & ((rp > tol) | (rd > tol)) & jnp.isfinite(rp + rd)

    def body(s):
        it, theta, z, w, rho, chol, _, _ = s
        theta = solve(chol, rhs + rho * Et(z - w))
        ez = E(theta)
        relaxed = _RELAX * ez + (1 - _RELAX) * z  # over-relaxation (OSQP's alpha)
        z_new = project(relaxed + w)
        w = w + relaxed - z_new
        prim = jnp.linalg.norm(ez - z_new)
        dual = rho * jnp.linalg.norm(Et(z_new - z))
        rp = prim / jnp.maximum(jnp.maximum(jnp.linalg.norm(ez), jnp.linalg.norm(z_new)), tiny)
        rd = dual / jnp.maximum(rho * jnp.linalg.norm(Et(w)), tiny)
        # OSQP's rule: rho *= sqrt(rp / rd) every 25 iterations when the ratio is off by 5x
        # (w is the scaled dual variable u / rho: rescaled with rho); one new factorisation.
        ratio = jnp.sqrt(jnp.maximum(rp, tiny) / jnp.maximum(rd, tiny))
        update = (it % 25 == 24) & ((ratio > jnp.sqrt(5.0)) | (ratio < 1 / jnp.sqrt(5.0)))
        scale = jnp.where(update, jnp.clip(ratio, 1e-3, 1e3), 1.0).astype(dtype)
        chol = lax.cond(update, lambda: factor(rho * scale), lambda: chol)
        return it + 1, theta, z_new, w / scale, rho * scale, chol, rp, rd

    # start from the unconstrained least-squares field, projected at the evaluation points
    theta0 = jnp.linalg.solve(gram + rho0 * 1e-9 * ete, rhs)
    z0 = project(E(theta0))
    one = jnp.ones((), dtype)  # residuals before the first iteration (> any tol that stops)
    state = (jnp.asarray(0, jnp.int32), theta0, z0, jnp.zeros_like(z0), rho0, factor(rho0),
             one, one)
    it, theta, _, _, _, _, rp, rd = lax.while_loop(cond, body, state)
    finite = jnp.all(jnp.isfinite(theta)) & jnp.isfinite(rp + rd)
    return theta, it, rp, rd, RESULTS.where((rp <= tol) & (rd <= tol), finite)


# ----------------------------------------------------------------------------
# The estimate
# ----------------------------------------------------------------------------

def estimate_psf_polynomial(x, y, kernel_shape, *, degree: int = 2,
                            mode: _names.Mode = "valid", prior: _names.Prior = "simplex",
                            regularization=None, evaluation_grid=(8, 8), support=None,
                            max_iters: int = DEFAULT_MAX_ITERS, tol: float | None = None,
                            dtype=None, mask=None, weights=None, saturation=None,
                            nan: str = "raise", gain: bool = False, background="none",
                            loss: str = "l2") -> PolynomialPSF:
    """Estimates a kernel whose taps are polynomials of degree ``degree`` in the position.

    See the module docstring for the model, the normal equations and the solver.

    Args:
      x: original image, (m, n).
      y: blurred image in ``mode`` geometry; only its valid part is fitted.
      kernel_shape: (k, l) or an int.
      degree: total degree ``d >= 0`` of the polynomials (0 = one kernel).
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      prior: ``"simplex"``, ``"nonneg"``, ``"sum_to_one"`` or ``"none"``,
        imposed at the evaluation points.
      regularization: None or quadratic weights ``{"tikhonov": w, "smooth": w}``
        applied to every coefficient kernel (relative to the image energy, as
        in :func:`jdeconv.estimate_kernel`).
      evaluation_grid: ``(ey, ex)`` points, evenly spread over the fitted area
        (corners included), where the prior holds; at least ``degree + 1`` each.
      support: optional (k, l) bool mask of taps allowed to be non-zero.
      max_iters: ADMM iteration cap.
      tol: relative tolerance on the ADMM residuals (default 1e-6 in float64,
        1e-4 in float32).
      dtype: None (keep the inputs' float type), ``"float32"`` or ``"float64"``.
      mask, weights, saturation, nan: pixels that do not count and per-pixel
        inverse variances, as in :func:`jdeconv.estimate_kernel`.
      gain: must be False (see the module docstring); use
        :func:`jdeconv.estimate_psf_field` for a gain per tile.
      background: ``"none"``, ``"constant"``, ``"plane"`` or a polynomial
        degree, over the fitted area (the result's ``background``).
      loss: must be ``"l2"``; use :func:`jdeconv.estimate_psf_field` for
        ``"huber"``.

    Returns:
      A :class:`PolynomialPSF`.

    Raises:
      ValueError, TypeError: for inputs that do not fit.

    Example:
      >>> import numpy as np, jdeconv
      >>> from jdeconv._field_poly import estimate_psf_polynomial
      >>> x = np.random.default_rng(0).random((24, 24))
      >>> h = np.full((3, 3), 1 / 9)
      >>> p = estimate_psf_polynomial(x, jdeconv.conv2d(x, h), 3, degree=1)
      >>> p.coefficients.shape, bool(np.allclose(p.kernel_at(5.0, 9.0), h, atol=1e-6))
      ((3, 3, 3), True)
    """
    mode = _validation.check_mode(mode)
    kshape = _validation.as_shape(kernel_shape)
    degree = _validation.check_int(degree, "degree", minimum=0, maximum=MAX_DEGREE, example=2)
    prior = _validation.check_prior(prior)
    ey, ex = _validation.as_shape(evaluation_grid, "evaluation_grid", example="(8, 8)")
    if min(ey, ex) < degree + 1:
        raise ValueError(f"evaluation_grid {(ey, ex)} has fewer than degree + 1 = {degree + 1} "
                         "points along an axis: the prior would not pin the polynomial down; "
                         f"use at least ({degree + 1}, {degree + 1}).")
    if isinstance(regularization, str):
        raise ValueError("regularization='auto' is not available for polynomial fields; give "
                         "None or weights like {'smooth': 1e-3}.")
    reg_weights = _regularizers.check_regularization(regularization)
    if reg_weights["l1"] > 0:
        raise ValueError("the l1 regulariser is not available for polynomial fields; use "
                         "'tikhonov' or 'smooth'.")
    max_iters = _validation.check_int(max_iters, "max_iters", minimum=1,
                                      maximum=_validation.MAX_ITERS)
    gain, bg_degree, loss = _field._photometric(gain, background, loss)
    if gain:
        raise ValueError("gain=True is not available for polynomial fields (a free gain ties the "
                         "kernels' sums at every evaluation point together); use "
                         "estimate_psf_field(..., gain=True) for a gain per tile, or divide y by "
                         "a known gain first.")
    if loss != "l2":
        raise ValueError(f"loss={loss!r} is not available for polynomial fields; use "
                         "estimate_psf_field(..., loss='huber'), or mask the outliers (mask=).")
    tap_mask = _priors.check_support(support, kshape)
    x, y = _field._check_pair(x, y, kshape, mode, dtype, allow_nan=nan == "mask")
    pw, _ = _field.pixel_weights(x, y, kshape, mode, mask=mask, weights=weights,
                                 saturation=saturation, nan=nan)
    yv = _field._valid_part(y, kshape, mode, x.shape)
    if pw is not None:
        pw = jnp.asarray(_field._valid_part(pw, kshape, mode, x.shape), x.dtype)
        yv = jnp.where(pw > 0, jnp.nan_to_num(yv), 0)
    M, N = yv.shape
    nb = len(polynomial_terms(degree))
    unknowns = nb * kshape[0] * kshape[1] + _weighted_gram.background_size(bg_degree)
    used = M * N if pw is None else int(np.sum(pw > 0))
    if used < unknowns:
        what = "pixels" if pw is None else "used pixels (after masking)"
        raise ValueError(f"the valid part of the blurred image has {used} {what} but a degree-"
                         f"{degree} field of {kshape} kernels has {unknowns} unknowns; use a "
                         "lower degree, a smaller kernel, a larger image or mask fewer pixels.")
    if float(np.ptp(np.asarray(x))) == 0:
        raise ValueError("the original image is constant: no kernel can be identified.")
    dt = x.dtype
    tol = DEFAULT_TOL[np.dtype(dt).name] if tol is None else _validation.check_tol(tol)
    (k, l) = kshape
    r_lo, c_lo = k - 1 - _geometry.centre(kshape)[0], l - 1 - _geometry.centre(kshape)[1]
    window = (float(r_lo), float(r_lo + M - 1), float(c_lo), float(c_lo + N - 1))
    gram, rhs, plain, elim = _polynomial_normal_equations(
        x, yv, pw, kernel_shape=kshape, window=window, degree=degree,
        background_degree=bg_degree)
    scale = jnp.trace(plain) / (k * l)
    reg = _regularizers.quadratic_matrix(
        {name: jnp.asarray(v, dt) for name, v in reg_weights.items()}, scale, kshape, dt)
    gram = gram + jnp.kron(jnp.eye(nb, dtype=dt), reg)
    rows = jnp.linspace(window[0], window[1], ey, dtype=dt)
    cols = jnp.linspace(window[2], window[3], ex, dtype=dt)
    rr, cc = jnp.meshgrid(rows, cols, indexing="ij")
    phi_eval = _basis_points(rr.ravel(), cc.ravel(), window, degree)
    if prior == "none" and tap_mask is None:
        theta = jnp.linalg.solve(gram, rhs)
        it, rp, rd = jnp.asarray(0, jnp.int32), jnp.zeros((), dt), jnp.zeros((), dt)
        code = RESULTS.where(jnp.asarray(True), jnp.all(jnp.isfinite(theta)))
    else:
        theta, it, rp, rd, code = _admm(gram, rhs, phi_eval, tap_mask, jnp.asarray(tol, dt),
                                        kernel_shape=kshape, prior=prior, max_iters=max_iters)
    if elim is None:
        bg = jnp.zeros((0,), dt)
    else:
        cross, chol, b_bg = elim
        bg = jax.scipy.linalg.cho_solve((chol, True),
                                        b_bg - jnp.matmul(cross.T, theta, precision=_HI))
    return PolynomialPSF(
        coefficients=theta.reshape((nb,) + kshape), evaluation_points=(rows, cols), result=code,
        primal_residual=rp, dual_residual=rd, iterations=it, background=bg, window=window,
        degree=degree, image_shape=tuple(x.shape), mode=mode, kernel_shape=kshape, prior=prior,
        background_degree=bg_degree)

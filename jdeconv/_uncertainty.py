"""Trust in an estimate: per-tap standard errors, conditioning, calibration targets.

Standard errors
---------------
With ``y = A h + e``, ``e`` i.i.d. ``N(0, sigma^2)`` (noise in ``y`` only), the
estimate solves ``min 1/2 h^T G_r h - b^T h`` under the prior, with the data normal
matrix ``G = A^T A``, the regularised one ``G_r = G + w s R`` and ``b = A^T y``, so
``Cov(b) = sigma^2 G``.  On the final face (free taps ``F``, the active set held
fixed) the estimate is affine in ``b``: ``h_F = K_e b_F + const`` with

    K_e = K - e K 1 1^T K / (1^T K 1),    K = (G_r)_FF^-1,

(``e = 1`` when the prior has ``sum(h) = 1``: ``K_e`` is ``K`` projected onto
the tangent space ``1^T dh = 0`` of the equality), hence

    Cov(h) = sigma^2 K_e G K_e     (zero rows/columns outside F),

and the standard error of tap ``i`` is ``sqrt(Cov(h)_ii)``.  Unregularised,
``K_e G K_e = K_e``.  Caveats: a regularised estimate is biased (``E h != h_true``)
and the standard error measures its spread only, not its error; taps at a bound
or outside the support get 0 (the formula conditions on the active set, which is
right when the active set is stable under the noise); noise in ``x`` is not
included.

Conditioning
------------
``hᵀ G h = sum_i (A h)_i^2`` is, away from the borders, the energy of the kernel's
spectrum weighted by the original's power spectrum, so a kernel frequency that
the original does not excite cannot be determined.  :func:`conditioning_report`
gives the spectrum of ``G``, its condition number and effective rank, and the
original's power on the kernel's ``k x l`` DFT grid.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdeconv import _gram, _names, _validation
from jdeconv._implicit import face_inverse

__all__ = [
    "CalibrationTarget",
    "ConditioningReport",
    "IdentifiabilityWarning",
    "KernelUncertainty",
    "TARGET_KINDS",
    "conditioning_report",
    "kernel_standard_errors",
    "make_target",
    "residual_noise_sigma",
]

TARGET_KINDS = _names.TARGET_KINDS

#: Default relative threshold below which a kernel frequency counts as not excited.
DEFAULT_FREQUENCY_RTOL = 1e-6


class IdentifiabilityWarning(UserWarning):
    """The requested kernel size is not identifiable from this original."""


# ----------------------------------------------------------------------------
# Per-tap standard errors
# ----------------------------------------------------------------------------


class KernelUncertainty(NamedTuple):
    """Result of :func:`kernel_standard_errors`.

    Attributes:
      standard_errors: (n,) standard error of each tap (row-major kernel
        raveling); 0 at a bound and outside the support.
      covariance: (n, n) ``sigma^2 K_e G K_e`` (module docstring).
      free: (n,) bool, the taps the standard errors refer to.
    """

    standard_errors: jax.Array
    covariance: jax.Array
    free: jax.Array


@jax.jit
def kernel_standard_errors(gram_reg, active, noise_sigma, *, eq, gram_data=None
                           ) -> KernelUncertainty:
    """Per-tap standard errors of the estimate from the noise level and the face's inverse.

    Jitted, pure JAX (usable under ``jax.jit`` and ``jax.vmap``, differentiable in
    ``gram_reg``, ``gram_data`` and ``noise_sigma``).

    Args:
      gram_reg: (n, n) normal matrix the estimate solved with, regularisation
        included (``G + w s R``).
      active: (n,) bool, taps fixed at zero (``QPResult.active_set``: outside the
        support or at the bound ``h_i = 0``).
      noise_sigma: standard deviation of the i.i.d. noise in ``y`` (scalar).
      eq: whether the prior has ``sum(h) = 1`` (``prior in ("simplex",
        "sum_to_one")``).
      gram_data: (n, n) data normal matrix ``A^T A``; default ``gram_reg``
        (right for an unregularised estimate).

    Returns:
      :class:`KernelUncertainty` ``(standard_errors, covariance, free)``.

    Notes:
      ``Cov(h) = sigma^2 K_e G K_e`` with ``K_e = K - e K 1 1^T K / (1^T K 1)``,
      ``K = (G_reg)_FF^-1`` on the free taps ``F = ~active``.  With
      regularisation the estimate is biased; the standard error is of its
      variance only.

    Example:
      >>> import jax.numpy as jnp
      >>> G = jnp.diag(jnp.array([4.0, 4.0, 1.0]))
      >>> u = kernel_standard_errors(G, jnp.array([False, False, True]), 0.5, eq=False)
      >>> [round(float(v), 6) for v in u.standard_errors]  # 0.5 / sqrt(4)
      [0.25, 0.25, 0.0]
      >>> u = kernel_standard_errors(G, jnp.array([False, False, True]), 0.5, eq=True)
      >>> [round(float(v), 6) for v in u.standard_errors]  # h0 = 1 - h1
      [0.176777, 0.176777, 0.0]
    """
    gram_reg = jnp.asarray(gram_reg)
    dt = jnp.result_type(gram_reg, jnp.float32)
    gram_reg = gram_reg.astype(dt)
    gram_data = gram_reg if gram_data is None else jnp.asarray(gram_data, dt)
    free = ~jnp.asarray(active, bool)
    n = gram_reg.shape[-1]
    if gram_reg.shape != (n, n) or gram_data.shape != (n, n) or free.shape != (n,):
        raise ValueError(f"gram_reg {gram_reg.shape}, gram_data {gram_data.shape} and active "
                         f"{free.shape} must have shapes (n, n), (n, n) and (n,).")
    ke = face_inverse(gram_reg, free, eq=eq)
    sigma = jnp.asarray(noise_sigma, dt)
    hi = jax.lax.Precision.HIGHEST
    cov = sigma**2 * jnp.matmul(jnp.matmul(ke, gram_data, precision=hi), ke, precision=hi)
    cov = 0.5 * (cov + cov.T)
    se = jnp.sqrt(jnp.maximum(jnp.diagonal(cov), 0))
    return KernelUncertainty(se, cov, free)


def face_standard_errors(gram_data, gram_reg, free, noise_sigma, *, eq) -> np.ndarray:
    """:func:`kernel_standard_errors`' standard errors on the host (NumPy, float64).

    For checks of a finished estimate (the border-mass warning), where a
    compiled program per kernel size would cost more than the algebra.

    Args:
      gram_data, gram_reg: (n, n) data and regularised normal matrices.
      free: (n,) bool, the taps off their bounds and inside the support.
      noise_sigma: the noise level of ``y``.
      eq: whether the prior has ``sum(h) = 1``.

    Returns:
      (n,) standard errors, 0 off the free taps.

    Example:
      >>> import numpy as np
      >>> G = np.diag([4.0, 4.0, 1.0])
      >>> face_standard_errors(G, G, np.array([True, True, False]), 0.5, eq=True).round(6)
      array([0.176777, 0.176777, 0.      ])
    """
    free = np.asarray(free, bool)
    out = np.zeros(free.shape)
    if not free.any():
        return out
    G = np.asarray(gram_data, np.float64)[np.ix_(free, free)]
    K = np.linalg.inv(np.asarray(gram_reg, np.float64)[np.ix_(free, free)])
    K = 0.5 * (K + K.T)
    if eq:
        k1 = K.sum(axis=1)
        K = K - np.outer(k1, k1) / k1.sum()
    var = float(noise_sigma) ** 2 * np.einsum("ij,jk,ki->i", K, G, K)
    out[free] = np.sqrt(np.maximum(var, 0.0))
    return out


@jax.jit
def residual_noise_sigma(residual_sum_sq, num_observations, gram_reg, active, *, eq,
                         gram_data=None):
    """Noise level of ``y`` from the residual of the estimate: ``sqrt(RSS / (m - dof))``.

    Jitted, pure JAX.  ``dof = tr(K_e G)`` is the effective number of parameters of the
    estimate on its face (``|F| - e`` without regularisation, fewer with it), so
    ``E[RSS] = sigma^2 (m - dof)`` for an unbiased linear estimate and a correct
    model.  A regularised estimate's bias adds its misfit ``||A (E h - h_true)||^2``
    to the residual, so with strong regularisation this over-estimates ``sigma``.

    Args:
      residual_sum_sq: ``||y - conv2d(x, h)||^2`` over the pixels the estimate used
        (``2 * quadratic_value(ne, h)``; compute it from the residual itself in
        float32, where ``h^T G h - 2 b^T h + ||y||^2`` cancels).
      num_observations: ``m``, the number of those pixels.
      gram_reg, active, eq, gram_data: as in :func:`kernel_standard_errors`.

    Returns:
      scalar ``sigma``.

    Example:
      >>> import jax.numpy as jnp
      >>> act = jnp.array([False, False, True])
      >>> round(float(residual_noise_sigma(9.0, 11, jnp.eye(3), act, eq=False)), 6)  # 9 / (11 - 2)
      1.0
    """
    gram_reg = jnp.asarray(gram_reg)
    dt = jnp.result_type(gram_reg, jnp.float32)
    gram_reg = gram_reg.astype(dt)
    gram_data = gram_reg if gram_data is None else jnp.asarray(gram_data, dt)
    free = ~jnp.asarray(active, bool)
    ke = face_inverse(gram_reg, free, eq=eq)
    dof = jnp.sum(ke * gram_data.T)  # tr(K_e G)
    m = jnp.asarray(num_observations, dt)
    return jnp.sqrt(jnp.maximum(jnp.asarray(residual_sum_sq, dt), 0) / jnp.maximum(m - dof, 1))


# ----------------------------------------------------------------------------
# Conditioning report
# ----------------------------------------------------------------------------


class ConditioningReport(NamedTuple):
    """Result of :func:`conditioning_report` (NumPy values, computed eagerly).

    Attributes:
      kernel_shape: ``(k, l)``.
      eigenvalues: (k*l,) eigenvalues of the normal matrix ``A^T A``, descending.
      condition_number: ``lambda_max / lambda_min`` (``inf`` if singular).
      effective_rank: number of eigenvalues above ``rank_threshold``.
      rank_threshold: the threshold used (module docstring of
        :func:`conditioning_report`).
      frequencies: (k, l, 2) kernel DFT frequencies ``(f_row, f_col)`` in cycles
        per pixel (``np.fft.fftfreq`` order).
      excitation: (k, l) the original's power around each kernel frequency,
        relative to its largest value.
      unexcited: (k, l) bool, ``excitation < frequency_rtol``.
      identifiable: the kernel size is determined by this original (full
        effective rank and every kernel frequency excited).
      message: a one-paragraph summary (the warning text when not identifiable).
    """

    kernel_shape: tuple[int, int]
    eigenvalues: np.ndarray
    condition_number: float
    effective_rank: int
    rank_threshold: float
    frequencies: np.ndarray
    excitation: np.ndarray
    unexcited: np.ndarray
    identifiable: bool
    message: str


def _hann(m: int) -> np.ndarray:
    return np.sin(np.pi * (np.arange(m) + 0.5) / m) ** 2


def _excitation(x: np.ndarray, k: int, l: int) -> np.ndarray:
    """Power of the windowed ``x`` averaged over the cell around each kernel frequency."""
    m, n = x.shape
    xw = x * _hann(m)[:, None] * _hann(n)[None, :]
    mp, np_ = k * math.ceil(m / k), l * math.ceil(n / l)  # >= image, a multiple of the kernel
    power = np.abs(np.fft.fft2(xw, s=(mp, np_))) ** 2
    # nearest kernel frequency p/k of each image frequency u/mp (cell of mp/k bins)
    rows = np.rint(np.arange(mp) * k / mp).astype(int) % k
    cols = np.rint(np.arange(np_) * l / np_).astype(int) % l
    cell = (rows[:, None] * l + cols[None, :]).ravel()
    total = np.bincount(cell, weights=power.ravel(), minlength=k * l)
    count = np.bincount(cell, minlength=k * l)
    return (total / count).reshape(k, l)


def conditioning_report(x, kernel_shape, mode: str = "valid", *, gram=None,
                        noise_sigma=None, max_standard_error=None, rank_rtol=None,
                        frequency_rtol: float = DEFAULT_FREQUENCY_RTOL,
                        warn: bool = False) -> ConditioningReport:
    """How well an original ``x`` determines a kernel of ``kernel_shape``.

    Eager (it returns NumPy values and a message); call it outside ``jax.jit``.

    Args:
      x: original image (m, n).
      kernel_shape: ``(k, l)`` or an int.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"`` (``"same"`` is
        solved in the valid geometry, as the estimate does).
      gram: the normal matrix ``A^T A`` if already computed (else formed here).
      noise_sigma: noise level of ``y``; when given, an eigen-direction of ``G``
        also counts as undetermined when its standard error
        ``noise_sigma / sqrt(lambda)`` exceeds ``max_standard_error``.
      max_standard_error: default ``0.1 / (k l)``, a tenth of the mean tap of a
        kernel that sums to one.
      rank_rtol: relative eigenvalue threshold; default ``k l * eps`` of ``x``'s
        dtype.
      frequency_rtol: a kernel frequency whose relative excitation is below this
        counts as not excited.
      warn: issue an :class:`IdentifiabilityWarning` with the message when the
        size is not identifiable.

    Returns:
      :class:`ConditioningReport`.

    Notes:
      ``rank_threshold = max(rank_rtol * lambda_max, (noise_sigma /
      max_standard_error)^2)``.  The excitation of kernel frequency
      ``(p/k, q/l)`` is the mean of ``|FFT(w x)|^2`` (``w``: a separable Hann
      window, against leakage from the image borders) over the image
      frequencies nearest to it, i.e. over a cell of width ``1/k x 1/l``: the
      band a ``k x l`` kernel's spectrum cannot resolve further.

    Example:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> conditioning_report(rng.random((32, 32)), (3, 3)).identifiable
      True
      >>> u = np.arange(32.0) - 16
      >>> blob = np.exp(-np.add.outer(u**2, u**2) / 128)  # smooth: no fine detail
      >>> report = conditioning_report(blob, (3, 3))
      >>> report.identifiable, int(report.unexcited.sum()), f"{report.condition_number:.0e}"
      (False, 8, '4e+10')
    """
    if not isinstance(warn, bool):
        raise TypeError(f"warn must be True or False, got {warn!r}.")
    mode = _validation.check_mode(mode)
    ks = _validation.as_shape(kernel_shape, maximum=_validation.MAX_KERNEL_SIDE)
    xa = _validation.as_float_array("x (original)", x)
    _validation.check_kernel_fits(xa.shape, ks, mode)
    k, l = ks
    n = k * l
    frequency_rtol = _validation.check_real(frequency_rtol, "frequency_rtol", positive=True,
                                            example="1e-6")
    if gram is None:
        gram = _gram.gram_matrix(xa, ks, mode)
    g = np.asarray(gram, dtype=np.float64)
    _validation.check_shape_is("gram", g.shape, (n, n), "It must be A^T A for this kernel size.")
    eig = np.linalg.eigvalsh(0.5 * (g + g.T))[::-1]
    lmax = float(eig[0])
    lmin = float(eig[-1])
    cond = lmax / lmin if lmin > 0 else math.inf
    if rank_rtol is None:
        rank_rtol = n * float(np.finfo(np.dtype(xa.dtype)).eps)
    rank_rtol = _validation.check_real(rank_rtol, "rank_rtol", nonnegative=True, example="1e-12")
    threshold = rank_rtol * max(lmax, 0.0)
    if noise_sigma is not None:
        sigma = _validation.check_real(noise_sigma, "noise_sigma", nonnegative=True,
                                       example="0.01")
        if max_standard_error is None:
            max_standard_error = 0.1 / n
        mse = _validation.check_real(max_standard_error, "max_standard_error", positive=True,
                                     example="0.004")
        threshold = max(threshold, (sigma / mse) ** 2)
    rank = int(np.sum(eig > threshold))

    power = _excitation(np.asarray(xa, dtype=np.float64), k, l)
    pmax = float(power.max())
    excitation = power / pmax if pmax > 0 else np.zeros_like(power)
    unexcited = excitation < frequency_rtol
    freqs = np.stack(np.meshgrid(np.fft.fftfreq(k), np.fft.fftfreq(l), indexing="ij"), axis=-1)
    identifiable = rank == n and not bool(unexcited.any())

    summary = (f"kernel size {ks} from a {tuple(xa.shape)} original ({mode!r}): condition "
               f"number {cond:.3g}, effective rank {rank}/{n}")
    if identifiable:
        message = summary + "; every kernel frequency is excited: identifiable."
    else:
        bad = [f"({freqs[i, j, 0]:+.3g}, {freqs[i, j, 1]:+.3g})"
               for i, j in zip(*np.nonzero(unexcited))]
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        message = (summary + ". The kernel is not identifiable from this original"
                   + (f": it does not excite {len(bad)} of the {n} kernel frequencies "
                      f"(cycles/pixel) {shown}" if bad else "")
                   + ". Use a smaller kernel, an original with more texture (a random "
                   "calibration target, jdeconv target), or regularisation.")
    if warn and not identifiable:
        warnings.warn(message, IdentifiabilityWarning, stacklevel=2)
    return ConditioningReport(ks, eig, cond, rank, float(threshold), freqs, excitation,
                              unexcited, identifiable, message)


# ----------------------------------------------------------------------------
# Calibration targets
# ----------------------------------------------------------------------------


class CalibrationTarget(NamedTuple):
    """Result of :func:`make_target`.

    Attributes:
      image: (m, n) float64 in [0, 1], the printable target.
      conditioning: its :class:`ConditioningReport` for the requested kernel
        size, or None.
    """

    image: np.ndarray
    conditioning: ConditioningReport | None


def make_target(shape, *, kind: str = "binary", seed: int = 0, kernel_shape=None,
                mode: str = "valid") -> CalibrationTarget:
    """A printable random calibration target, with the conditioning it predicts.

    White noise excites every spatial frequency evenly, so it determines a kernel
    well; the binary target (i.i.d. black/white pixels) has the largest variance
    a [0, 1] image can have, hence the smallest standard errors for a given noise
    level (:func:`kernel_standard_errors`).

    Args:
      shape: ``(m, n)`` or an int for a square.
      kind: ``"binary"`` (i.i.d. 0/1, probability 1/2) or ``"noise"`` (i.i.d.
        uniform on [0, 1]).
      seed: seed of ``np.random.default_rng``.
      kernel_shape: when given, the :func:`conditioning_report` of the target for
        this kernel size is attached.
      mode: geometry of the conditioning report.

    Returns:
      :class:`CalibrationTarget` ``(image, conditioning)``.

    Example:
      >>> t = make_target((64, 64), seed=1, kernel_shape=(5, 5))
      >>> t.image.shape, sorted(set(t.image.ravel().tolist()))
      ((64, 64), [0.0, 1.0])
      >>> t.conditioning.identifiable, t.conditioning.effective_rank
      (True, 25)
    """
    m, n = _validation.as_shape(shape, "shape", example="(512, 512)")
    _validation.check_image_size((m, n), "target")
    kind = _validation.check_choice("target kind", kind, TARGET_KINDS)
    rng = np.random.default_rng(_validation.check_seed(seed))
    if kind == "binary":
        image = (rng.random((m, n)) < 0.5).astype(np.float64)
    else:
        image = rng.random((m, n))
    report = None
    if kernel_shape is not None:
        report = conditioning_report(image, kernel_shape, mode)
    return CalibrationTarget(image, report)

"""What optics users report about a kernel: moments, FWHM, ellipticity, MTF, MTF50.

Every function is pure JAX on one (k, l) kernel: it works under ``jax.jit``,
``jax.grad`` and ``jax.vmap`` (vmap over a stack of kernels for a batch), and
returns a NamedTuple or an array.

Coordinates: ``x`` runs along columns, ``y`` along rows (downwards, as an
image is displayed), both measured from the kernel's centre tap
``((k-1)/2, (l-1)/2)`` — the convention of :mod:`jdeconv._psf_models`, where a
zero-offset model is centred there. Angles are measured from the ``x`` axis
towards the ``y`` axis, in radians, in ``[-π/2, π/2)``.

Frequencies are in cycles per pixel; 0.5 is the Nyquist frequency.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jdeconv import _names
from jdeconv import _validation as _v

#: ``2 √(2 ln 2)``: the FWHM of a Gaussian in units of its σ.
GAUSSIAN_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

_TINY = 1e-300


class KernelMoments(NamedTuple):
    """Zeroth, first and central second moments of a kernel.

    Attributes:
      total: sum of the taps (the moments below are normalised by it).
      dx, dy: centroid offset from the centre tap, along columns / rows.
      mu_xx, mu_yy, mu_xy: central second moments (variances and covariance
        of the taps seen as a distribution).
      sigma_major, sigma_minor: square roots of the eigenvalues of the
        second-moment matrix (``sigma_major >= sigma_minor``).
      angle: direction of the major axis, from the x (column) axis towards
        the y (row) axis, in ``[-π/2, π/2)``.
    """

    total: jax.Array
    dx: jax.Array
    dy: jax.Array
    mu_xx: jax.Array
    mu_yy: jax.Array
    mu_xy: jax.Array
    sigma_major: jax.Array
    sigma_minor: jax.Array
    angle: jax.Array


class FWHM(NamedTuple):
    """Full widths at half maximum along the principal axes, in pixels.

    Attributes:
      major: FWHM along the major axis (the direction ``angle``).
      minor: FWHM along the minor axis (perpendicular to it).
      mean: geometric mean ``√(major · minor)`` (the FWHM of the circle of
        the same area).
      angle: direction of the major axis (from :func:`kernel_moments`).
    """

    major: jax.Array
    minor: jax.Array
    mean: jax.Array
    angle: jax.Array


class Ellipticity(NamedTuple):
    """Shape of a kernel from its second moments (``a``, ``b``: ``sigma_major``, ``sigma_minor``).

    Attributes:
      ellipticity: ``(a − b) / (a + b)``; 0 for a round kernel, → 1 for a line.
      flattening: ``1 − b / a``.
      axis_ratio: ``b / a``.
      angle: direction of the major axis.
    """

    ellipticity: jax.Array
    flattening: jax.Array
    axis_ratio: jax.Array
    angle: jax.Array


class MTF(NamedTuple):
    """Modulation transfer function of a kernel.

    Attributes:
      frequency: radial frequencies ``0 … 0.5`` cycles/pixel, (n_freq,).
      radial: the MTF averaged over directions at each radial frequency,
        (n_freq,); ``radial[0] == 1``.
      grid_frequency: frequencies of each axis of ``grid``, ``−0.5 … 0.5``,
        (2 n_freq − 1,).
      grid: the 2-D MTF ``|H(f_y, f_x)| / |H(0, 0)|`` on that grid (rows: f_y,
        columns: f_x), (2 n_freq − 1, 2 n_freq − 1).
    """

    frequency: jax.Array
    radial: jax.Array
    grid_frequency: jax.Array
    grid: jax.Array


# ----------------------------------------------------------------------------
# Validation (eager; static properties only, so it runs under jit and vmap)
# ----------------------------------------------------------------------------

def _kernel(kernel, name: str = "kernel"):
    h = _v.as_float_array(name, kernel, ndim=None)
    if h.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D (k, l) array, got shape {tuple(h.shape)} ({h.ndim}-D). "
            "For a stack of kernels use jax.vmap, e.g. jax.vmap(jdeconv.fwhm)(kernels).")
    return h


def _coords(shape, dtype):
    k, l = shape
    y = jnp.arange(k, dtype=dtype) - (k - 1) / 2
    x = jnp.arange(l, dtype=dtype) - (l - 1) / 2
    return x, y


def _safe_sqrt(a):
    """``√max(a, 0)`` with a finite (zero) gradient at 0."""
    pos = a > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, a, 1.0)), 0.0)


def _wrap_angle(angle):
    """Angle modulo π, in ``[-π/2, π/2)``."""
    return jnp.mod(angle + jnp.pi / 2, jnp.pi) - jnp.pi / 2


# ----------------------------------------------------------------------------
# Moments
# ----------------------------------------------------------------------------

def _moments(h) -> KernelMoments:
    x, y = _coords(h.shape, h.dtype)
    total = jnp.sum(h)
    w = h / total
    wx = jnp.sum(w, axis=0)  # marginal over rows, (l,)
    wy = jnp.sum(w, axis=1)  # (k,)
    dx = jnp.sum(wx * x)
    dy = jnp.sum(wy * y)
    xc, yc = x - dx, y - dy
    mu_xx = jnp.sum(wx * xc * xc)
    mu_yy = jnp.sum(wy * yc * yc)
    mu_xy = jnp.sum(w * (yc[:, None] * xc[None, :]))
    half_trace = 0.5 * (mu_xx + mu_yy)
    root = _safe_sqrt((0.5 * (mu_xx - mu_yy)) ** 2 + mu_xy ** 2)
    major = _safe_sqrt(half_trace + root)
    minor = _safe_sqrt(half_trace - root)
    round_ = root <= 1e-12 * half_trace
    angle = jnp.where(round_, 0.0,
                      0.5 * jnp.arctan2(2 * mu_xy, jnp.where(round_, 1.0, mu_xx - mu_yy)))
    return KernelMoments(total, dx, dy, mu_xx, mu_yy, mu_xy, major, minor, _wrap_angle(angle))


def kernel_moments(kernel) -> KernelMoments:
    """Centroid and second moments of a kernel seen as a distribution of its taps.

    The taps are normalised by their sum first, so the kernel need not sum to
    one (but it should be mostly nonnegative: negative taps of an
    unconstrained estimate bias the moments).

    Args:
      kernel: (k, l) array.

    Returns:
      A :class:`KernelMoments`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdeconv._kernel_metrics import kernel_moments
      >>> h = jnp.zeros((5, 5)).at[2, 3].set(1.0)   # a delta one column right of centre
      >>> m = kernel_moments(h)
      >>> float(m.dx), float(m.dy), float(m.sigma_major)
      (1.0, 0.0, 0.0)
    """
    return _moments_jit(_kernel(kernel))


_moments_jit = jax.jit(_moments)


# ----------------------------------------------------------------------------
# FWHM
# ----------------------------------------------------------------------------

def _dirichlet(t, n: int):
    """Periodic sinc interpolating ``n`` samples: 1 at ``t = 0``, 0 at other integers.

    For even ``n`` the Nyquist term is split symmetrically (``sin/tan`` form),
    so the interpolant of a real kernel is real.
    """
    s = jnp.sin(jnp.pi * t / n)
    small = jnp.abs(s) < 1e-12
    s_safe = jnp.where(small, 1.0, s)
    num = jnp.sin(jnp.pi * jnp.where(small, 0.5, t))
    if n % 2:
        val = num / (n * s_safe)
    else:
        c = jnp.cos(jnp.pi * jnp.where(small, 0.5, t) / n)
        val = num * c / (n * s_safe)
    return jnp.where(small, 1.0, val)


def _interp_line(h, centre_row, centre_col, direction, t):
    """Trigonometric interpolant of ``h`` at ``centre + t · (cos, sin)(direction)``."""
    k, l = h.shape
    rows = centre_row + t * jnp.sin(direction)
    cols = centre_col + t * jnp.cos(direction)
    dr = _dirichlet(rows[:, None] - jnp.arange(k, dtype=h.dtype)[None, :], k)
    dc = _dirichlet(cols[:, None] - jnp.arange(l, dtype=h.dtype)[None, :], l)
    return jnp.sum((dr @ h) * dc, axis=1)


def _width(h, centre_row, centre_col, direction, n_samples: int):
    """Distance between the two half-maximum crossings of a line profile."""
    k, l = h.shape
    reach = 0.5 * math.hypot(k - 1, l - 1) + 0.5
    t = jnp.linspace(-reach, reach, n_samples, dtype=h.dtype)
    f = _interp_line(h, centre_row, centre_col, direction, t)
    ip = jnp.argmax(f)
    half = 0.5 * f[ip]
    idx = jnp.arange(n_samples)
    below = f < half
    right = below & (idx > ip)
    left = below & (idx < ip)
    ir = jnp.argmax(right)                          # first sample below, right of the peak
    il = n_samples - 1 - jnp.argmax(left[::-1])     # last sample below, left of the peak

    # Linear interpolation between the samples that bracket each crossing...
    i_out = jnp.stack([ir, il])
    i_in = jnp.stack([ir - 1, il + 1])
    f_out, f_in = f[i_out], f[i_in]
    frac = (f_in - half) / jnp.where(f_in == f_out, 1.0, f_in - f_out)
    cross = t[i_in] + frac * (t[i_out] - t[i_in])
    lo = jnp.minimum(t[i_in], t[i_out])
    hi = jnp.maximum(t[i_in], t[i_out])

    def profile(s, h, centre_row, centre_col, direction):
        return _interp_line(h, centre_row, centre_col, direction, s)

    # ... then Newton steps on the interpolant, kept inside the bracket (values only) ...
    fixed = jax.lax.stop_gradient((h, centre_row, centre_col, direction))
    cross, half_fixed = jax.lax.stop_gradient((cross, half))
    for _ in range(3):
        val, slope = jax.jvp(lambda c: profile(c, *fixed), (cross,), (jnp.ones_like(cross),))
        step = (val - half_fixed) / jnp.where(slope == 0, 1.0, slope)
        cross = jnp.clip(jnp.where(slope == 0, cross, cross - step), lo, hi)
    # ... and one more, differentiable: the implicit-function gradient of the crossing.
    val, slope = jax.jvp(lambda c: profile(c, *fixed), (cross,), (jnp.ones_like(cross),))
    val = profile(cross, h, centre_row, centre_col, direction)
    cross = cross - (val - half) / jnp.where(slope == 0, 1.0, slope)
    found = jnp.any(right) & jnp.any(left)
    return jnp.where(found, cross[0] - cross[1], jnp.nan)


def fwhm(kernel, *, method: str = "profile", n_samples: int = 513) -> FWHM:
    """Full width at half maximum along the kernel's major and minor axes.

    The axes are the principal axes of the second moments
    (:func:`kernel_moments`), through the centroid.

    * ``method="profile"`` (the default, what an optics user measures): the
      kernel is interpolated between taps by trigonometric (periodic sinc)
      interpolation — exact for a band-limited, well-sampled PSF that decays
      to ~0 at the kernel's edges — and sampled along each axis; the width is
      the distance between the half-maximum crossings on either side of the
      profile's maximum, located by linear interpolation between samples and
      refined by Newton steps on the interpolant. NaN when the profile does
      not fall to half its maximum inside the kernel.
    * ``method="moments"``: ``2 √(2 ln 2) σ`` with σ the moment width along
      each axis — the FWHM of the Gaussian with the same second moments:
      exact for Gaussians, too large for heavy-tailed PSFs (Moffat, Airy),
      and always defined.

    Args:
      kernel: (k, l) array (mostly nonnegative).
      method: ``"profile"`` or ``"moments"`` (static).
      n_samples: samples along each axis for ``"profile"`` (static; the
        crossings are refined beyond this resolution).

    Returns:
      An :class:`FWHM` (pixels).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdeconv._kernel_metrics import fwhm
      >>> r2 = (jnp.arange(21.0) - 10)[:, None] ** 2 + (jnp.arange(21.0) - 10)[None, :] ** 2
      >>> h = jnp.exp(-r2 / (2 * 2.0 ** 2))        # Gaussian, σ = 2
      >>> round(float(fwhm(h).major), 4), round(float(fwhm(h, method="moments").minor), 4)
      (4.7096, 4.7096)
    """
    method = _v.check_choice("FWHM method", method, _names.FWHM_METHODS)
    n_samples = _v.check_int(n_samples, "n_samples", minimum=16, maximum=1_000_000, example=513)
    return _fwhm_jit(_kernel(kernel), method, n_samples)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _fwhm_jit(h, method: str, n_samples: int) -> FWHM:
    m = _moments(h)
    if method == "moments":
        major = GAUSSIAN_FWHM_PER_SIGMA * m.sigma_major
        minor = GAUSSIAN_FWHM_PER_SIGMA * m.sigma_minor
    else:
        k, l = h.shape
        centre_row = (k - 1) / 2 + m.dy
        centre_col = (l - 1) / 2 + m.dx
        directions = jnp.stack([m.angle, m.angle + jnp.pi / 2])
        major, minor = jax.vmap(lambda d: _width(h, centre_row, centre_col, d, n_samples))(
            directions)
    return FWHM(major, minor, _safe_sqrt(major * minor), m.angle)


def ellipticity(kernel) -> Ellipticity:
    """Ellipticity of a kernel from its second moments.

    With ``a``, ``b`` the moment widths along the major and minor axes
    (``sigma_major``, ``sigma_minor`` of :func:`kernel_moments`), the
    ellipticity is ``(a − b) / (a + b)`` (0 for a round PSF; an elliptical
    Gaussian with σ = 3 and 1.5 has 1/3); the flattening ``1 − b/a`` and the
    axis ratio ``b/a`` are returned too.

    Args:
      kernel: (k, l) array (mostly nonnegative).

    Returns:
      An :class:`Ellipticity`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdeconv._kernel_metrics import ellipticity
      >>> ellipticity(jnp.ones((3, 9))).axis_ratio.round(4)   # a 3 × 9 box: b/a = √(8/80)
      Array(0.3162, dtype=float64)
    """
    return _ellipticity_jit(_kernel(kernel))


@jax.jit
def _ellipticity_jit(h) -> Ellipticity:
    m = _moments(h)
    a, b = m.sigma_major, m.sigma_minor
    ratio = b / jnp.where(a > 0, a, 1.0)
    ratio = jnp.where(a > 0, ratio, 1.0)
    return Ellipticity((1 - ratio) / (1 + ratio), 1 - ratio, ratio, m.angle)


# ----------------------------------------------------------------------------
# MTF
# ----------------------------------------------------------------------------

def _otf_points(h, fy, fx):
    """``|Σ h[a, b] exp(−2πi (f_y a + f_x b))|`` at the points ``(fy[p], fx[p])``."""
    k, l = h.shape
    a = jnp.arange(k, dtype=h.dtype)
    b = jnp.arange(l, dtype=h.dtype)
    er = jnp.exp(-2j * jnp.pi * (fy[:, None] * a[None, :]))
    ec = jnp.exp(-2j * jnp.pi * (fx[:, None] * b[None, :]))
    return jnp.abs(jnp.sum((er @ h.astype(er.dtype)) * ec, axis=1))


def _radial(h, f, n_angles: int):
    """Direction-averaged MTF at radial frequencies ``f`` (any shape)."""
    phi = jnp.arange(n_angles, dtype=h.dtype) * (jnp.pi / n_angles)
    fy = (f.reshape(-1)[:, None] * jnp.sin(phi)[None, :]).reshape(-1)
    fx = (f.reshape(-1)[:, None] * jnp.cos(phi)[None, :]).reshape(-1)
    vals = _otf_points(h, fy, fx).reshape(-1, n_angles)
    return (jnp.mean(vals, axis=1) / jnp.abs(jnp.sum(h))).reshape(f.shape)


def _mtf_options(n_freq, n_angles):
    n_freq = _v.check_int(n_freq, "n_freq", minimum=2, maximum=100_000, example=65)
    n_angles = _v.check_int(n_angles, "n_angles", minimum=1, maximum=100_000, example=90)
    return n_freq, n_angles


def mtf(kernel, *, n_freq: int = 65, n_angles: int = 90) -> MTF:
    """Modulation transfer function: the modulus of the normalised OTF.

    The OTF is the discrete-time Fourier transform of the kernel,
    ``H(f_y, f_x) = Σ_{a,b} h[a, b] exp(−2πi (f_y a + f_x b))``, evaluated at
    exact frequencies (no zero-padding or FFT grid), and normalised by
    ``H(0, 0) = Σ h``. The radial MTF averages ``|H| / |H(0)|`` over
    ``n_angles`` directions in ``[0, π)`` (``|H(−f)| = |H(f)|`` for a real
    kernel) at each radial frequency from 0 to 0.5 cycles/pixel.

    Args:
      kernel: (k, l) array with a nonzero sum.
      n_freq: number of radial frequencies in ``[0, 0.5]`` (static); the 2-D
        grid has ``2 n_freq − 1`` points per axis.
      n_angles: directions averaged for the radial MTF (static).

    Returns:
      An :class:`MTF`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdeconv._kernel_metrics import mtf
      >>> m = mtf(jnp.ones((1, 1)), n_freq=5)     # a delta passes every frequency
      >>> m.frequency.tolist(), m.radial.tolist()
      ([0.0, 0.125, 0.25, 0.375, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0])
    """
    n_freq, n_angles = _mtf_options(n_freq, n_angles)
    return _mtf_jit(_kernel(kernel), n_freq, n_angles)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _mtf_jit(h, n_freq: int, n_angles: int) -> MTF:
    freq = jnp.linspace(0.0, 0.5, n_freq, dtype=h.dtype)
    axis = jnp.linspace(-0.5, 0.5, 2 * n_freq - 1, dtype=h.dtype)
    g = axis.shape[0]
    fy = jnp.broadcast_to(axis[:, None], (g, g)).reshape(-1)
    fx = jnp.broadcast_to(axis[None, :], (g, g)).reshape(-1)
    grid = (_otf_points(h, fy, fx) / jnp.abs(jnp.sum(h))).reshape(g, g)
    return MTF(freq, _radial(h, freq, n_angles), axis, grid)


def mtf50(kernel, *, n_freq: int = 65, n_angles: int = 90) -> jax.Array:
    """The spatial frequency (cycles/pixel) where the radial MTF first falls to 0.5.

    The crossing is bracketed on the ``n_freq`` grid of :func:`mtf` and
    located by bisection on the radial MTF itself (to float precision), so
    the answer does not depend on the grid beyond the bracket. A Gaussian of
    width σ gives ``√(ln 2 / 2) / (π σ) ≈ 0.1874 / σ``.

    Args:
      kernel: (k, l) array with a nonzero sum.
      n_freq: grid used to bracket the crossing (static).
      n_angles: directions averaged (static).

    Returns:
      A 0-d array; NaN when the MTF stays above 0.5 up to 0.5 cycles/pixel
      (a kernel sharper than the pixel grid resolves).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdeconv._kernel_metrics import mtf50
      >>> r2 = (jnp.arange(21.0) - 10)[:, None] ** 2 + (jnp.arange(21.0) - 10)[None, :] ** 2
      >>> round(float(mtf50(jnp.exp(-r2 / 8.0))), 5)   # σ = 2: 0.18739 / 2
      0.0937
    """
    n_freq, n_angles = _mtf_options(n_freq, n_angles)
    return _mtf50_jit(_kernel(kernel), n_freq, n_angles)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _mtf50_jit(h, n_freq: int, n_angles: int):
    freq = jnp.linspace(0.0, 0.5, n_freq, dtype=h.dtype)
    radial = _radial(h, freq, n_angles)
    below = radial <= 0.5
    i = jnp.maximum(jnp.argmax(below), 1)
    lo0, hi0 = freq[i - 1], freq[i]

    def bisect(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        above = _radial(h, mid[None], n_angles)[0] > 0.5
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 60, bisect, (lo0, hi0))
    root = jax.lax.stop_gradient(0.5 * (lo + hi))
    # One Newton step at the root: no change in value, and the implicit-function
    # gradient -(∂R/∂h) / R'(f) with respect to the kernel.
    value, slope = jax.jvp(lambda f: _radial(h, f[None], n_angles)[0], (root,),
                           (jnp.ones_like(root),))
    slope = jax.lax.stop_gradient(slope)
    root = root - (value - 0.5) / jnp.where(slope == 0, -1.0, slope)
    return jnp.where(jnp.any(below), root, jnp.nan)


__all__ = ["FWHM", "MTF", "Ellipticity", "KernelMoments", "GAUSSIAN_FWHM_PER_SIGMA",
           "ellipticity", "fwhm", "kernel_moments", "mtf", "mtf50"]

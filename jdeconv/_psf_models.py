"""Parametric PSF models: pure JAX functions from a parameter dict to a kernel.

Every model ``fn(params, kernel_shape)`` returns a (k, l) kernel on the
simplex (nonnegative, summing to one), is differentiable in its parameters and
works under ``jax.jit``, ``jax.grad`` and ``jax.vmap`` (``kernel_shape`` is
static). Parameters are a dict of scalars (the Zernike coefficients are a
vector), so a model is an ordinary pytree function.

Conventions (shared with :mod:`jdeconv._kernel_metrics`):

* ``x`` runs along columns, ``y`` along rows (downwards). A model with zero
  offsets is centred on the tap ``((k-1)/2, (l-1)/2)`` (between two taps for
  an even size); ``dx``, ``dy`` move the centre by that many pixels along
  columns / rows.
* Angles are in radians from the ``x`` axis towards the ``y`` axis.
* The continuous profile is sampled at the tap centres (not integrated over
  pixels); sharp edges (defocus disk, motion segment) are anti-aliased by the
  smooth step ``S(d) = ½(1 + erf(√π d))``, whose slope at the edge is 1 like
  the pixel-coverage ramp, and which keeps every tap differentiable. The
  sampled profile is then divided by its sum.

:data:`PSF_MODELS` maps each name to a :class:`ParametricPSF`: the function,
a default initial guess ``init(kernel_shape, moments=None)`` (from the kernel
size, or from the :func:`jdeconv._kernel_metrics.kernel_moments` of a
nonparametric estimate), the parameter names, which are positive (fitted on a
log scale by :func:`jdeconv.fit_psf`; the models themselves do not clip), and
documented bounds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdeconv import _validation as _v
from jdeconv._kernel_metrics import KernelMoments

#: First zero of the Bessel function J1: the Airy disk's first dark ring is at
#: ``r = J1_ZERO / (π · D/(λ f))``.
J1_ZERO = 3.8317059702075123

#: The Zernike terms of the ``zernike`` model, by Noll index.
ZERNIKE_TERMS: tuple[tuple[int, str], ...] = (
    (4, "defocus"), (5, "oblique astigmatism"), (6, "vertical astigmatism"),
    (7, "vertical coma"), (8, "horizontal coma"), (11, "primary spherical"))

_INF = math.inf


class ParametricPSF(NamedTuple):
    """A parametric PSF model (an entry of :data:`PSF_MODELS`).

    Attributes:
      name: the registry name (``"gaussian"``, ...).
      fn: ``fn(params, kernel_shape) -> (k, l)`` kernel on the simplex.
      init: ``init(kernel_shape, moments=None) -> params``: a default guess
        from the kernel size, or from the moments of a kernel estimate.
      param_names: the keys of ``params``, in the order of the fit's
        covariance matrix.
      positive: names that must be > 0 (fitted as ``exp`` of a free value).
      bounds: ``(name, low, high)`` documented range of each parameter.
      canonicalize: ``params -> params`` giving the same kernel with a
        canonical labelling (major axis first, angles in ``[-π/2, π/2)``).
      description: one line, with the parameters' meaning.

    Calling the model calls ``fn``.

    Example:
      >>> from jdeconv._psf_models import PSF_MODELS
      >>> model = PSF_MODELS["moffat"]
      >>> model.param_names, model.positive
      (('alpha', 'beta', 'dx', 'dy'), ('alpha', 'beta'))
      >>> model(model.init((9, 9)), (9, 9)).shape
      (9, 9)
    """

    name: str
    fn: Callable[..., jax.Array]
    init: Callable[..., dict]
    param_names: tuple[str, ...]
    positive: tuple[str, ...]
    bounds: tuple[tuple[str, float, float], ...]
    canonicalize: Callable[[dict], dict]
    description: str

    def __call__(self, params, kernel_shape) -> jax.Array:
        return self.fn(params, kernel_shape)

    def param_shapes(self, kernel_shape) -> dict[str, tuple[int, ...]]:
        """Shape of each parameter (``()`` for scalars)."""
        return {n: tuple(np.shape(v)) for n, v in self.init(kernel_shape).items()}


# ----------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------

def _values(model: str, params: Any, shapes: Mapping[str, tuple[int, ...]]):
    """Validates a parameter dict; returns its values as arrays of one float dtype."""
    names = tuple(shapes)
    if not isinstance(params, Mapping):
        raise TypeError(f"params of the {model!r} PSF model must be a dict with keys "
                        f"{', '.join(map(repr, names))}; got {type(params).__name__}.")
    unknown = [k for k in params if k not in shapes]
    if unknown:
        raise ValueError(f"the {model!r} PSF model has no parameter {unknown[0]!r}; its "
                         f"parameters are {', '.join(map(repr, names))}."
                         + _v.closest(unknown[0], names))
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the {model!r} PSF model needs parameter(s) "
                         f"{', '.join(map(repr, missing))}; its parameters are "
                         f"{', '.join(map(repr, names))}.")
    arrays = {}
    for n in names:
        a = params[n]
        if not isinstance(a, (jax.Array, jax.core.Tracer)):
            a = np.asarray(a)
            if a.dtype.kind not in "biuf":
                raise TypeError(f"parameter {n!r} of the {model!r} PSF model must be real, got "
                                f"dtype {a.dtype}.")
        elif np.dtype(a.dtype).kind not in "biuf":
            raise TypeError(f"parameter {n!r} of the {model!r} PSF model must be real, got "
                            f"dtype {a.dtype}.")
        if tuple(np.shape(a)) != shapes[n]:
            want = "a scalar" if shapes[n] == () else f"shape {shapes[n]}"
            raise ValueError(f"parameter {n!r} of the {model!r} PSF model must be {want}, got "
                             f"shape {tuple(np.shape(a))}.")
        arrays[n] = a
    dtype = jnp.result_type(float, *arrays.values())
    return {n: jnp.asarray(a, dtype=dtype) for n, a in arrays.items()}, dtype


def _offsets(kernel_shape, p):
    """Column and row distances of every tap from ``p``'s centre ``(dx, dy)``: (1, l), (k, 1)."""
    k, l = kernel_shape
    dt = p["dx"].dtype
    x = jnp.arange(l, dtype=dt) - (l - 1) / 2
    y = jnp.arange(k, dtype=dt) - (k - 1) / 2
    return x[None, :] - p["dx"], y[:, None] - p["dy"]


def _rotated(x, y, angle):
    """``(x cos θ + y sin θ, y cos θ − x sin θ)``: along and across the direction θ."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return x * c + y * s, y * c - x * s


def _normalise(h):
    return h / jnp.sum(h)


def _smooth_step(d):
    """``S(d) = ½(1 + erf(√π d))``: 0 outside an edge, 1 inside, slope 1 at the edge."""
    return 0.5 * (1.0 + jax.scipy.special.erf(math.sqrt(math.pi) * d))


def _safe_norm(r2):
    """``√r2`` with a zero (finite) gradient at 0."""
    pos = r2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, r2, 1.0)), 0.0)


def _wrap_angle(angle):
    """Angle modulo π, in ``[-π/2, π/2)``."""
    return jnp.mod(angle + jnp.pi / 2, jnp.pi) - jnp.pi / 2


def _shape(kernel_shape):
    return _v.as_shape(kernel_shape, "kernel_shape", example="(9, 9)",
                       maximum=_v.MAX_KERNEL_SIDE)


def _size_scale(kernel_shape) -> float:
    """A default width: an eighth of the kernel's smaller side."""
    k, l = _shape(kernel_shape)
    return min(k, l) / 8.0


def _centre_from(moments: KernelMoments | None, kernel_shape):
    """``(dx, dy)``: the estimate's centroid (kept inside the kernel), or 0."""
    if moments is None:
        return jnp.asarray(0.0), jnp.asarray(0.0)
    k, l = _shape(kernel_shape)
    dx = jnp.clip(jnp.nan_to_num(moments.dx), -(l - 1) / 2, (l - 1) / 2)
    dy = jnp.clip(jnp.nan_to_num(moments.dy), -(k - 1) / 2, (k - 1) / 2)
    return dx, dy


def _width_from(moments: KernelMoments | None, kernel_shape, which: str = "mean"):
    """A moment width σ of the estimate (at least 0.3 px), or the size default."""
    if moments is None:
        return jnp.asarray(_size_scale(kernel_shape))
    if which == "major":
        s = moments.sigma_major
    elif which == "minor":
        s = moments.sigma_minor
    else:
        s = jnp.sqrt(moments.sigma_major * moments.sigma_minor)
    k, l = _shape(kernel_shape)
    return jnp.clip(jnp.nan_to_num(s, nan=_size_scale(kernel_shape)), 0.3, max(k, l) / 2)


def _identity(params):
    return dict(params)


# ----------------------------------------------------------------------------
# The models
# ----------------------------------------------------------------------------

_POSITIVE = ((), 0.0, _INF)
_ANGLE = ((), -math.pi / 2, math.pi / 2)
_SHIFT = {"dx": ((), -_INF, _INF), "dy": ((), -_INF, _INF)}

#: Each model's parameters, in the order of the fit's covariance: name -> (shape, low, high).
#: The documented bounds; those with a lower bound of 0 are positive (fitted on a log scale).
_PARAMS: dict[str, dict[str, tuple[tuple[int, ...], float, float]]] = {
    "gaussian": {"sigma": _POSITIVE, **_SHIFT},
    "elliptical_gaussian": {"sigma_major": _POSITIVE, "sigma_minor": _POSITIVE, "angle": _ANGLE,
                            **_SHIFT},
    "moffat": {"alpha": _POSITIVE, "beta": _POSITIVE, **_SHIFT},
    "airy": {"radius": _POSITIVE, **_SHIFT},
    "defocus": {"radius": _POSITIVE, **_SHIFT},
    "line_motion": {"length": _POSITIVE, "angle": _ANGLE, **_SHIFT},
    "zernike": {"coeffs": ((len(ZERNIKE_TERMS),), -_INF, _INF), "radius": _POSITIVE, **_SHIFT},
}


def _params(model: str, params) -> dict:
    """``params`` of ``model`` validated against :data:`_PARAMS`, as arrays of one dtype."""
    return _values(model, params, {n: shape for n, (shape, _, _) in _PARAMS[model].items()})[0]


def gaussian_psf(params, kernel_shape) -> jax.Array:
    """Isotropic Gaussian ``exp(−r² / 2σ²)``.

    Args:
      params: ``{"sigma": σ > 0, "dx": ..., "dy": ...}`` (pixels).
      kernel_shape: (k, l) or an int (static).

    Returns:
      (k, l) kernel, nonnegative, summing to one.

    Example:
      >>> from jdeconv._psf_models import gaussian_psf
      >>> h = gaussian_psf({"sigma": 1.5, "dx": 0.0, "dy": 0.0}, (9, 9))
      >>> h.shape, round(float(h.sum()), 12), int(h.argmax())
      ((9, 9), 1.0, 40)
    """
    ks, p = _shape(kernel_shape), _params("gaussian", params)
    return _gaussian(p, ks)


@functools.partial(jax.jit, static_argnums=1)
def _gaussian(p, ks):
    x, y = _offsets(ks, p)
    return _normalise(jnp.exp(-(x * x + y * y) / (2 * p["sigma"] ** 2)))


def elliptical_gaussian_psf(params, kernel_shape) -> jax.Array:
    """Elliptical Gaussian with axes ``sigma_major`` and ``sigma_minor``.

    ``exp(−a²/2σ_major² − b²/2σ_minor²)`` with ``a = x cos θ + y sin θ`` and
    ``b = −x sin θ + y cos θ``: the major axis points along ``angle`` θ.

    Args:
      params: ``{"sigma_major", "sigma_minor", "angle", "dx", "dy"}``.
      kernel_shape: (k, l) or an int (static).

    Returns:
      (k, l) kernel on the simplex.

    Example:
      >>> from jdeconv._psf_models import elliptical_gaussian_psf
      >>> h = elliptical_gaussian_psf({"sigma_major": 3.0, "sigma_minor": 1.0, "angle": 0.0,
      ...                              "dx": 0.0, "dy": 0.0}, (9, 9))
      >>> bool(h[4, 6] > h[6, 4])   # wider along x (columns)
      True
    """
    ks, p = _shape(kernel_shape), _params("elliptical_gaussian", params)
    return _elliptical(p, ks)


@functools.partial(jax.jit, static_argnums=1)
def _elliptical(p, ks):
    a, b = _rotated(*_offsets(ks, p), p["angle"])
    return _normalise(jnp.exp(-0.5 * (a * a / p["sigma_major"] ** 2
                                      + b * b / p["sigma_minor"] ** 2)))


def moffat_psf(params, kernel_shape) -> jax.Array:
    """Moffat profile ``(1 + r²/α²)^(−β)`` (astronomical seeing).

    Its FWHM is ``2α √(2^(1/β) − 1)``; β → ∞ tends to a Gaussian, small β
    gives heavy wings (β ≈ 2.5–4.5 for seeing).

    Args:
      params: ``{"alpha": α > 0, "beta": β > 0, "dx", "dy"}``.
      kernel_shape: (k, l) or an int (static).

    Returns:
      (k, l) kernel on the simplex.

    Example:
      >>> from jdeconv._psf_models import moffat_psf
      >>> h = moffat_psf({"alpha": 2.0, "beta": 3.0, "dx": 0.0, "dy": 0.0}, (9, 9))
      >>> round(float(h[4, 4] / h[4, 6]), 6)   # (1 + 4/4)^3
      8.0
    """
    ks, p = _shape(kernel_shape), _params("moffat", params)
    return _moffat(p, ks)


@functools.partial(jax.jit, static_argnums=1)
def _moffat(p, ks):
    x, y = _offsets(ks, p)
    return _normalise(jnp.power(1.0 + (x * x + y * y) / p["alpha"] ** 2, -p["beta"]))


# Power series of 2 J1(z)/z in q = (z/2)²: Σ (−q)^m / (m! (m+1)!).
# 2 J1(z) / z: the power series below the switch, Hankel's asymptotic series above it. In
# float64 the series runs to z = 16 (55 terms; its largest terms, ~1e5, leave ~1e-12) and
# Hankel's takes 29 terms beyond. In float32 the switch is z = 8: the series' cancellation
# at z = 16 would cost 1e-3 there, while at z = 8 both sides are good to ~2e-6, with
# Hankel's cut at 16 terms (near z = 8 its terms stop shrinking at k ~ 2z). Terms come
# from recurrences, never from powers: q^55 overflows float32 (and 0 * inf is NaN).
_JINC_SETTINGS = {"float64": (16.0, 55, 29), "float32": (8.0, 30, 16)}
# Hankel's series of J1: the k-th term is C_k / z^k with C_k = Π_{j<=k} (4 − (2j − 1)²) / (8j);
# even k go to P, odd k to Q, with signs + − + ...
_HANKEL_K = np.arange(1, 30)
_HANKEL_C = np.cumprod((4.0 - (2.0 * _HANKEL_K - 1.0) ** 2) / (8.0 * _HANKEL_K))
_HANKEL_P = np.where(_HANKEL_K % 2 == 0, np.where((_HANKEL_K // 2) % 2 == 0, 1.0, -1.0), 0.0)
_HANKEL_Q = np.where(_HANKEL_K % 2 == 1, np.where((_HANKEL_K // 2) % 2 == 0, 1.0, -1.0), 0.0)


def _jinc_of_r2(r2, c2):
    """``2 J1(z) / z`` at ``z = √(c2 · r2)`` (smooth in r2, 1 at 0): ~4e-12 in float64, ~2e-6 in float32."""
    z2 = c2 * r2
    switch, n_series, n_hankel = _JINC_SETTINGS.get(jnp.dtype(z2.dtype).name,
                                                    _JINC_SETTINGS["float64"])
    small = z2 <= switch ** 2
    q = 0.25 * jnp.where(small, z2, 0.0)
    term = jnp.ones_like(q)
    series = jnp.ones_like(q)
    for m in range(1, n_series + 1):  # (-q)^m / (m! (m+1)!)
        term = term * (-q) / (m * (m + 1))
        series = series + term
    z = jnp.sqrt(jnp.where(small, switch ** 2 + 1.0, z2))
    inv, power = 1.0 / z, jnp.ones_like(z)
    p_sum, q_sum = jnp.ones_like(z), jnp.zeros_like(z)
    for k in range(n_hankel):
        power = power * inv
        p_sum = p_sum + float(_HANKEL_P[k] * _HANKEL_C[k]) * power  # Python floats: weak
        q_sum = q_sum + float(_HANKEL_Q[k] * _HANKEL_C[k]) * power  # types keep the dtype
    chi = z - 0.75 * math.pi
    j1 = jnp.sqrt(2.0 / (math.pi * z)) * (p_sum * jnp.cos(chi) - q_sum * jnp.sin(chi))
    return jnp.where(small, series, 2.0 * j1 / z)


def airy_psf(params, kernel_shape) -> jax.Array:
    """Airy pattern of a circular aperture, ``(2 J1(z) / z)²`` with ``z = 3.8317 r / r0``.

    ``radius`` is ``r0``, the radius of the first dark ring (``1.22 λ F`` in
    pixels); the FWHM is ``0.8437 r0``. J1 is evaluated to ~1e-12 (float64; ~2e-6
    in float32) by its power series and Hankel's asymptotic series beyond.

    Args:
      params: ``{"radius": r0 > 0, "dx", "dy"}``.
      kernel_shape: (k, l) or an int (static).

    Returns:
      (k, l) kernel on the simplex.

    Example:
      >>> from jdeconv._psf_models import airy_psf
      >>> h = airy_psf({"radius": 3.0, "dx": 0.0, "dy": 0.0}, (9, 9))
      >>> float(h[4, 1] / h[4, 4]) < 1e-30     # the first dark ring, 3 px out
      True
    """
    ks, p = _shape(kernel_shape), _params("airy", params)
    return _airy(p, ks)


@functools.partial(jax.jit, static_argnums=1)
def _airy(p, ks):
    x, y = _offsets(ks, p)
    jinc = _jinc_of_r2(x * x + y * y, (J1_ZERO / p["radius"]) ** 2)
    return _normalise(jinc * jinc)


def defocus_psf(params, kernel_shape) -> jax.Array:
    """Uniform disk of radius R (geometric defocus), with an anti-aliased edge.

    Each tap is ``S(R − r)`` with the smooth step of the module docstring, so
    a tap on the rim gets about half weight and the kernel varies smoothly
    with R.

    Args:
      params: ``{"radius": R > 0, "dx", "dy"}``.
      kernel_shape: (k, l) or an int (static).

    Returns:
      (k, l) kernel on the simplex.

    Example:
      >>> from jdeconv._psf_models import defocus_psf
      >>> h = defocus_psf({"radius": 3.0, "dx": 0.0, "dy": 0.0}, (9, 9))
      >>> round(float(h[4, 7] / h[4, 4]), 3)   # on the rim: half the centre
      0.5
    """
    ks, p = _shape(kernel_shape), _params("defocus", params)
    return _defocus(p, ks)


@functools.partial(jax.jit, static_argnums=1)
def _defocus(p, ks):
    x, y = _offsets(ks, p)
    return _normalise(_smooth_step(p["radius"] - _safe_norm(x * x + y * y)))


def line_motion_psf(params, kernel_shape) -> jax.Array:
    """Straight motion blur: a segment of sub-pixel ``length`` at ``angle``, anti-aliased.

    The segment is centred on ``(dx, dy)``; each tap is
    ``[S(t + L/2) − S(t − L/2)] · exp(−π d²)`` with ``t``, ``d`` its
    coordinates along and across the segment: the box of length ``L``
    blurred by the unit-area bump ``exp(−π s²)`` whose integral is the
    smooth step ``S``. The kernel depends smoothly on ``L`` and the angle.

    Args:
      params: ``{"length": L > 0, "angle": θ, "dx", "dy"}``.
      kernel_shape: (k, l) or an int (static).

    Returns:
      (k, l) kernel on the simplex.

    Example:
      >>> from jdeconv._psf_models import line_motion_psf
      >>> h = line_motion_psf({"length": 6.0, "angle": 0.0, "dx": 0.0, "dy": 0.0}, (9, 9))
      >>> round(float(h[4].sum()), 3)          # horizontal: nearly all in the middle row
      0.92
    """
    ks, p = _shape(kernel_shape), _params("line_motion", params)
    return _line_motion(p, ks)


@functools.partial(jax.jit, static_argnums=1)
def _line_motion(p, ks):
    t, d = _rotated(*_offsets(ks, p), p["angle"])
    half = 0.5 * p["length"]
    along = _smooth_step(t + half) - _smooth_step(t - half)
    return _normalise(along * jnp.exp(-math.pi * d * d))


@functools.lru_cache(maxsize=32)
def _pupil(n_pupil: int):
    """Pupil coordinates (n,), amplitude and the six Zernike polynomials on the grid."""
    u = (np.arange(n_pupil) + 0.5) * (2.0 / n_pupil) - 1.0
    px, py = u[None, :], u[:, None]
    rho2 = px * px + py * py
    rho = np.sqrt(rho2)
    edge = 0.5 * n_pupil * (1.0 - rho)  # distance to the rim in pupil pixels
    amplitude = 0.5 * (1.0 + np.vectorize(math.erf)(math.sqrt(math.pi) * edge))
    polys = np.stack([
        math.sqrt(3) * (2 * rho2 - 1),                      # Z4 defocus
        math.sqrt(6) * 2 * px * py,                         # Z5 ρ² sin 2θ
        math.sqrt(6) * (px * px - py * py),                 # Z6 ρ² cos 2θ
        math.sqrt(8) * (3 * rho2 - 2) * py,                 # Z7 (3ρ³ − 2ρ) sin θ
        math.sqrt(8) * (3 * rho2 - 2) * px,                 # Z8 (3ρ³ − 2ρ) cos θ
        math.sqrt(5) * (6 * rho2 * rho2 - 6 * rho2 + 1),    # Z11 spherical
    ])
    return u, amplitude, polys


DEFAULT_PUPIL_SAMPLES = 64


def zernike_psf(params, kernel_shape, *, n_pupil: int = DEFAULT_PUPIL_SAMPLES) -> jax.Array:
    """Diffraction PSF of a circular pupil with a Zernike phase.

    ``PSF = |F[P · exp(iφ)]|²`` with ``P`` the unit-radius pupil (sampled on
    ``n_pupil × n_pupil`` points, anti-aliased rim) and
    ``φ = Σ_j c_j Z_j`` over the Noll-normalised terms of
    :data:`ZERNIKE_TERMS` — Z4 defocus, Z5/Z6 astigmatism, Z7/Z8 coma, Z11
    spherical — with ``c_j`` in radians RMS. The Fourier transform is a
    matrix DFT evaluated exactly on the kernel's taps, at the scale where an
    unaberrated pupil has its first dark ring at ``radius`` pixels (then the
    model matches :func:`airy_psf`), so the sampling is continuous in
    ``radius`` and the offsets. The pupil grid must resolve the PSF:
    ``n_pupil >= 1.3 · max(k, l) / radius``.

    The sign of the even terms (defocus, astigmatism, spherical) is not
    identifiable from an in-focus PSF without coma (φ and −φ give the same
    PSF); a fit returns the branch its starting point lies in.

    Args:
      params: ``{"coeffs": (6,) radians RMS, "radius": r0 > 0, "dx", "dy"}``.
      kernel_shape: (k, l) or an int (static).
      n_pupil: pupil samples per side (static).

    Returns:
      (k, l) kernel on the simplex.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdeconv._psf_models import airy_psf, zernike_psf
      >>> flat = {"coeffs": jnp.zeros(6), "radius": 3.0, "dx": 0.0, "dy": 0.0}
      >>> airy = airy_psf({"radius": 3.0, "dx": 0.0, "dy": 0.0}, 9)
      >>> bool(jnp.abs(zernike_psf(flat, 9) - airy).max() < 1e-3)
      True
    """
    ks = _shape(kernel_shape)
    n_pupil = _v.check_int(n_pupil, "n_pupil", minimum=4, maximum=4096, example=64)
    p = _params("zernike", params)
    return _zernike(p, ks, n_pupil)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _zernike(p, ks, n_pupil):
    dt = p["dx"].dtype
    coord, amplitude, polys = _pupil(n_pupil)
    coord = jnp.asarray(coord, dtype=dt)
    phase = jnp.tensordot(p["coeffs"], jnp.asarray(polys, dtype=dt), axes=1)
    field = jnp.asarray(amplitude, dtype=dt) * jnp.exp(1j * phase)
    scale = J1_ZERO / (2 * math.pi * p["radius"])  # cycles per pixel per unit pupil radius
    x, y = _offsets(ks, p)
    rows = jnp.exp(-2j * math.pi * scale * (y * coord[None, :]))            # (k, n)
    cols = jnp.exp(-2j * math.pi * scale * (x.reshape(-1, 1) * coord[None, :]))  # (l, n)
    e = rows @ field @ cols.T
    return _normalise(jnp.real(e * jnp.conj(e)))


# ----------------------------------------------------------------------------
# Initial guesses and canonical forms
# ----------------------------------------------------------------------------

def _init_gaussian(kernel_shape, moments=None):
    dx, dy = _centre_from(moments, kernel_shape)
    return {"sigma": _width_from(moments, kernel_shape), "dx": dx, "dy": dy}


def _init_elliptical(kernel_shape, moments=None):
    dx, dy = _centre_from(moments, kernel_shape)
    if moments is None:
        s = _size_scale(kernel_shape)
        major, minor, angle = jnp.asarray(1.25 * s), jnp.asarray(0.8 * s), jnp.asarray(0.0)
    else:
        major = _width_from(moments, kernel_shape, "major")
        minor = jnp.minimum(_width_from(moments, kernel_shape, "minor"), 0.95 * major)
        angle = jnp.nan_to_num(moments.angle)
    return {"sigma_major": major, "sigma_minor": minor, "angle": angle, "dx": dx, "dy": dy}


def _canonical_elliptical(params):
    p = dict(params)
    swap = p["sigma_minor"] > p["sigma_major"]
    major = jnp.where(swap, p["sigma_minor"], p["sigma_major"])
    minor = jnp.where(swap, p["sigma_major"], p["sigma_minor"])
    p["sigma_major"], p["sigma_minor"] = major, minor
    p["angle"] = _wrap_angle(p["angle"] + jnp.where(swap, 0.5 * jnp.pi, 0.0))
    return p


_MOFFAT_BETA0 = 3.0
# A Moffat with β = 3 and the FWHM of a Gaussian of width σ: α = 2.3548 σ / (2√(2^⅓ − 1)).
_MOFFAT_ALPHA_PER_SIGMA = 2.0 * math.sqrt(2 * math.log(2)) / (
    2 * math.sqrt(2 ** (1 / _MOFFAT_BETA0) - 1))


def _init_moffat(kernel_shape, moments=None):
    dx, dy = _centre_from(moments, kernel_shape)
    alpha = _MOFFAT_ALPHA_PER_SIGMA * _width_from(moments, kernel_shape)
    return {"alpha": alpha, "beta": jnp.asarray(_MOFFAT_BETA0), "dx": dx, "dy": dy}


# The Airy core is close to a Gaussian of σ ≈ 0.42 λF = 0.344 r0.
_AIRY_RADIUS_PER_SIGMA = 1.0 / 0.344


def _init_airy(kernel_shape, moments=None):
    dx, dy = _centre_from(moments, kernel_shape)
    return {"radius": _AIRY_RADIUS_PER_SIGMA * _width_from(moments, kernel_shape),
            "dx": dx, "dy": dy}


# Variance added along an edge by the smooth step (the bump exp(−π s²) has variance 1/2π).
_EDGE_VARIANCE = 1.0 / (2 * math.pi)


def _init_defocus(kernel_shape, moments=None):
    dx, dy = _centre_from(moments, kernel_shape)
    s = _width_from(moments, kernel_shape)
    # A disk of radius R has variance R²/4 along each axis.
    radius = 2.0 * jnp.sqrt(jnp.maximum(s * s - _EDGE_VARIANCE, 0.09))
    return {"radius": radius, "dx": dx, "dy": dy}


def _init_line(kernel_shape, moments=None):
    dx, dy = _centre_from(moments, kernel_shape)
    if moments is None:
        k, l = _shape(kernel_shape)
        length, angle = jnp.asarray(min(k, l) / 2.0), jnp.asarray(0.0)
    else:
        # A segment of length L has variance L²/12 along it.
        var = jnp.nan_to_num(moments.sigma_major ** 2 - moments.sigma_minor ** 2)
        length = jnp.sqrt(12.0 * jnp.maximum(var, 0.25))
        angle = jnp.nan_to_num(moments.angle)
    return {"length": length, "angle": angle, "dx": dx, "dy": dy}


def _canonical_angle(params):
    p = dict(params)
    p["angle"] = _wrap_angle(p["angle"])
    return p


#: Default Zernike coefficients (radians RMS): small and nonzero, since at 0
#: the PSF is stationary in every even term (their gradient vanishes).
ZERNIKE_INIT = (0.1, 0.05, 0.05, 0.0, 0.0, 0.05)


def _init_zernike(kernel_shape, moments=None):
    dx, dy = _centre_from(moments, kernel_shape)
    return {"coeffs": jnp.asarray(ZERNIKE_INIT),
            "radius": _AIRY_RADIUS_PER_SIGMA * _width_from(moments, kernel_shape),
            "dx": dx, "dy": dy}


def _model(name: str, fn, init, canonicalize, description: str) -> ParametricPSF:
    """The registry entry of ``name``; its parameters, positive ones and bounds from ``_PARAMS``."""
    spec = _PARAMS[name]
    return ParametricPSF(name, fn, init, tuple(spec),
                         tuple(n for n, (_, low, _) in spec.items() if low == 0.0),
                         tuple((n, low, high) for n, (_, low, high) in spec.items()),
                         canonicalize, description)


def zernike_model(n_pupil: int = DEFAULT_PUPIL_SAMPLES) -> ParametricPSF:
    """The ``zernike`` model with another pupil sampling.

    Args:
      n_pupil: pupil samples per side (``>= 1.3 · max(k, l) / radius``).

    Returns:
      A :class:`ParametricPSF` to pass to :func:`jdeconv.fit_psf` as ``model``.
      Build it once and reuse it: each new one compiles the fit again.

    Example:
      >>> from jdeconv._psf_models import zernike_model
      >>> model = zernike_model(96)
      >>> model(model.init(15), 15).shape
      (15, 15)
    """
    n_pupil = _v.check_int(n_pupil, "n_pupil", minimum=4, maximum=4096, example=64)
    fn = zernike_psf if n_pupil == DEFAULT_PUPIL_SAMPLES else functools.partial(
        zernike_psf, n_pupil=n_pupil)
    return _model(
        "zernike", fn, _init_zernike, _identity,
        "diffraction PSF with Zernike phase: coeffs (Z4 defocus, Z5, Z6 astigmatism, Z7, Z8 "
        "coma, Z11 spherical; radians RMS), radius (first dark ring, px), dx, dy")


#: name -> :class:`ParametricPSF`, for :func:`jdeconv.fit_psf`.
PSF_MODELS: dict[str, ParametricPSF] = {
    "gaussian": _model("gaussian", gaussian_psf, _init_gaussian, _identity,
                       "isotropic Gaussian: sigma (px), dx, dy"),
    "elliptical_gaussian": _model(
        "elliptical_gaussian", elliptical_gaussian_psf, _init_elliptical, _canonical_elliptical,
        "elliptical Gaussian: sigma_major >= sigma_minor (px), angle of the major axis (rad), "
        "dx, dy"),
    "moffat": _model("moffat", moffat_psf, _init_moffat, _identity,
                     "Moffat (1 + r²/alpha²)^-beta: alpha (px), beta, dx, dy"),
    "airy": _model("airy", airy_psf, _init_airy, _identity,
                   "Airy pattern: radius of the first dark ring (px), dx, dy"),
    "defocus": _model("defocus", defocus_psf, _init_defocus, _identity,
                      "uniform disk with anti-aliased rim: radius (px), dx, dy"),
    "line_motion": _model("line_motion", line_motion_psf, _init_line, _canonical_angle,
                          "straight motion blur: length (px), angle (rad), dx, dy"),
    "zernike": zernike_model(),
}

__all__ = ["PSF_MODELS", "ParametricPSF", "ZERNIKE_TERMS", "airy_psf", "defocus_psf",
           "elliptical_gaussian_psf", "gaussian_psf", "line_motion_psf", "moffat_psf",
           "zernike_model", "zernike_psf"]

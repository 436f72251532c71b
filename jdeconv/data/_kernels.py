"""Blur-kernel (PSF) families.

Every family returns a host-side NumPy array of shape ``(k, l)``, dtype
float64, nonnegative and normalised by its sum (so it sums to 1 up to
rounding). ``shape`` may be an int ``s`` (meaning ``(s, s)``) or a pair; odd,
even and rectangular sizes are accepted. The kernel centre is the point
``((k - 1) / 2, (l - 1) / 2)`` in 0-based (row, column) pixel coordinates; for
odd sizes it is the middle pixel, for even sizes it lies between pixels.

Angles are in degrees, counter-clockwise as seen on screen (rows grow
downwards), with 0 meaning along the rows (horizontal) and 90 vertical: the
unit direction of angle ``a`` is ``(drow, dcol) = (-sin a, cos a)``.

Sizes are checked before anything is allocated: each side is at most
``jdeconv._validation.MAX_KERNEL_SIDE``.

Example:
    >>> from jdeconv.data import make_kernel
    >>> h = make_kernel("gaussian", (15, 15), sigma=2.0)
    >>> h.shape, round(float(h.sum()), 12)
    ((15, 15), 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from jdeconv import _validation

__all__ = [
    "KERNEL_FAMILIES",
    "airy_kernel",
    "box_kernel",
    "disk_kernel",
    "gaussian_kernel",
    "make_kernel",
    "motion_kernel",
    "random_smooth_kernel",
]

_EXAMPLE_SHAPE = "(15, 15)"

#: First positive zero of the Bessel function J1.
_J1_FIRST_ZERO = 3.8317059702075125
#: Largest ``supersample`` of :func:`disk_kernel` (the work grows as its square).
_MAX_SUPERSAMPLE = 64
#: Above this argument J1 uses its asymptotic (Hankel) expansion.
_J1_ASYMPTOTIC = 25.0


def _kshape(shape: Any) -> tuple[int, int]:
    """Validates a kernel size (int or pair), at most ``MAX_KERNEL_SIDE`` per side."""
    return _validation.as_shape(shape, "kernel shape", example=_EXAMPLE_SHAPE,
                                maximum=_validation.MAX_KERNEL_SIDE)


def _offsets(k: int, l: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets from the kernel centre, shapes (k, 1) and (1, l)."""
    dr = np.arange(k, dtype=np.float64)[:, None] - (k - 1) / 2.0
    dc = np.arange(l, dtype=np.float64)[None, :] - (l - 1) / 2.0
    return dr, dc


def _normalise(h: np.ndarray) -> np.ndarray:
    h = np.where(h > 0.0, h, 0.0)
    total = float(h.sum())
    if not (total > 0.0 and np.isfinite(total)):  # pragma: no cover - guarded by validation
        raise ValueError("kernel has no positive mass; check its parameters")
    return h / total


def _direction(angle: float) -> tuple[float, float]:
    """Unit (drow, dcol) direction of ``angle`` degrees (counter-clockwise on screen)."""
    a = math.radians(angle)
    return -math.sin(a), math.cos(a)


def gaussian_kernel(
    shape: int | tuple[int, int],
    sigma: float,
    *,
    sigma_y: float | None = None,
    angle: float = 0.0,
) -> np.ndarray:
    """Sampled (possibly anisotropic and rotated) Gaussian kernel.

    ``h[i, j] ∝ exp(-(d·u)^2 / (2 sigma^2) - (d·v)^2 / (2 sigma_y^2))`` where
    ``d`` is the (row, col) offset from the centre, ``u = (-sin a, cos a)`` is
    the direction of ``angle`` and ``v = (cos a, sin a)`` is perpendicular to
    it. With ``angle=0``, ``sigma`` is the standard deviation along columns
    (x) and ``sigma_y`` along rows (y). The values are point samples at pixel
    centres; for ``sigma >= 1`` and a kernel at least ``6 sigma`` wide the
    discrete second moments match ``sigma^2`` to high accuracy.

    Args:
        shape: kernel size ``(k, l)`` or int.
        sigma: standard deviation (pixels) along the ``angle`` direction, > 0.
        sigma_y: standard deviation perpendicular to it, > 0; default ``sigma``.
        angle: rotation in degrees (counter-clockwise on screen).

    Returns:
        (k, l) float64, nonnegative, sum 1.

    Raises:
        TypeError: for a bad shape or non-numeric parameters.
        ValueError: for non-positive sizes or sigmas, or non-finite values.

    Example:
        >>> h = gaussian_kernel(5, 1.0)
        >>> bool(np.allclose(h, h.T)), int(h.argmax())
        (True, 12)
    """
    k, l = _kshape(shape)
    sx = _validation.check_real(sigma, "sigma", positive=True, example="2.0")
    sy = sx if sigma_y is None else _validation.check_real(sigma_y, "sigma_y", positive=True, example="2.0")
    ang = _validation.check_real(angle, "angle", example="0.0")
    ur, uc = _direction(ang)
    vr, vc = uc, -ur  # perpendicular: (cos a, sin a)
    dr, dc = _offsets(k, l)
    du = dr * ur + dc * uc
    dv = dr * vr + dc * vc
    logh = -0.5 * ((du / sx) ** 2 + (dv / sy) ** 2)
    # Subtracting the maximum avoids underflow to an all-zero kernel for tiny sigmas.
    return _normalise(np.exp(logh - logh.max()))


def motion_kernel(shape: int | tuple[int, int], length: float, angle: float = 0.0) -> np.ndarray:
    """Linear motion blur: a line segment through the kernel centre.

    The segment of the given ``length`` (pixels, end to end) is sampled at
    many evenly spaced points (about 32 per pixel of length), and each point's
    mass is splatted onto its four neighbouring pixels bilinearly, which
    anti-aliases the line. Along the line the variance is ``length**2 / 12 +
    1/6`` (uniform segment plus the bilinear splat).

    Args:
        shape: kernel size ``(k, l)`` or int; must contain the segment:
            ``k >= length * |sin a| + 1`` and ``l >= length * |cos a| + 1``.
        length: segment length in pixels, > 0.
        angle: direction in degrees, counter-clockwise on screen; 0 is
            horizontal.

    Returns:
        (k, l) float64, nonnegative, sum 1.

    Raises:
        TypeError: for a bad shape or non-numeric parameters.
        ValueError: for non-positive sizes or length, non-finite values, or a
            segment that does not fit in the kernel.

    Example:
        >>> h = motion_kernel((1, 9), 8.0)
        >>> h.shape, round(float(h.sum()), 12)
        ((1, 9), 1.0)
    """
    k, l = _kshape(shape)
    length = _validation.check_real(length, "length", positive=True, example="9.0")
    ang = _validation.check_real(angle, "angle", example="0.0")
    ur, uc = _direction(ang)
    need_r = length * abs(ur) + 1.0
    need_c = length * abs(uc) + 1.0
    if need_r > k + 1e-9 or need_c > l + 1e-9:
        raise ValueError(
            f"motion blur of length {length:g} at angle {ang:g} does not fit in kernel shape "
            f"{(k, l)}; use a shape of at least {(math.ceil(need_r - 1e-9), math.ceil(need_c - 1e-9))} "
            f"or a shorter length"
        )
    n = max(2, int(math.ceil(32 * length)))
    t = (np.arange(n, dtype=np.float64) + 0.5) / n * length - length / 2.0
    r = np.clip((k - 1) / 2.0 + t * ur, 0.0, k - 1.0)
    c = np.clip((l - 1) / 2.0 + t * uc, 0.0, l - 1.0)
    r0 = np.floor(r).astype(np.intp)
    c0 = np.floor(c).astype(np.intp)
    fr = r - r0
    fc = c - c0
    h = np.zeros((k + 1, l + 1), dtype=np.float64)
    np.add.at(h, (r0, c0), (1 - fr) * (1 - fc))
    np.add.at(h, (r0 + 1, c0), fr * (1 - fc))
    np.add.at(h, (r0, c0 + 1), (1 - fr) * fc)
    np.add.at(h, (r0 + 1, c0 + 1), fr * fc)
    return _normalise(h[:k, :l])


def disk_kernel(shape: int | tuple[int, int], radius: float, *, supersample: int = 16) -> np.ndarray:
    """Defocus (pillbox) kernel: a uniform disk with an anti-aliased edge.

    Each pixel's value is the fraction of its ``supersample x supersample``
    sub-pixel centres that lie within ``radius`` of the kernel centre.

    Args:
        shape: kernel size ``(k, l)`` or int; the disk must fit:
            ``2 * radius <= min(k, l)``.
        radius: disk radius in pixels, >= 0.5.
        supersample: sub-samples per pixel side, from 1 to 64.

    Returns:
        (k, l) float64, nonnegative, sum 1, symmetric under flips (and under
        transposition for square shapes).

    Raises:
        TypeError: for a bad shape or non-numeric parameters.
        ValueError: for non-positive sizes, ``radius < 0.5`` or a disk that does
            not fit.

    Example:
        >>> h = disk_kernel(7, 3.0)
        >>> bool(np.allclose(h, h[::-1, ::-1])), bool(h[0, 0] == 0.0)
        (True, True)
    """
    k, l = _kshape(shape)
    radius = _validation.check_real(radius, "radius", positive=True, example="3.0")
    if radius < 0.5:
        raise ValueError(
            f"radius is {radius:g}; a disk kernel needs radius >= 0.5 pixel "
            f"(for no blur use a delta, e.g. box_kernel(1))"
        )
    if 2.0 * radius > min(k, l) + 1e-9:
        need = math.ceil(2.0 * radius - 1e-9)
        raise ValueError(
            f"disk of radius {radius:g} does not fit in kernel shape {(k, l)}; "
            f"use a shape of at least ({need}, {need}) or a smaller radius"
        )
    s = _validation.check_int(supersample, "supersample", minimum=1, maximum=_MAX_SUPERSAMPLE,
                              example=16)
    sub = (np.arange(s, dtype=np.float64) + 0.5) / s - 0.5
    dr, dc = _offsets(k, l)
    # Count the sub-pixel centres inside the disk, one sub-pixel offset at a
    # time: memory stays at one (k, l) array whatever ``supersample`` is.
    inside = np.zeros((k, l), dtype=np.int64)
    for a in sub:
        rr = (dr + a) ** 2
        for b in sub:
            inside += (rr + (dc + b) ** 2) <= radius * radius
    return _normalise(inside / float(s * s))


def box_kernel(shape: int | tuple[int, int]) -> np.ndarray:
    """Uniform (box / moving-average) kernel.

    Args:
        shape: kernel size ``(k, l)`` or int.

    Returns:
        (k, l) float64 with every entry ``1 / (k * l)``.

    Raises:
        TypeError: for a bad shape type.
        ValueError: for non-positive sizes.

    Example:
        >>> box_kernel((1, 4))
        array([[0.25, 0.25, 0.25, 0.25]])
    """
    k, l = _kshape(shape)
    return np.full((k, l), 1.0 / (k * l))


def _bessel_j1(x: np.ndarray) -> np.ndarray:
    """Bessel function J1 for real ``x >= 0`` in pure NumPy (abs. error ~1e-15).

    For ``x <= 25`` the integral ``J1(x) = 1/(2 pi) ∫_0^{2 pi} cos(t - x sin t) dt``
    is evaluated by the trapezoidal rule (100 nodes), which converges
    exponentially for this periodic analytic integrand once the number of
    nodes exceeds ``x``. Beyond, the Hankel asymptotic expansion (10 terms of
    each series) is accurate to rounding, so the cost per value is bounded
    however large the kernel or small the Airy radius.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(x.shape, dtype=np.float64)
    near = x <= _J1_ASYMPTOTIC
    n = int(math.ceil(_J1_ASYMPTOTIC + 12.0 * _J1_ASYMPTOTIC ** (1.0 / 3.0))) + 40
    t = 2.0 * np.pi * np.arange(n, dtype=np.float64) / n
    sin_t = np.sin(t)[None, :]
    xs = x[near]
    res = np.empty(xs.shape, dtype=np.float64)
    chunk = 2_000_000 // n  # bounded temporary memory
    for start in range(0, xs.size, chunk):
        part = xs[start : start + chunk, None]
        res[start : start + chunk] = np.cos(t[None, :] - part * sin_t).mean(axis=1)
    out[near] = res
    far = x[~near]
    # J1(x) = sqrt(2 / (pi x)) (P cos w - Q sin w), w = x - 3 pi / 4, with
    # cos w and sin w expanded so that no large argument is shifted.
    coef = [1.0]
    for j in range(1, 20):
        coef.append(coef[-1] * (4.0 - (2 * j - 1) ** 2) / (8.0 * j))
    inv = 1.0 / far
    p = sum((-1) ** k * coef[2 * k] * inv ** (2 * k) for k in range(10))
    q = sum((-1) ** k * coef[2 * k + 1] * inv ** (2 * k + 1) for k in range(10))
    c, s = np.cos(far), np.sin(far)
    out[~near] = np.sqrt(1.0 / (np.pi * far)) * (p * (s - c) + q * (s + c))
    return out


def airy_kernel(shape: int | tuple[int, int], radius: float) -> np.ndarray:
    """Airy diffraction pattern ``(2 J1(x) / x)^2`` with its first dark ring at ``radius``.

    ``x = 3.8317... * r / radius`` where ``r`` is the distance (pixels) from
    the kernel centre, so the first zero of the pattern lies exactly at
    ``r = radius``. J1 is computed in pure NumPy (no SciPy needed). The
    pattern is truncated to the kernel window and then normalised.

    Args:
        shape: kernel size ``(k, l)`` or int.
        radius: radius of the first dark ring in pixels, > 0.

    Returns:
        (k, l) float64, nonnegative, sum 1.

    Raises:
        TypeError: for a bad shape or non-numeric radius.
        ValueError: for non-positive sizes or radius.

    Example:
        >>> h = airy_kernel(11, 3.0)
        >>> bool(h[5, 8] < 1e-12 * h[5, 5])
        True
    """
    k, l = _kshape(shape)
    radius = _validation.check_real(radius, "radius", positive=True, example="3.0")
    dr, dc = _offsets(k, l)
    r = np.sqrt(dr**2 + dc**2)
    x = _J1_FIRST_ZERO * r / radius
    ux, inverse = np.unique(x, return_inverse=True)
    j1 = _bessel_j1(ux)
    small = ux < 1e-6
    jinc = np.where(small, 1.0 - ux**2 / 8.0, 2.0 * j1 / np.where(small, 1.0, ux))
    h = (jinc**2)[inverse].reshape(k, l)
    return _normalise(h)


def random_smooth_kernel(
    shape: int | tuple[int, int], *, seed: int = 0, smoothness: float = 2.0
) -> np.ndarray:
    """A random, smooth, nonnegative kernel (an irregular PSF).

    I.i.d. uniform values are cubed (to make a few bright blobs), smoothed by a
    Gaussian of standard deviation ``smoothness`` pixels (circular, via the
    FFT), and multiplied by a Gaussian envelope of standard deviation 0.3 x
    the kernel size along each axis, so the mass fades towards the window
    border like a real PSF.

    Args:
        shape: kernel size ``(k, l)`` or int.
        seed: seed for ``np.random.default_rng``.
        smoothness: Gaussian smoothing in pixels, >= 0 (0: no smoothing).

    Returns:
        (k, l) float64, nonnegative, sum 1.

    Raises:
        TypeError: for bad shape, seed or smoothness types.
        ValueError: for non-positive sizes, negative seed or smoothness.

    Example:
        >>> a = random_smooth_kernel(9, seed=1)
        >>> bool(np.array_equal(a, random_smooth_kernel(9, seed=1)))
        True
    """
    k, l = _kshape(shape)
    rng = np.random.default_rng(_validation.check_seed(seed))
    smoothness = _validation.check_real(smoothness, "smoothness", nonnegative=True, example="2.0")
    h = rng.random((k, l)) ** 3
    if smoothness > 0:
        fy = np.fft.fftfreq(k)[:, None]
        fx = np.fft.rfftfreq(l)[None, :]
        transfer = np.exp(-2.0 * np.pi**2 * smoothness**2 * (fy**2 + fx**2))
        h = np.fft.irfft2(np.fft.rfft2(h) * transfer, s=(k, l))
    dr, dc = _offsets(k, l)
    envelope = np.exp(-0.5 * ((dr / (0.3 * k)) ** 2 + (dc / (0.3 * l)) ** 2))
    h = np.clip(h, 0.0, None) * envelope
    if not float(h.sum()) > 0.0:  # pragma: no cover - probability zero
        return box_kernel((k, l))
    return _normalise(h)


_FAMILIES: dict[str, Callable[..., np.ndarray]] = {
    "gaussian": gaussian_kernel,
    "motion": motion_kernel,
    "disk": disk_kernel,
    "box": box_kernel,
    "airy": airy_kernel,
    "random": random_smooth_kernel,
    "random_smooth": random_smooth_kernel,
}
KERNEL_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)
"""Family names accepted by :func:`make_kernel` ("random_smooth" is an alias of "random")."""


def make_kernel(
    family: str, shape: int | tuple[int, int], *, seed: int = 0, **params: Any
) -> np.ndarray:
    """Build a kernel by family name.

    Args:
        family: one of ``KERNEL_FAMILIES``: gaussian, motion, disk, box, airy,
            random (alias random_smooth).
        shape: kernel size ``(k, l)`` or int.
        seed: passed to the random family, ignored by the deterministic ones.
        **params: the family's parameters, e.g. ``sigma=2.0`` (gaussian),
            ``length=9, angle=30`` (motion), ``radius=3`` (disk, airy),
            ``smoothness=2`` (random).

    Returns:
        (k, l) float64, nonnegative, sum 1.

    Raises:
        ValueError: for an unknown family (the message lists valid names and the
            closest match) or invalid parameters.
        TypeError: for missing or unknown parameters.

    Example:
        >>> make_kernel("box", (2, 2))
        array([[0.25, 0.25],
               [0.25, 0.25]])
    """
    if not isinstance(family, str):
        raise TypeError(f"kernel family must be a str, got {type(family).__name__}; e.g. 'gaussian'")
    seed = _validation.check_seed(seed)
    key = family.strip().lower()
    if key not in _FAMILIES:
        raise _validation.unknown_name("kernel family", family, KERNEL_FAMILIES)
    func = _FAMILIES[key]
    opts = dict(params)
    if func is random_smooth_kernel:
        opts["seed"] = seed
    return _validation.call_with_options(func, "kernel", family, (shape,), opts)

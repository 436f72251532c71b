"""Noise models and quantisation for synthetic blurred observations.

All functions are host-side NumPy (float64), return new arrays and are
deterministic given an explicit ``seed`` (no global random state).

Example:
    >>> import numpy as np
    >>> from jdeconv.data import add_gaussian_noise, quantize
    >>> y = quantize(add_gaussian_noise(np.full((4, 4), 0.5), 0.01, seed=0), 8)
    >>> y.dtype, bool(np.allclose(y * 255, np.round(y * 255)))
    (dtype('float64'), True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jdeconv import _validation

__all__ = ["add_gaussian_noise", "add_poisson_noise", "quantize"]

#: Largest expected photon count per pixel that NumPy's Poisson sampler handles safely.
_MAX_PHOTONS = 1e15


def _as_image(image: Any, name: str = "image") -> np.ndarray:
    """Convert to a finite float64 array with at least one element.

    Raises:
        TypeError: if ``image`` is not numeric.
        ValueError: if it is empty or contains NaN/Inf.
    """
    try:
        arr = np.asarray(image)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be a numeric array, got {type(image).__name__}") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be a real numeric array, got dtype {arr.dtype}; convert it with np.asarray(..., float)"
        )
    arr = arr.astype(np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); give a non-empty array")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf; replace them (e.g. np.nan_to_num) first")
    return arr


def add_gaussian_noise(image: Any, sigma: float, *, seed: int) -> np.ndarray:
    """Add i.i.d. Gaussian noise of standard deviation ``sigma``.

    The result is not clipped (clip or :func:`quantize` afterwards if you need
    values in [0, 1]).

    Args:
        image: array of any shape, finite.
        sigma: noise standard deviation, >= 0 (0 returns a float64 copy).
        seed: seed for ``np.random.default_rng``.

    Returns:
        float64 array of the same shape: ``image + sigma * N(0, 1)``.

    Raises:
        TypeError: for non-numeric inputs.
        ValueError: for negative/non-finite sigma, negative seed, or NaN/Inf in
            the image.

    Example:
        >>> y = add_gaussian_noise(np.zeros((100, 100)), 0.1, seed=0)
        >>> bool(abs(y.std() - 0.1) < 0.01)
        True
    """
    x = _as_image(image)
    sigma = _validation.check_real(sigma, "sigma", nonnegative=True, example="0.01")
    rng = np.random.default_rng(_validation.check_seed(seed))
    return x + sigma * rng.standard_normal(x.shape)


def add_poisson_noise(image: Any, photons: float, *, seed: int) -> np.ndarray:
    """Shot (Poisson) noise: ``Poisson(image * photons) / photons``.

    ``photons`` is the expected photon count of a pixel of value 1, so the
    relative noise of a value ``v`` is ``1 / sqrt(v * photons)``.

    Args:
        image: nonnegative array of any shape (normally in [0, 1]); values
            below zero by FFT rounding (a few ulps of the maximum) count as 0.
        photons: photons per unit intensity, > 0 and ``photons * image.max()
            <= 1e15``.
        seed: seed for ``np.random.default_rng``.

    Returns:
        float64 array of the same shape, nonnegative, on the grid ``j / photons``.

    Raises:
        TypeError: for non-numeric inputs.
        ValueError: for negative image values, NaN/Inf, non-positive or too
            large photons, or a negative seed.

    Example:
        >>> y = add_poisson_noise(np.full((3, 3), 0.5), 100.0, seed=0)
        >>> bool(np.allclose(y * 100, np.round(y * 100)))
        True
    """
    x = _as_image(image)
    photons = _validation.check_real(photons, "photons", positive=True, example="1000.0")
    rng = np.random.default_rng(_validation.check_seed(seed))
    # A blur of a nonnegative image computed by FFT carries rounding of a few ulps of its
    # maximum below zero; such values are zero intensity, not user error.
    rounding = 64 * np.finfo(np.float64).eps * max(float(np.abs(x).max(initial=0.0)), 1.0)
    x = np.where((x < 0) & (x >= -rounding), 0.0, x)
    if float(x.min()) < 0.0:
        raise ValueError(
            f"image has negative values (min {float(x.min()):g}); Poisson noise needs intensities >= 0, "
            f"clip the image to [0, 1] first"
        )
    if photons * float(x.max()) > _MAX_PHOTONS:
        raise ValueError(
            f"photons * image.max() = {photons * float(x.max()):g} exceeds {_MAX_PHOTONS:g}; "
            f"use fewer photons (shot noise is negligible at such counts anyway)"
        )
    return rng.poisson(x * photons).astype(np.float64) / photons


def quantize(image: Any, bits: int) -> np.ndarray:
    """Clip to [0, 1] and round to ``2**bits - 1`` equal steps (like an ADC / image file).

    Args:
        image: array of any shape, finite.
        bits: bit depth, an int from 1 to 16.

    Returns:
        float64 array of the same shape with values in ``{j / (2**bits - 1)}``.

    Raises:
        TypeError: if ``bits`` is not an int or ``image`` is not numeric.
        ValueError: for bits outside 1..16 or NaN/Inf in the image.

    Example:
        >>> quantize(np.array([-0.2, 0.3, 0.8, 1.7]), 1)
        array([0., 0., 1., 1.])
    """
    x = _as_image(image)
    bits = _validation.check_int(bits, "bits", minimum=1, maximum=16, example=8)
    levels = float(2**bits - 1)
    return np.round(np.clip(x, 0.0, 1.0) * levels) / levels

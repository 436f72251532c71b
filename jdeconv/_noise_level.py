"""Noise level of an image from the image alone (no clean reference).

:func:`estimate_noise` returns the standard deviation ``σ`` of additive white
noise on an image. It is the smallest eigenvalue of the covariance of the
image's ``r × r`` patches (Liu, Tanaka & Okutomi 2013; Chen, Zhu & Heng 2015):
white noise adds ``σ² I`` to the patch covariance, while a *blurred* image
(the ``y`` of kernel estimation) is smooth, so its patches lie close to a
low-dimensional subspace and the smallest eigenvalue is noise alone. The
corresponding eigenvector is the ``r × r`` filter that lets through the least
image structure, chosen for this image: it adapts to the blur (anisotropic,
motion) where a fixed high-pass filter (Haar HH band, Immerkær's Laplacian
mask) leaks edges into the estimate.

Notes:
  With ``p = r²`` and ``N`` patches, the smallest sample eigenvalue of pure
  noise sits near ``σ² (1 − √(p/N))²`` (Marchenko–Pastur); half of that
  shrinkage is undone, which centres the estimate on natural images
  (measured median bias −0.7 %, see ``experiments/ACCURACY.md``). The patch
  second moments are the normal matrix of a valid convolution with an
  ``r × r`` kernel, so they come from :func:`jdeconv._gram.gram_matrix`
  (FFT + border corrections) without forming the patch matrix.

  Accuracy (measured on scikit-image photographs and ``fractal_image``,
  128² and 256², blurred by Gaussian, disk and motion kernels): within 10 %
  of the true σ for σ ≥ 0.002, also after 8-bit quantisation for
  σ ≥ 0.005 (the quantisation noise ``1/(255 √12) ≈ 0.0011`` adds to σ in
  quadrature, as it should). Where the blur leaves one direction sharp
  (short motion blurs) and the scene is strongly textured, image structure
  leaks in and σ ≤ 0.002 is over-estimated (up to +40 %). A noise-free image
  returns the residual structure level (~1e-4 to 1e-3), not 0.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jdeconv import _gram, _validation

__all__ = ["DEFAULT_PATCH_SIZE", "enough_patches", "estimate_noise"]

DEFAULT_PATCH_SIZE = 7


def enough_patches(shape, r: int) -> bool:
    """Whether an image of ``shape`` holds the ``2 r²`` patches the estimate needs."""
    m, n = shape
    return max(m - r + 1, 0) * max(n - r + 1, 0) >= 2 * r * r


def _edge_sums(v, r: int, axis: int):
    """``(r, ...)``: the sums of ``v`` over its first ``a`` and its last ``r - 1 - a``
    entries along ``axis``, for a = 0 … r − 1 (what offset ``a`` of a window of
    ``len - r + 1`` leaves out)."""
    v = jnp.moveaxis(v, axis, 0)
    zero = jnp.zeros((1,) + v.shape[1:], v.dtype)
    head = jnp.concatenate([zero, jnp.cumsum(v[:r - 1], axis=0)])  # first a entries
    tail = jnp.concatenate([zero, jnp.cumsum(v[::-1][:r - 1], axis=0)])  # last a entries
    return head + tail[::-1]


def _box_means(y, r: int):
    """Mean of ``y[a:a+M', b:b+N']`` for every offset (a, b) in the r × r window.

    Each window leaves out at most ``r - 1`` rows and columns at the edges, so
    the sums are the image's column sums less its edge rows' (one pass over the
    image; a 2-D cumulative sum took 1.9 ms at 498²), then the same along the rows.
    """
    m, n = y.shape
    Mp, Np = m - r + 1, n - r + 1
    cols = jnp.sum(y, axis=0)[None, :] - _edge_sums(y, r, 0)  # (r, n): rows a .. a+M'-1
    s = jnp.sum(cols, axis=1)[:, None] - _edge_sums(cols, r, 1).T  # (r, r)
    return s / (Mp * Np)


# Images above this many pixels get their patch moments strip by strip: the whole
# image's FFTs raised a 2048² estimate's peak by ~55 MB.
_STRIP_PIXELS = 1 << 18


def _patch_second_moments(y, r: int, strip_rows: int | None = None):
    """Sum over all ``r × r`` patches of their outer products, ``(r², r²)``.

    The patches whose top rows lie in ``[i, i + S)`` come from the rows
    ``[i, i + S + r - 1)``, so the sum over strips of ``S`` patch rows is the
    whole image's: exact, with FFT buffers a strip high instead of the image.
    """
    m, n = y.shape
    P = m - r + 1  # patch rows
    if strip_rows is None:
        strip_rows = max(_STRIP_PIXELS // max(n, 1) - r + 1, 8 * r)
    S = int(strip_rows)
    full = P // S
    if full < 2:
        return _gram._gram_impl(y, r, r, "valid")

    def strip(i, acc):
        rows = jax.lax.dynamic_slice_in_dim(y, i * S, S + r - 1, axis=0)
        return acc + _gram._gram_impl(rows, r, r, "valid")

    acc = jax.lax.fori_loop(0, full, strip, jnp.zeros((r * r, r * r), y.dtype))
    if full * S < P:
        acc = acc + _gram._gram_impl(y[full * S:], r, r, "valid")
    return acc


def noise_sigma(y, r: int = DEFAULT_PATCH_SIZE, strip_rows: int | None = None):
    """σ of a validated 2-D image (traceable; :func:`estimate_noise` without the checks).

    ``strip_rows`` (static): patch rows per strip of the moment sum (default: strips of
    about 2¹⁸ pixels, the whole image when that makes fewer than two).
    """
    m, n = y.shape
    N = (m - r + 1) * (n - r + 1)
    y = y - jnp.mean(y)
    # gram[(p, q), (p', q')] = sum over patches of y[i + r-1-p, j + r-1-q] * (...)'
    second = _patch_second_moments(y, r, strip_rows) / N
    mu = _box_means(y, r)[::-1, ::-1].reshape(-1)  # same (flipped) tap order
    cov = second - jnp.outer(mu, mu)
    cov = 0.5 * (cov + cov.T)
    lam = jnp.maximum(jnp.linalg.eigvalsh(cov)[0], 0)
    shrink = 1.0 - 0.5 * math.sqrt(r * r / N)
    return jnp.sqrt(lam) / shrink


_STEPS = (1.0, 1.0 / 255.0, 1.0 / 65535.0)


def quantization_step(y):
    """The step of the grid ``y`` lies on (0–255 integers, 8 or 16 bit in [0, 1]), or 0.

    Traceable. A grid counts when every value is within 1e-3 steps of it and
    the image spans at least 16 steps (so a binary image is not "quantised").

    Example:
      >>> import numpy as np
      >>> y = np.round(np.linspace(0, 1, 50) * 255) / 255
      >>> round(float(quantization_step(y)) * 255, 6)
      1.0
    """
    y = jnp.asarray(y)
    step = jnp.zeros((), y.dtype)
    for q in reversed(_STEPS):  # coarsest last, so it wins
        v = y / q
        on_grid = jnp.max(jnp.abs(v - jnp.round(v))) < 1e-3
        spans = (jnp.max(y) - jnp.min(y)) / q >= 16
        step = jnp.where(on_grid & spans, jnp.asarray(q, y.dtype), step)
    return step


def estimate_noise(y, *, patch_size: int = DEFAULT_PATCH_SIZE) -> jax.Array:
    """Standard deviation of the additive white noise on a (blurred) image.

    Pure JAX: works under ``jax.jit`` and ``jax.vmap`` (vmap over a stack of
    images for a batch). Outside a transformation the input is validated
    eagerly (2-D, non-empty, finite, large enough for the patch size).

    Args:
      y: image, shape (m, n), any real dtype (integers are converted to the
        default float type; values are taken as they are, so an 8-bit image
        read as 0..255 gives σ in the same units).
      patch_size: side r of the square patches (static); 7 by default. Larger
        patches suppress more image structure but need more pixels: the image
        must hold at least ``2 r²`` patches.

    Returns:
      σ as a 0-d array of the input's float dtype.

    Raises:
      ValueError, TypeError: for a non-2-D, empty, non-finite or too small
        image, or a bad ``patch_size``.

    Example:
      >>> import numpy as np, jdeconv
      >>> from jdeconv._noise_level import estimate_noise
      >>> x = jdeconv.data.natural_image("camera", shape=128)
      >>> y = jdeconv.conv2d(x, jdeconv.data.gaussian_kernel(9, 1.5))
      >>> y = jdeconv.data.add_gaussian_noise(y, 0.01, seed=0)
      >>> bool(abs(float(estimate_noise(y)) / 0.01 - 1) < 0.1)
      True
    """
    patch_size = _validation.check_int(patch_size, "patch_size", minimum=2, maximum=64, example=7)
    y = _validation.as_float_array("y (image)", y, ndim=2)
    m, n = y.shape
    r = patch_size
    patches = max(m - r + 1, 0) * max(n - r + 1, 0)
    if not enough_patches((m, n), r):
        raise ValueError(
            f"image of shape {(m, n)} is too small to estimate its noise with {r}x{r} "
            f"patches: it holds {patches} patches, at least {2 * r * r} are needed. Use a "
            "larger image or a smaller patch_size.")
    return _estimate_jit(y, r)


_estimate_jit = jax.jit(noise_sigma, static_argnums=1)

"""Frequency-domain estimate: regularised (Wiener-style) division, done right.

Dividing spectra, ``H = Y / X``, assumes the blur is circular. It is exact for
``mode="circular"``, and for ``mode="full"`` after zero-padding the original;
for ``"valid"`` (and ``"same"``, reduced to its valid part) the blurred image is
paired with the part of the original it was computed from and both are tapered
by the same smooth (Tukey) window, so the periodic wrap-around of the FFT sees
no edges. Near-zero frequencies are tamed by Tikhonov regularisation:

    H = conj(X) Y / (|X|² + ε mean|X|²)

The estimate is then cropped to the kernel window and projected on the prior.
This is the fast approximate path: one FFT pair, no iterations. On valid or
same data it is biased by the taper and ε (typically 1e-2 to 1e-1 relative
error); use the exact solver when accuracy matters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdeconv import _conv, _priors

# Relative Tikhonov level when the caller gives none: tiny where the model is
# exactly periodic, larger where the taper makes it approximate.
DEFAULT_EPS = {"circular": 1e-12, "full": 1e-12, "valid": 1e-3}


def _tukey(length: int, taper: int, dtype):
    if taper <= 0:
        return jnp.ones((length,), dtype)
    i = jnp.arange(length, dtype=dtype)
    ramp = 0.5 * (1 - jnp.cos(jnp.pi * (jnp.minimum(i, length - 1 - i) + 0.5) / taper))
    return jnp.where(jnp.minimum(i, length - 1 - i) < taper, ramp, 1.0)


def _periodic_pair(x, y, kernel_shape, mode):
    """(x_periodic, y_periodic) with y ≈ circular conv of x (centre convention)."""
    (k, l) = kernel_shape
    ck, cl = (k - 1) // 2, (l - 1) // 2
    if mode == "circular":
        return x, y
    if mode == "full":
        xp = jnp.pad(x, ((0, k - 1), (0, l - 1)))
        return jnp.roll(xp, (ck, cl), axis=(0, 1)), y
    M, N = y.shape
    xc = x[k - 1 - ck:k - 1 - ck + M, l - 1 - cl:l - 1 - cl + N]
    w = jnp.outer(_tukey(M, min(2 * k, M // 4), x.dtype), _tukey(N, min(2 * l, N // 4), x.dtype))
    return w * xc, w * y


def solve(x, y, kernel_shape, mode: str, eps) -> jax.Array:
    """Unconstrained frequency-domain kernel estimate, shape (k, l).

    Args:
      x: original, (m, n).
      y: blurred image in ``mode`` ("valid", "full" or "circular").
      kernel_shape: (k, l).
      mode: geometry of ``y``.
      eps: relative Tikhonov level (scalar).

    Returns:
      The kernel estimate before any prior.
    """
    (k, l) = kernel_shape
    ck, cl = (k - 1) // 2, (l - 1) // 2
    xp, yp = _periodic_pair(x, y, kernel_shape, mode)
    X = jnp.fft.rfft2(xp)
    Y = jnp.fft.rfft2(yp, s=xp.shape)
    power = jnp.real(X * jnp.conj(X))
    H = jnp.conj(X) * Y / (power + eps * jnp.mean(power))
    hc = jnp.fft.irfft2(H, s=xp.shape).astype(x.dtype)
    # h[a, b] = hc[(a - ck) mod M, (b - cl) mod N]
    return jnp.roll(hc, (ck, cl), axis=(0, 1))[:k, :l]


# The exact solver's first active set from this estimate (see active_set_guess): worth
# its three FFTs from about this many taps (the full-support factorisation it replaces
# costs ~n³/3; at 255², 17x17 it was a wash, from 21x21 on a gain).
GUESS_MIN_TAPS = 400
GUESS_CROP = 256
GUESS_EPS = 1e-3
# A guess that frees more of the support than this gives way to the full support: its
# first factorisation is nearly the full one anyway, and a smooth kernel filling its
# box (noise-free data: every tap positive, the full support is optimal at once) then
# took 2-4 iterations instead of 1, 1.5-2.8x the time.
GUESS_DENSE = 0.85


def active_set_guess(x, y, kernel_shape, mask, *, eq: bool, crop: int = GUESS_CROP,
                     eps: float = GUESS_EPS, dense: float = GUESS_DENSE) -> jax.Array:
    """A first active set for the exact solver: the taps a nonnegative kernel probably has at zero.

    The frequency-domain estimate of a centred crop of the valid pair (at most
    ``crop`` x ``crop`` blurred pixels, cut to 5-smooth sides), projected on the
    prior's set (``h >= 0`` on ``mask``, and ``sum h = 1`` with ``eq``); its
    zeros. Without a guess the exact solver starts from the full support, whose
    first factorisation is of the whole ``(k l)²`` matrix; from this one its
    first free set is the estimate's support, typically 100-650 of 961 taps at
    31x31, and the later iterations follow as before. A guess that frees more
    than ``dense`` of the support is replaced by the full support. The solve
    stays exact: the active-set method stops only at a KKT point, wherever it
    started.

    Args:
      x: original, (m, n), valid geometry.
      y: blurred image, (m - k + 1, n - l + 1).
      kernel_shape: (k, l).
      mask: (k l,) bool support.
      eq: the prior has the sum-to-one constraint (Python bool).
      crop: largest side of the blurred crop (static).
      eps: relative Tikhonov level of the division.
      dense: share of the support above which the full support is returned.

    Returns:
      (k l,) bool, True where the solver starts with the tap at zero.

    Example:
      >>> import jax.numpy as jnp, jdeconv
      >>> x = jnp.asarray(jdeconv.data.natural_image("camera", shape=96))
      >>> h = jnp.zeros((9, 9)).at[2:5, 3:7].set(1 / 12)  # 12 taps
      >>> guess = active_set_guess(x, jdeconv.conv2d(x, h), (9, 9), jnp.ones(81, bool), eq=True)
      >>> bool(guess.reshape(9, 9)[2:5, 3:7].any()), int(guess.sum()) > 30  # support free
      (False, True)
    """
    k, l = kernel_shape
    M, N = y.shape
    R, C = _conv.fast_len_at_most(min(M, crop)), _conv.fast_len_at_most(min(N, crop))
    r0, c0 = (M - R) // 2, (N - C) // 2
    yc = y[r0:r0 + R, c0:c0 + C]
    xc = x[r0:r0 + R + k - 1, c0:c0 + C + l - 1]
    h = solve(xc, yc, kernel_shape, "valid", eps).ravel()
    h = _priors.project_flags(h, mask, jnp.asarray(eq), jnp.asarray(True))
    free = mask & (h > 0)
    return ~jnp.where(jnp.sum(free) > dense * jnp.sum(mask), mask, free)

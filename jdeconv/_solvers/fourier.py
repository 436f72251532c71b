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

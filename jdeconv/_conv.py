"""The forward model: 2-D convolution in four geometries, and its two adjoints.

Conventions (``x`` is the image, shape (m, n); ``h`` the kernel, shape (k, l)):

* ``"valid"`` — MATLAB ``conv2(x, h, 'valid')`` / ``scipy.signal.convolve2d``:
  ``y[i, j] = sum_{a, b} h[a, b] x[i + k-1-a, j + l-1-b]``, shape (m-k+1, n-l+1).
* ``"full"`` — zero boundary, shape (m+k-1, n+l-1).
* ``"same"`` — the central (m, n) part of ``"full"``, starting at row
  ``(k-1)//2`` and column ``(l-1)//2``, exactly as ``scipy.signal.convolve2d``.
  For even kernel sizes MATLAB's ``conv2(..., 'same')`` starts one pixel later
  (at ``k//2``); ``full[k//2:k//2+m, l//2:l//2+n]`` reproduces MATLAB.
* ``"circular"`` — periodic boundary with the same centre as ``"same"``:
  ``scipy.signal.convolve2d(x, h, "same", boundary="wrap")``, shape (m, n).

Every mode is ``valid`` convolution of a padded image ``P x`` (no padding,
zero padding, or periodic padding). The adjoint with respect to the kernel is
then the correlation of ``P x`` with the residual, cropped to the kernel
support, and the adjoint with respect to the image is ``P^T`` applied to the
full convolution of the residual with the flipped kernel.

Two implementations are provided: direct (``lax.conv_general_dilated`` at
``Precision.HIGHEST``) and FFT; ``method="auto"`` takes the FFT when the
smaller operand is large.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jdeconv import _geometry, _validation

# Direct convolution costs ~ k*l per output pixel, FFT ~ log(m*n): switch when
# the smaller operand has more taps than this. On CPU, XLA's direct convolution
# is slower than the FFT from 3x3 kernels up (3-40x, benchmarks/bench_conv.py);
# on accelerators the convolution units make direct faster for small kernels.
_FFT_TAPS = {"cpu": 4}
_FFT_TAPS_ACCELERATOR = 100


def _is_5_smooth(v: int) -> bool:
    """Whether ``v`` has no prime factor above 5."""
    for f in (2, 3, 5):
        while v % f == 0:
            v //= f
    return v == 1


def fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n, even when > 1 (suits real FFTs)."""
    v = max(int(n), 1)
    while not (_is_5_smooth(v) and (v == 1 or v % 2 == 0)):
        v += 1
    return v


def fast_len_at_most(n: int) -> int:
    """Largest 5-smooth integer <= n (a fast FFT length; odd allowed), at least 1."""
    v = max(int(n), 1)
    while not _is_5_smooth(v):
        v -= 1
    return v


def _use_fft(method, taps):
    if method == "auto":
        return taps > _FFT_TAPS.get(jax.default_backend(), _FFT_TAPS_ACCELERATOR)
    return method == "fft"


def _valid_conv_direct(x, h):
    """valid convolution of 2-D ``x`` with 2-D ``h`` via lax (h flipped)."""
    out = lax.conv_general_dilated(
        x[None, None], h[::-1, ::-1][None, None], window_strides=(1, 1),
        padding="VALID", precision=lax.Precision.HIGHEST)
    return out[0, 0]


def _valid_corr_direct(x, r):
    """valid correlation ``c[s, t] = sum_ij r[i, j] x[i+s, j+t]``."""
    out = lax.conv_general_dilated(
        x[None, None], r[None, None], window_strides=(1, 1), padding="VALID",
        precision=lax.Precision.HIGHEST)
    return out[0, 0]


def _circular_conv_fft(a, b, shape):
    """Circular convolution of 2-D ``a`` and ``b``, both zero-padded to ``shape``.

    Each axis of the transform is padded further to a 5-smooth length: a
    length with a large prime factor (255 + 15 - 1 = 269, 512 + 14 = 526 =
    2 x 263) makes the FFT several times slower. The extra zeros only move
    the wrap-around further out, and the result is cropped back to ``shape``.
    """
    s = (fast_len(shape[0]), fast_len(shape[1]))
    fa = jnp.fft.rfft2(a, s=s)
    fb = jnp.fft.rfft2(b, s=s)
    return jnp.fft.irfft2(fa * fb, s=s)[:shape[0], :shape[1]].astype(a.dtype)


def _full_conv_fft(a, b):
    """Full linear convolution of two 2-D arrays with real FFTs."""
    shape = (a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1)
    return _circular_conv_fft(a, b, shape)


def _valid_conv_fft(x, h):
    # The valid part of a circular convolution of length m is free of
    # wrap-around (output row i >= k-1 reads x rows i-k+1..i): no m+k-1 frame.
    (m, n), (k, l) = x.shape, h.shape
    return _circular_conv_fft(x, h, (m, n))[k - 1:m, l - 1:n]


def _valid_corr_fft(x, r):
    (m, n), (M, N) = x.shape, r.shape
    return _circular_conv_fft(x, r[::-1, ::-1], (m, n))[M - 1:m, N - 1:n]


def valid_conv(x, h, method: str = "auto"):
    """Valid convolution of 2-D ``x`` with 2-D ``h`` (no validation; for traced code)."""
    if _use_fft(method, min(h.size, x.size)):
        return _valid_conv_fft(x, h)
    return _valid_conv_direct(x, h)


def valid_corr(x, r, method: str = "auto"):
    """Valid correlation ``c[s, t] = sum_ij r[i, j] x[i+s, j+t]`` (no validation)."""
    if _use_fft(method, min(r.size, x.size)):
        return _valid_corr_fft(x, r)
    return _valid_corr_direct(x, r)


def conv2d(x, h, mode: str = "valid", *, method: str = "auto") -> jax.Array:
    """2-D convolution of an image with a kernel (not commutative in 'valid').

    Args:
      x: image, shape (m, n). Integer images are converted to float.
      h: kernel, shape (k, l).
      mode: ``"valid"`` (m-k+1, n-l+1), ``"same"`` (m, n), ``"full"``
        (m+k-1, n+l-1) or ``"circular"`` (m, n, periodic); see the module
        docstring for the exact index conventions (scipy's for ``"same"``).
      method: ``"direct"``, ``"fft"`` or ``"auto"`` (results agree to float
        tolerance).

    Returns:
      The blurred image, dtype the common float type of ``x`` and ``h``.

    Raises:
      ValueError: if an input is not 2-D, empty or non-finite, if the mode is
        unknown, or if the kernel is larger than the image in ``"valid"`` or
        ``"circular"`` mode.

    Example:
      >>> import jax.numpy as jnp, jdeconv
      >>> jdeconv.conv2d(jnp.ones((4, 5)), jnp.ones((2, 2))).shape
      (3, 4)

    Notes:
      ``y[i, j] = sum_{a<k, b<l} h[a, b] (P x)[i + k-1-a, j + l-1-b]`` with ``P``
      the padding of ``mode``. As a linear map of ``h`` its adjoint is
      :func:`conv2d_adjoint_kernel`; as a map of ``x``,
      :func:`conv2d_adjoint_image`.
    """
    mode = _validation.check_mode(mode)
    _validation.check_method(method)
    x = _validation.as_float_array("x (image)", x)
    h = _validation.as_float_array("h (kernel)", h)
    x, h = _validation.common_float(x, h)
    _validation.check_kernel_fits(x.shape, h.shape, mode)
    return _conv2d_program(x, h, mode=mode, method=method)


# The computations behind the validated public functions, one compiled program per
# (shapes, dtype, mode, method): called eagerly, the padding, FFTs and crops would otherwise
# compile one small program each, on every new shape.
@functools.partial(jax.jit, static_argnames=("mode", "method"))
def _conv2d_program(x, h, *, mode, method):
    return valid_conv(_geometry.pad(x, h.shape, mode), h, method)


@functools.partial(jax.jit, static_argnames=("kernel_shape", "mode", "method"))
def _adjoint_kernel_program(x, r, *, kernel_shape, mode, method):
    return valid_corr(_geometry.pad(x, kernel_shape, mode), r, method)[::-1, ::-1]


@functools.partial(jax.jit, static_argnames=("image_shape", "mode", "method"))
def _adjoint_image_program(h, r, *, image_shape, mode, method):
    (k, l) = h.shape
    rp = jnp.pad(r, ((k - 1, k - 1), (l - 1, l - 1)))
    z = valid_conv(rp, h[::-1, ::-1], method)
    return _geometry.pad_transpose(z, image_shape, h.shape, mode)


def conv2d_adjoint_kernel(x, r, kernel_shape, mode: str = "valid", *,
                          method: str = "auto") -> jax.Array:
    """Adjoint of ``h -> conv2d(x, h, mode)``: the correlation ``x ⋆ r``.

    This is the core of the loss gradient: ``grad_h ½||x*h − y||² =
    conv2d_adjoint_kernel(x, x*h − y, h.shape, mode)``.

    Args:
      x: image, shape (m, n).
      r: array in the output space of ``conv2d(x, h, mode)`` (e.g. a residual).
      kernel_shape: ``(k, l)`` or an int.
      mode: geometry, as in :func:`conv2d`.
      method: ``"direct"``, ``"fft"`` or ``"auto"``.

    Returns:
      Array of shape (k, l) with ``<conv2d(x, h), r> = <h, result>`` for all h.

    Example:
      >>> import jax.numpy as jnp, jdeconv
      >>> jdeconv.conv2d_adjoint_kernel(jnp.ones((5, 5)), jnp.ones((3, 3)), 3).shape
      (3, 3)

    Notes:
      ``g[a, b] = sum_{i,j} r[i, j] (P x)[i + k-1-a, j + l-1-b]``: the valid
      correlation of the padded image with ``r``, flipped.
    """
    mode = _validation.check_mode(mode)
    _validation.check_method(method)
    kshape = _validation.as_shape(kernel_shape, "kernel_shape")
    x = _validation.as_float_array("x (image)", x)
    r = _validation.as_float_array("r (residual)", r)
    x, r = _validation.common_float(x, r)
    _validation.check_kernel_fits(x.shape, kshape, mode)
    expected = _geometry.output_shape(x.shape, kshape, mode)
    if tuple(r.shape) != expected:
        raise ValueError(
            f"r has shape {tuple(r.shape)} but conv2d of an image {tuple(x.shape)} with a "
            f"kernel {kshape} in mode {mode!r} has shape {expected}; pass a residual of "
            "that shape.")
    return _adjoint_kernel_program(x, r, kernel_shape=kshape, mode=mode, method=method)


def conv2d_adjoint_image(h, r, image_shape, mode: str = "valid", *,
                         method: str = "auto") -> jax.Array:
    """Adjoint of ``x -> conv2d(x, h, mode)`` (correlation with the kernel).

    Args:
      h: kernel, shape (k, l).
      r: array in the output space of ``conv2d(x, h, mode)``.
      image_shape: ``(m, n)``, the shape of the image space.
      mode: geometry, as in :func:`conv2d`.
      method: ``"direct"``, ``"fft"`` or ``"auto"``.

    Returns:
      Array of shape (m, n) with ``<conv2d(x, h), r> = <x, result>`` for all x.

    Example:
      >>> import jax.numpy as jnp, jdeconv
      >>> jdeconv.conv2d_adjoint_image(jnp.ones((2, 2)), jnp.ones((3, 4)), (4, 5)).shape
      (4, 5)

    Notes:
      ``P^T (r * flip(h))_full``, with ``P`` the padding of ``mode`` (crop for
      zero padding, fold back for periodic padding).
    """
    mode = _validation.check_mode(mode)
    _validation.check_method(method)
    ishape = _validation.as_shape(image_shape, "image_shape", example="(256, 256)")
    h = _validation.as_float_array("h (kernel)", h)
    r = _validation.as_float_array("r (residual)", r)
    h, r = _validation.common_float(h, r)
    _validation.check_kernel_fits(ishape, h.shape, mode)
    expected = _geometry.output_shape(ishape, h.shape, mode)
    if tuple(r.shape) != expected:
        raise ValueError(
            f"r has shape {tuple(r.shape)} but conv2d of an image {ishape} with a kernel "
            f"{tuple(h.shape)} in mode {mode!r} has shape {expected}; pass a residual of "
            "that shape.")
    return _adjoint_image_program(h, r, image_shape=ishape, mode=mode, method=method)

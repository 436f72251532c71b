"""The data-fidelity loss ``f(h) = ½ ||conv2d(x, h) - y||²`` and its gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdeconv import _conv, _geometry, _validation


def _validated(h, x, y, mode):
    mode = _validation.check_mode(mode)
    h = _validation.as_float_array("h (kernel)", h)
    x = _validation.as_float_array("x (original image)", x)
    y = _validation.as_float_array("y (blurred image)", y)
    h, x, y = _validation.common_float(h, x, y)
    _validation.check_kernel_fits(x.shape, h.shape, mode)
    expected = _geometry.output_shape(x.shape, h.shape, mode)
    if tuple(y.shape) != expected:
        raise ValueError(
            f"y (blurred image) has shape {tuple(y.shape)} but conv2d of x {tuple(x.shape)} "
            f"with a kernel {tuple(h.shape)} in mode {mode!r} gives {expected}. "
            + ("For a blurred image as large as the original use mode='same'."
               if mode == "valid" and tuple(y.shape) == tuple(x.shape) else
               "Check the kernel size and the mode."))
    return h, x, y, mode


def data_loss(h, x, y, mode: str = "valid") -> jax.Array:
    """``½ ||conv2d(x, h, mode) - y||²``.

    Args:
      h: kernel, shape (k, l).
      x: original image, shape (m, n).
      y: blurred image, shape ``conv2d(x, h, mode).shape``.
      mode: convolution geometry.

    Returns:
      Scalar loss.

    Example:
      >>> import jax.numpy as jnp, jdeconv
      >>> x = jnp.arange(16.0).reshape(4, 4); h = jnp.ones((2, 2)) / 4
      >>> float(jdeconv.data_loss(h, x, jdeconv.conv2d(x, h)))
      0.0
    """
    h, x, y, mode = _validated(h, x, y, mode)
    r = _conv.valid_conv(_geometry.pad(x, h.shape, mode), h) - y
    return 0.5 * jnp.vdot(r, r)


def data_loss_grad(h, x, y, mode: str = "valid") -> jax.Array:
    """Closed-form gradient ``x ⋆ (conv2d(x, h) - y)`` of :func:`data_loss`.

    Equal to ``jax.grad(data_loss)(h, x, y, mode)``: the adjoint of the kernel
    operator (:func:`jdeconv.conv2d_adjoint_kernel`) applied to the residual.

    Args:
      h: kernel, shape (k, l).
      x: original image, shape (m, n).
      y: blurred image.
      mode: convolution geometry.

    Returns:
      Gradient, shape (k, l).

    Example:
      >>> import jax.numpy as jnp, jdeconv
      >>> x = jnp.arange(16.0).reshape(4, 4); h = jnp.ones((2, 2)) / 4
      >>> jdeconv.data_loss_grad(h, x, jdeconv.conv2d(x, 2 * h)).shape
      (2, 2)
    """
    h, x, y, mode = _validated(h, x, y, mode)
    xp = _geometry.pad(x, h.shape, mode)
    r = _conv.valid_conv(xp, h) - y
    return _conv.valid_corr(xp, r)[::-1, ::-1]

"""The data-fidelity loss ``f(h) = ½ ||conv2d(x, h) - y||²`` and its gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdeconv import _checks, _conv


def _validated(h, x, y, mode):
    mode = _checks.check_mode(mode)
    h = _checks.as_float_array("h (kernel)", h)
    x = _checks.as_float_array("x (original image)", x)
    y = _checks.as_float_array("y (blurred image)", y)
    h, x, y = _checks.common_float(h, x, y)
    _checks.check_kernel_fits(x.shape, h.shape, mode)
    expected = _checks.output_shape(x.shape, h.shape, mode)
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
    r = _conv._valid_conv(_conv._pad(x, h.shape, mode), h, "auto") - y
    return 0.5 * jnp.vdot(r, r)


def data_loss_grad(h, x, y, mode: str = "valid") -> jax.Array:
    """Closed-form gradient ``x ⋆ (conv2d(x, h) - y)`` of :func:`data_loss`.

    Equal to ``jax.grad(data_loss)(h, x, y, mode)``, computed as the adjoint
    of the kernel operator applied to the residual.

    Args:
      h: kernel, shape (k, l).
      x: original image, shape (m, n).
      y: blurred image.
      mode: convolution geometry.

    Returns:
      Gradient, shape (k, l).
    """
    h, x, y, mode = _validated(h, x, y, mode)
    xp = _conv._pad(x, h.shape, mode)
    r = _conv._valid_conv(xp, h, "auto") - y
    return _conv._valid_corr(xp, r, "auto")[::-1, ::-1]

"""Geometry of the four convolution modes: padding, cropping, output shapes.

Every mode is the *valid* convolution of a padded image ``P x``:

* ``"valid"``: no padding; output (m-k+1, n-l+1).
* ``"full"``: zero padding by (k-1, l-1) on every side; output (m+k-1, n+l-1).
* ``"same"``: zero padding by ``k-1-ck`` above and ``ck`` below (``ck =
  (k-1)//2``, scipy's centre), likewise for columns; output (m, n).
* ``"circular"``: the same offsets with periodic padding; output (m, n).

The estimation problem of a ``"same"`` pair is solved on the part of the
blurred image the valid model explains (:func:`same_to_valid`), so unknown
borders never bias the kernel. This module is the one place these index
conventions are written.
"""

from __future__ import annotations

import jax.numpy as jnp


def centre(kernel_shape) -> tuple[int, int]:
    """Index ``(ck, cl) = ((k-1)//2, (l-1)//2)`` of a kernel's centre tap (scipy's convention)."""
    k, l = kernel_shape
    return (k - 1) // 2, (l - 1) // 2


def padding(kernel_shape, mode: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, bottom), (left, right))`` padding that turns ``mode`` into valid."""
    k, l = kernel_shape
    if mode == "valid":
        return ((0, 0), (0, 0))
    if mode == "full":
        return ((k - 1, k - 1), (l - 1, l - 1))
    ck, cl = centre(kernel_shape)
    return ((k - 1 - ck, ck), (l - 1 - cl, cl))


def output_shape(image_shape, kernel_shape, mode: str) -> tuple[int, int]:
    """Shape of ``conv2d(x, h, mode)`` for an image and a kernel of these shapes."""
    (m, n), (k, l) = tuple(image_shape)[-2:], kernel_shape
    if mode == "valid":
        return (m - k + 1, n - l + 1)
    if mode == "full":
        return (m + k - 1, n + l - 1)
    return (m, n)


def solver_mode(mode: str) -> str:
    """The geometry the estimation problem is solved in (``"same"`` becomes ``"valid"``)."""
    return "valid" if mode == "same" else mode


def pad(x, kernel_shape, mode: str):
    """The padded image ``P x`` whose valid convolution gives ``mode`` (last two axes)."""
    if mode == "valid":
        return x
    pads = [(0, 0)] * (x.ndim - 2) + list(padding(kernel_shape, mode))
    return jnp.pad(x, pads, mode="wrap" if mode == "circular" else "constant")


def _fold_rows(z, top: int, size: int, bottom: int, periodic: bool):
    """Transpose of padding the rows of ``z`` by ``top``/``bottom``."""
    core = z[top:top + size]
    if periodic and top:
        core = core.at[size - top:].add(z[:top])
    if periodic and bottom:
        core = core.at[:bottom].add(z[top + size:])
    return core


def pad_transpose(z, image_shape, kernel_shape, mode: str):
    """``Pᵀ z``: crop for zero padding, fold back for periodic padding (2-D ``z``)."""
    if mode == "valid":
        return z
    m, n = image_shape
    (top, bottom), (left, right) = padding(kernel_shape, mode)
    periodic = mode == "circular"
    z = _fold_rows(z, top, m, bottom, periodic)
    return _fold_rows(z.T, left, n, right, periodic).T


def valid_window(image_shape, kernel_shape, mode: str) -> tuple[slice, slice]:
    """Slices of a ``mode``-shaped blurred image that the estimate is fitted to.

    For ``"same"`` that is the part explained by the valid model (the pixels
    whose footprint lies inside the original); for the other modes, all of it.
    """
    if mode != "same":
        rows, cols = output_shape(image_shape, kernel_shape, mode)
        return slice(0, rows), slice(0, cols)
    (m, n), (k, l) = tuple(image_shape)[-2:], kernel_shape
    ck, cl = centre(kernel_shape)
    return slice(k - 1 - ck, m - ck), slice(l - 1 - cl, n - cl)


def same_to_valid(y, kernel_shape):
    """The part of a ``"same"`` blurred image explained by the valid model (last two axes)."""
    rows, cols = valid_window(y.shape[-2:], kernel_shape, "same")
    return y[..., rows, cols]

"""The forward model of a spatially varying blur: a field of kernels, and its adjoints.

A *kernel field* is a grid of ``gy × gx`` kernels ``H[ty, tx]`` (shape
``(gy, gx, k, l)``) placed at *tile centres*: rows ``cr[0] < … < cr[gy-1]`` and
columns ``cc[0] < … < cc[gx-1]`` in the pixel coordinates of the original
image ``x``. The kernel at a pixel is the bilinear interpolation of the grid,
clamped beyond the outermost centres, and the blurred image is

.. math::

    y(p) = \\sum_t w_t(p)\\, (h_t * x)(p) = (h_p * x)(p), \\qquad
    h_p = \\sum_t w_t(p)\\, h_t,

with ``*`` the convolution of :func:`jdeconv.conv2d` in the same geometry.
The weights are separable, ``w_t(p) = α_ty(u) β_tx(v)``, where ``(u, v)`` is
the image position of output pixel ``p`` (where its kernel's centre tap
lands) and ``α_ty`` is the piecewise-linear "hat" function that is 1 at
``cr[ty]``, 0 at the neighbouring centres and constant beyond the first and
last centre (likewise ``β``). The weights are non-negative and sum to one at
every pixel, so a uniform field reproduces :func:`jdeconv.conv2d` and the
kernel applied at a tile centre is that tile's kernel.

This is the "interpolated-kernel" model (weights on the output) of the
difference-imaging literature: it is exactly the per-pixel convolution with the
interpolated kernel ``h_p``, it is linear in both the image and the kernels,
and it costs one convolution per tile. (Weighting the *input*,
``Σ_t h_t * (w_t ⊙ x)``, blurs each point source with a fixed kernel instead
and is not the interpolated kernel at any pixel.)

Adjoints, from the single-kernel adjoints of :mod:`jdeconv._conv`::

    w.r.t. kernel h_t:  conv2d_adjoint_kernel(x, w_t ⊙ r, (k, l), mode)
    w.r.t. the image:   Σ_t conv2d_adjoint_image(h_t, w_t ⊙ r, (m, n), mode)

Tiles are processed one at a time (``lax.scan``/``lax.map``), so memory stays
a few image-sized buffers for any grid.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jdeconv import _conv, _geometry, _operators, _validation

__all__ = [
    "ImageFieldOperator",
    "KernelFieldOperator",
    "conv2d_field",
    "conv2d_field_adjoint_image",
    "conv2d_field_adjoint_kernels",
    "field_weights",
    "image_field_operator",
    "kernel_field_operator",
    "tile_centres",
]

_FIELD_EXAMPLE = "(3, 3, 9, 9)"


# ----------------------------------------------------------------------------
# Geometry of the field: centres, positions, weights
# ----------------------------------------------------------------------------

def tile_centres(image_shape, grid) -> tuple[np.ndarray, np.ndarray]:
    """Centres of a ``gy × gx`` split of an image into equal tiles (the default centres).

    Args:
      image_shape: ``(m, n)``.
      grid: ``(gy, gx)`` or an int.

    Returns:
      ``(rows, cols)``: float64 arrays of lengths ``gy`` and ``gx``, with
      ``rows[i] = (i + ½) m / gy − ½`` (pixel-centre coordinates).

    Example:
      >>> from jdeconv._field_conv import tile_centres
      >>> tile_centres((8, 6), (2, 3))
      (array([1.5, 5.5]), array([0.5, 2.5, 4.5]))
    """
    m, n = _validation.as_shape(image_shape, "image_shape", example="(256, 256)")
    gy, gx = _validation.as_shape(grid, "grid", example="(3, 3)")
    rows = (np.arange(gy) + 0.5) * (m / gy) - 0.5
    cols = (np.arange(gx) + 0.5) * (n / gx) - 0.5
    return rows, cols


def _output_positions(image_shape, kernel_shape, mode):
    """Image coordinates ``(u, v)`` of the output pixels: where their centre tap lands.

    Output row ``i`` of ``conv2d(x, h, mode)`` is the valid convolution of
    ``P x`` at row ``i``, whose centre tap reads ``(P x)[i + k-1-ck]``, i.e.
    the image row ``i + k-1-ck − top``.
    """
    rows, cols = _geometry.output_shape(image_shape, kernel_shape, mode)
    (top, _), (left, _) = _geometry.padding(kernel_shape, mode)
    k, l = kernel_shape
    ck, cl = _geometry.centre(kernel_shape)
    u = np.arange(rows) + (k - 1 - ck - top)
    v = np.arange(cols) + (l - 1 - cl - left)
    return u.astype(np.float64), v.astype(np.float64)


def _hat_weights(positions, centres):
    """``(g, P)`` piecewise-linear interpolation weights, clamped at both ends."""
    g = centres.shape[0]
    positions = jnp.asarray(positions, centres.dtype)
    if g == 1:
        return jnp.ones((1, positions.shape[0]), centres.dtype)
    eye = jnp.eye(g, dtype=centres.dtype)
    return jax.vmap(lambda e: jnp.interp(positions, centres, e))(eye)


def _weights(image_shape, kernel_shape, mode, centres, dtype):
    """Row weights ``(gy, M)`` and column weights ``(gx, N)`` of the output pixels."""
    u, v = _output_positions(image_shape, kernel_shape, mode)
    cr, cc = (jnp.asarray(c, dtype) for c in centres)
    return _hat_weights(u, cr), _hat_weights(v, cc)


def field_weights(image_shape, kernel_shape, grid, mode: str = "valid", *,
                  centres=None) -> jax.Array:
    """The interpolation weights ``w_t(p)`` of every tile at every output pixel.

    Args:
      image_shape: ``(m, n)`` of the original image.
      kernel_shape: ``(k, l)`` or an int.
      grid: ``(gy, gx)`` or an int.
      mode: geometry of the output, as in :func:`jdeconv.conv2d`.
      centres: ``(rows, cols)`` tile centres in image coordinates (default
        :func:`tile_centres`).

    Returns:
      Array ``(gy, gx, M, N)`` with ``(M, N)`` the output shape; non-negative,
      summing to one over the first two axes.

    Example:
      >>> import numpy as np
      >>> from jdeconv._field_conv import field_weights
      >>> w = field_weights((12, 12), 3, (2, 2))
      >>> w.shape, bool(np.allclose(w.sum(axis=(0, 1)), 1.0))
      ((2, 2, 10, 10), True)
    """
    mode = _validation.check_mode(mode)
    ishape = _validation.as_shape(image_shape, "image_shape", example="(256, 256)")
    kshape = _validation.as_shape(kernel_shape)
    grid = _validation.as_shape(grid, "grid", example="(3, 3)")
    _validation.check_kernel_fits(ishape, kshape, mode)
    centres = _check_centres(centres, ishape, grid)
    dtype = _validation.default_float_dtype()
    wr, wc = _weights(ishape, kshape, mode, centres, dtype)
    return wr[:, None, :, None] * wc[None, :, None, :]


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------

def _check_centres(centres, image_shape, grid):
    """Validates ``(rows, cols)`` tile centres (default: :func:`tile_centres`)."""
    gy, gx = grid
    if gy > image_shape[0] or gx > image_shape[1]:
        raise ValueError(f"grid {grid} has more tiles than the image {tuple(image_shape)} has "
                         "pixels along an axis; use a coarser grid.")
    if centres is None:
        return tuple(jnp.asarray(c) for c in tile_centres(image_shape, grid))
    if not isinstance(centres, (tuple, list)) or len(centres) != 2:
        raise TypeError("centres must be a pair (row_centres, col_centres) of 1-D arrays, got "
                        f"{type(centres).__name__}.")
    out = []
    for name, c, g in (("row", centres[0], gy), ("column", centres[1], gx)):
        c = _validation.as_float_array(f"centres ({name}s)", c, ndim=1)
        if c.shape[0] != g:
            raise ValueError(f"centres has {c.shape[0]} {name} centre(s) but the kernel grid "
                             f"has {g} {name}(s) of tiles; give one centre per tile {name}.")
        if _validation.is_concrete(c) and g > 1 and not bool(np.all(np.diff(np.asarray(c)) > 0)):
            raise ValueError(f"the {name} centres {np.asarray(c).tolist()} must be strictly "
                             "increasing.")
        out.append(c)
    return tuple(out)


def _field_shape(field_shape):
    """Validates ``(gy, gx, k, l)``; returns (grid, kernel_shape)."""
    try:
        dims = tuple(field_shape)
    except TypeError:
        dims = ()
    if len(dims) != 4:
        raise ValueError(f"field_shape must be (gy, gx, k, l) like {_FIELD_EXAMPLE}, got "
                         f"{field_shape!r}.")
    grid = _validation.as_shape(dims[:2], "grid (field_shape[:2])", example="(3, 3)")
    kshape = _validation.as_shape(dims[2:], "kernel shape (field_shape[2:])", example="(9, 9)")
    return grid, kshape


def _check_kernels(kernels):
    kernels = _validation.as_float_array("kernels", kernels, ndim=None)
    if kernels.ndim != 4:
        hint = (" For T kernels in a list, reshape to (gy, gx, k, l) first (e.g. "
                "kernels.reshape(gy, gx, k, l))." if kernels.ndim == 3 else "")
        raise ValueError(f"kernels must be a 4-D array (gy, gx, k, l) like {_FIELD_EXAMPLE}, "
                         f"got shape {tuple(kernels.shape)}.{hint}")
    return kernels


def _check_residual(r, expected, ishape, field, mode):
    if tuple(r.shape) != tuple(expected):
        raise ValueError(f"r has shape {tuple(r.shape)} but conv2d_field of an image {ishape} "
                         f"with a kernel field {field} in mode {mode!r} has shape "
                         f"{tuple(expected)}; pass a residual of that shape.")


# ----------------------------------------------------------------------------
# Jitted cores (validated inputs; shapes, mode and method static)
# ----------------------------------------------------------------------------

def _tiles(kernels, wr, wc):
    """Flattened per-tile (kernel, row weights, column weights) for scanning."""
    gy, gx, k, l = kernels.shape
    ty, tx = np.divmod(np.arange(gy * gx), gx)
    return kernels.reshape(gy * gx, k, l), wr[ty], wc[tx]


@functools.partial(jax.jit, static_argnames=("mode", "method"))
def _forward(x, kernels, centres, *, mode, method):
    kshape = tuple(kernels.shape[2:])
    wr, wc = _weights(x.shape, kshape, mode, centres, x.dtype)
    hs, ar, ac = _tiles(kernels, wr, wc)

    def step(acc, tile):
        h, a, b = tile
        return acc + a[:, None] * b[None, :] * _conv.conv2d(x, h, mode, method=method), None

    out = jnp.zeros((wr.shape[1], wc.shape[1]), x.dtype)
    return lax.scan(step, out, (hs, ar, ac))[0]


@functools.partial(jax.jit, static_argnames=("field", "mode", "method"))
def _adjoint_kernels(x, r, centres, *, field, mode, method):
    gy, gx, k, l = field
    wr, wc = _weights(x.shape, (k, l), mode, centres, x.dtype)
    ty, tx = np.divmod(np.arange(gy * gx), gx)

    def one(tile):
        a, b = tile
        return _conv.conv2d_adjoint_kernel(x, a[:, None] * b[None, :] * r, (k, l), mode,
                                           method=method)

    return lax.map(one, (wr[ty], wc[tx])).reshape(field)


@functools.partial(jax.jit, static_argnames=("image_shape", "mode", "method"))
def _adjoint_image(kernels, r, centres, *, image_shape, mode, method):
    kshape = tuple(kernels.shape[2:])
    wr, wc = _weights(image_shape, kshape, mode, centres, r.dtype)
    hs, ar, ac = _tiles(kernels, wr, wc)

    def step(acc, tile):
        h, a, b = tile
        z = _conv.conv2d_adjoint_image(h, a[:, None] * b[None, :] * r, image_shape, mode,
                                       method=method)
        return acc + z, None

    return lax.scan(step, jnp.zeros(image_shape, r.dtype), (hs, ar, ac))[0]


# ----------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------

def conv2d_field(x, kernels, mode: str = "valid", *, centres=None,
                 method: str = "auto") -> jax.Array:
    """Spatially varying convolution: the kernel at each pixel interpolates a grid of kernels.

    Args:
      x: image, shape (m, n).
      kernels: the kernel field, shape (gy, gx, k, l): ``kernels[i, j]`` is the
        kernel at the centre of tile (i, j).
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``: the
        geometry of :func:`jdeconv.conv2d` (output shapes and boundaries are
        the same). In ``"circular"`` the image wraps around but the weights
        do not (they are clamped, like everywhere outside the centres).
      centres: ``(rows, cols)``, increasing tile centres in the image's pixel
        coordinates, lengths gy and gx (default: the centres of an equal
        split, :func:`tile_centres`).
      method: ``"auto"``, ``"direct"`` or ``"fft"`` (as in :func:`jdeconv.conv2d`).

    Returns:
      The blurred image, shape ``conv2d(x, kernels[0, 0], mode).shape``.

    Raises:
      ValueError, TypeError: for shapes, modes or centres that do not fit.

    Example:
      >>> import numpy as np, jdeconv
      >>> from jdeconv._field_conv import conv2d_field
      >>> x = np.random.default_rng(0).random((16, 16))
      >>> h = np.full((3, 3), 1 / 9)
      >>> field = np.broadcast_to(h, (2, 2, 3, 3))
      >>> bool(np.allclose(conv2d_field(x, field), jdeconv.conv2d(x, h)))
      True

    Notes:
      With ``w_t(p) = α_ty(u_p) β_tx(v_p)`` the clamped bilinear weights of
      output pixel ``p`` at image position ``(u_p, v_p) = p + (k-1-ck, l-1-cl)
      − (top, left)`` (``ck = (k-1)//2``, ``(top, left)`` the padding of
      ``mode``)::

          y[p] = sum_t w_t(p) conv2d(x, h_t, mode)[p]
               = sum_{a,b} h_p[a, b] (P x)[p + (k-1-a, l-1-b)],  h_p = sum_t w_t(p) h_t.

      ``sum_t w_t(p) = 1`` and ``w_t >= 0``. The adjoint in the kernels is
      :func:`conv2d_field_adjoint_kernels`, in the image
      :func:`conv2d_field_adjoint_image`.
    """
    mode = _validation.check_mode(mode)
    _validation.check_method(method)
    x = _validation.as_float_array("x (image)", x)
    kernels = _check_kernels(kernels)
    x, kernels = _validation.common_float(x, kernels)
    grid, kshape = tuple(kernels.shape[:2]), tuple(kernels.shape[2:])
    _validation.check_kernel_fits(x.shape, kshape, mode)
    centres = _check_centres(centres, x.shape, grid)
    return _forward(x, kernels, centres, mode=mode, method=method)


def conv2d_field_adjoint_kernels(x, r, field_shape, mode: str = "valid", *, centres=None,
                                 method: str = "auto") -> jax.Array:
    """Adjoint of ``kernels -> conv2d_field(x, kernels, mode)``.

    Args:
      x: image, shape (m, n).
      r: array in the output space of :func:`conv2d_field` (e.g. a residual).
      field_shape: ``(gy, gx, k, l)``.
      mode: geometry, as in :func:`conv2d_field`.
      centres: tile centres, as in :func:`conv2d_field`.
      method: ``"auto"``, ``"direct"`` or ``"fft"``.

    Returns:
      Array (gy, gx, k, l) with ``<conv2d_field(x, H), r> = <H, result>`` for all H.

    Example:
      >>> import numpy as np
      >>> from jdeconv._field_conv import conv2d_field_adjoint_kernels
      >>> conv2d_field_adjoint_kernels(np.ones((8, 8)), np.ones((6, 6)), (2, 2, 3, 3)).shape
      (2, 2, 3, 3)

    Notes:
      ``g_t = conv2d_adjoint_kernel(x, w_t ⊙ r, (k, l), mode)``: the
      correlation of the padded image with the tile-weighted residual. The
      gradient of ``½||conv2d_field(x, H) − y||²`` is this map applied to the
      residual.
    """
    mode = _validation.check_mode(mode)
    _validation.check_method(method)
    grid, kshape = _field_shape(field_shape)
    x = _validation.as_float_array("x (image)", x)
    r = _validation.as_float_array("r (residual)", r)
    x, r = _validation.common_float(x, r)
    _validation.check_kernel_fits(x.shape, kshape, mode)
    field = grid + kshape
    _check_residual(r, _geometry.output_shape(x.shape, kshape, mode), tuple(x.shape), field, mode)
    centres = _check_centres(centres, x.shape, grid)
    return _adjoint_kernels(x, r, centres, field=field, mode=mode, method=method)


def conv2d_field_adjoint_image(kernels, r, image_shape, mode: str = "valid", *, centres=None,
                               method: str = "auto") -> jax.Array:
    """Adjoint of ``x -> conv2d_field(x, kernels, mode)``.

    Args:
      kernels: the kernel field, shape (gy, gx, k, l).
      r: array in the output space of :func:`conv2d_field`.
      image_shape: ``(m, n)``, the shape of the image space.
      mode: geometry, as in :func:`conv2d_field`.
      centres: tile centres, as in :func:`conv2d_field`.
      method: ``"auto"``, ``"direct"`` or ``"fft"``.

    Returns:
      Array (m, n) with ``<conv2d_field(x, kernels), r> = <x, result>`` for all x.

    Example:
      >>> import numpy as np
      >>> from jdeconv._field_conv import conv2d_field_adjoint_image
      >>> conv2d_field_adjoint_image(np.ones((2, 2, 3, 3)), np.ones((6, 6)), (8, 8)).shape
      (8, 8)

    Notes:
      ``sum_t conv2d_adjoint_image(h_t, w_t ⊙ r, (m, n), mode)``: each tile's
      weighted residual correlated with its kernel, then ``Pᵀ`` (crop or fold).
    """
    mode = _validation.check_mode(mode)
    _validation.check_method(method)
    ishape = _validation.as_shape(image_shape, "image_shape", example="(256, 256)")
    kernels = _check_kernels(kernels)
    r = _validation.as_float_array("r (residual)", r)
    kernels, r = _validation.common_float(kernels, r)
    grid, kshape = tuple(kernels.shape[:2]), tuple(kernels.shape[2:])
    _validation.check_kernel_fits(ishape, kshape, mode)
    _check_residual(r, _geometry.output_shape(ishape, kshape, mode), ishape,
                    tuple(kernels.shape), mode)
    centres = _check_centres(centres, ishape, grid)
    return _adjoint_image(kernels, r, centres, image_shape=ishape, mode=mode, method=method)


# ----------------------------------------------------------------------------
# Operators
# ----------------------------------------------------------------------------

def _check_vector(name, a, shape):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"Dimension mismatch: {name} has shape {tuple(a.shape)}, "
                         f"expected {tuple(shape)}.")


@dataclasses.dataclass(frozen=True)
class KernelFieldOperator:
    """The map ``H -> conv2d_field(image, H, mode)`` for a fixed image (a pytree).

    The operator of kernel-field estimation, ``y = A H`` with ``H`` of shape
    ``(gy, gx, k, l)``. Build it with :func:`kernel_field_operator`.

    Attributes:
      image: the fixed image, shape (m, n).
      centres: ``(rows, cols)`` tile centres (arrays).
      field_shape: ``(gy, gx, k, l)``, the input space.
      mode: convolution geometry.
      method: ``"auto"``, ``"direct"`` or ``"fft"``.
    """

    image: jax.Array
    centres: tuple
    field_shape: tuple[int, int, int, int]
    mode: str = "valid"
    method: str = "auto"

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        return self.field_shape

    @property
    def out_shape(self) -> tuple[int, int]:
        return _geometry.output_shape(self.image.shape, self.field_shape[2:], self.mode)

    def matvec(self, kernels: jax.Array) -> jax.Array:
        """``A H``: kernel field (gy, gx, k, l) -> blurred image ``out_shape``."""
        _check_vector("kernels", kernels, self.in_shape)
        x, kernels = _validation.common_float(self.image, kernels)
        return _forward(x, kernels, self.centres, mode=self.mode, method=self.method)

    def rmatvec(self, r: jax.Array) -> jax.Array:
        """``Aᵀ r``: residual ``out_shape`` -> kernel-field space (gy, gx, k, l)."""
        _check_vector("r", r, self.out_shape)
        x, r = _validation.common_float(self.image, r)
        return _adjoint_kernels(x, r, self.centres, field=tuple(self.field_shape),
                                mode=self.mode, method=self.method)

    def as_matrix(self) -> jax.Array:
        """Dense matrix (prod(out_shape), gy·gx·k·l), row-major raveling. Small problems only."""
        return _operators._dense(self, self.image.dtype)


@dataclasses.dataclass(frozen=True)
class ImageFieldOperator:
    """The map ``x -> conv2d_field(x, kernels, mode)`` for a fixed kernel field (a pytree).

    Build it with :func:`image_field_operator`.

    Attributes:
      kernels: the fixed kernel field, shape (gy, gx, k, l).
      centres: ``(rows, cols)`` tile centres (arrays).
      image_shape: ``(m, n)``, the input space.
      mode: convolution geometry.
      method: ``"auto"``, ``"direct"`` or ``"fft"``.
    """

    kernels: jax.Array
    centres: tuple
    image_shape: tuple[int, int]
    mode: str = "valid"
    method: str = "auto"

    @property
    def in_shape(self) -> tuple[int, int]:
        return self.image_shape

    @property
    def out_shape(self) -> tuple[int, int]:
        return _geometry.output_shape(self.image_shape, self.kernels.shape[2:], self.mode)

    def matvec(self, x: jax.Array) -> jax.Array:
        """``B x``: image (m, n) -> blurred image ``out_shape``."""
        _check_vector("x", x, self.in_shape)
        x, kernels = _validation.common_float(x, self.kernels)
        return _forward(x, kernels, self.centres, mode=self.mode, method=self.method)

    def rmatvec(self, r: jax.Array) -> jax.Array:
        """``Bᵀ r``: residual ``out_shape`` -> image space (m, n)."""
        _check_vector("r", r, self.out_shape)
        kernels, r = _validation.common_float(self.kernels, r)
        return _adjoint_image(kernels, r, self.centres, image_shape=tuple(self.image_shape),
                              mode=self.mode, method=self.method)

    def as_matrix(self) -> jax.Array:
        """Dense matrix (prod(out_shape), m·n), row-major raveling. Small problems only."""
        return _operators._dense(self, self.kernels.dtype)


jax.tree_util.register_dataclass(
    KernelFieldOperator, data_fields=["image", "centres"],
    meta_fields=["field_shape", "mode", "method"])
jax.tree_util.register_dataclass(
    ImageFieldOperator, data_fields=["kernels", "centres"],
    meta_fields=["image_shape", "mode", "method"])


def kernel_field_operator(x, field_shape, mode: str = "valid", *, centres=None,
                          method: str = "auto") -> KernelFieldOperator:
    """Builds the validated operator ``H -> conv2d_field(x, H, mode)``.

    Args:
      x: image, shape (m, n).
      field_shape: ``(gy, gx, k, l)``.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      centres: tile centres, as in :func:`conv2d_field`.
      method: ``"auto"``, ``"direct"`` or ``"fft"``.

    Returns:
      A :class:`KernelFieldOperator`.

    Example:
      >>> import numpy as np, jdeconv
      >>> from jdeconv._field_conv import kernel_field_operator
      >>> A = kernel_field_operator(np.random.default_rng(0).random((10, 12)), (2, 3, 3, 3))
      >>> A.out_shape, len(jdeconv.dottest(A))
      ((8, 10), 2)
    """
    mode = _validation.check_mode(mode)
    _validation.check_method(method)
    grid, kshape = _field_shape(field_shape)
    x = _validation.as_float_array("x (image)", x)
    _validation.check_kernel_fits(x.shape, kshape, mode)
    centres = tuple(jnp.asarray(c, x.dtype) for c in _check_centres(centres, x.shape, grid))
    return KernelFieldOperator(x, centres, grid + kshape, mode, method)


def image_field_operator(kernels, image_shape, mode: str = "valid", *, centres=None,
                         method: str = "auto") -> ImageFieldOperator:
    """Builds the validated operator ``x -> conv2d_field(x, kernels, mode)``.

    Args:
      kernels: the kernel field, shape (gy, gx, k, l).
      image_shape: ``(m, n)``.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      centres: tile centres, as in :func:`conv2d_field`.
      method: ``"auto"``, ``"direct"`` or ``"fft"``.

    Returns:
      An :class:`ImageFieldOperator`.

    Example:
      >>> import numpy as np
      >>> from jdeconv._field_conv import image_field_operator
      >>> image_field_operator(np.ones((2, 2, 3, 3)) / 9, (10, 10), "same").out_shape
      (10, 10)
    """
    mode = _validation.check_mode(mode)
    _validation.check_method(method)
    ishape = _validation.as_shape(image_shape, "image_shape", example="(256, 256)")
    kernels = _check_kernels(kernels)
    grid, kshape = tuple(kernels.shape[:2]), tuple(kernels.shape[2:])
    _validation.check_kernel_fits(ishape, kshape, mode)
    centres = tuple(jnp.asarray(c, kernels.dtype) for c in _check_centres(centres, ishape, grid))
    return ImageFieldOperator(kernels, centres, ishape, mode, method)

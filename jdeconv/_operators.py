"""Convolution as a linear operator of the kernel or of the image.

Each operator is an immutable pytree (the fixed array is a leaf, shapes and
mode are static) with ``matvec`` (the forward map) and ``rmatvec`` (its
closed-form adjoint), so it can be passed through ``jax.jit`` and ``jax.vmap``.
:func:`dottest` checks ``<A u, v> = <u, A^T v>``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jdeconv import _conv, _geometry, _validation


def _check_vector(name, a, shape):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"Dimension mismatch: {name} has shape {tuple(a.shape)}, "
                         f"expected {tuple(shape)}.")


@functools.partial(jax.jit, static_argnums=1)
def _dense(op, dtype):
    """Dense matrix of a linear operator, one column per basis vector (small problems only).

    Jitted: one compiled program per operator shape (eager ``vmap`` would dispatch, and
    compile, every primitive separately).
    """
    basis = jnp.eye(int(np.prod(op.in_shape)), dtype=dtype)
    cols = jax.vmap(lambda e: op.matvec(e.reshape(op.in_shape)).ravel())(basis)
    return cols.T


@dataclasses.dataclass(frozen=True)
class KernelOperator:
    """The map ``h -> conv2d(image, h, mode)`` for a fixed image.

    This is the operator of the estimation problem: ``y = A h``.

    Attributes:
      image: the fixed image, shape (m, n).
      kernel_shape: (k, l), the input space.
      mode: convolution geometry (see :func:`jdeconv.conv2d`).
      method: ``"auto"``, ``"direct"`` or ``"fft"``.
    """

    image: jax.Array
    kernel_shape: tuple[int, int]
    mode: str = "valid"
    method: str = "auto"

    @property
    def in_shape(self) -> tuple[int, int]:
        return self.kernel_shape

    @property
    def out_shape(self) -> tuple[int, int]:
        return _geometry.output_shape(self.image.shape, self.kernel_shape, self.mode)

    def matvec(self, h: jax.Array) -> jax.Array:
        """``A h``: kernel (k, l) -> blurred image ``out_shape`` (:func:`jdeconv.conv2d`)."""
        _check_vector("h", h, self.in_shape)
        return _conv.conv2d(self.image, h, self.mode, method=self.method)

    def rmatvec(self, r: jax.Array) -> jax.Array:
        """``A^T r``: residual ``out_shape`` -> kernel space (k, l) (the correlation ``x ⋆ r``)."""
        _check_vector("r", r, self.out_shape)
        return _conv.conv2d_adjoint_kernel(self.image, r, self.kernel_shape, self.mode,
                                           method=self.method)

    def as_matrix(self) -> jax.Array:
        """Dense (im2col) matrix (prod(out_shape), k*l), row-major raveling. Small problems only."""
        return _dense(self, self.image.dtype)


@dataclasses.dataclass(frozen=True)
class ImageOperator:
    """The map ``x -> conv2d(x, kernel, mode)`` for a fixed kernel.

    Attributes:
      kernel: the fixed kernel, shape (k, l).
      image_shape: (m, n), the input space.
      mode: convolution geometry (see :func:`jdeconv.conv2d`).
      method: ``"auto"``, ``"direct"`` or ``"fft"``.
    """

    kernel: jax.Array
    image_shape: tuple[int, int]
    mode: str = "valid"
    method: str = "auto"

    @property
    def in_shape(self) -> tuple[int, int]:
        return self.image_shape

    @property
    def out_shape(self) -> tuple[int, int]:
        return _geometry.output_shape(self.image_shape, self.kernel.shape, self.mode)

    def matvec(self, x: jax.Array) -> jax.Array:
        """``B x``: image (m, n) -> blurred image ``out_shape`` (:func:`jdeconv.conv2d`)."""
        _check_vector("x", x, self.in_shape)
        return _conv.conv2d(x, self.kernel, self.mode, method=self.method)

    def rmatvec(self, r: jax.Array) -> jax.Array:
        """``B^T r``: residual ``out_shape`` -> image space (m, n)."""
        _check_vector("r", r, self.out_shape)
        return _conv.conv2d_adjoint_image(self.kernel, r, self.image_shape, self.mode,
                                          method=self.method)

    def as_matrix(self) -> jax.Array:
        """Dense matrix (prod(out_shape), m*n). Small problems only."""
        return _dense(self, self.kernel.dtype)


jax.tree_util.register_dataclass(
    KernelOperator, data_fields=["image"], meta_fields=["kernel_shape", "mode", "method"])
jax.tree_util.register_dataclass(
    ImageOperator, data_fields=["kernel"], meta_fields=["image_shape", "mode", "method"])


def kernel_operator(x, kernel_shape, mode: str = "valid", *, method: str = "auto") -> KernelOperator:
    """Builds the validated operator ``h -> conv2d(x, h, mode)``.

    Args:
      x: image, shape (m, n).
      kernel_shape: (k, l) or an int.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      method: ``"auto"``, ``"direct"`` or ``"fft"``.

    Returns:
      A :class:`KernelOperator`.

    Example:
      >>> import jax.numpy as jnp, jdeconv
      >>> A = jdeconv.kernel_operator(jnp.ones((6, 6)), 3)
      >>> A.out_shape
      (4, 4)
    """
    mode = _validation.check_mode(mode)
    _validation.check_method(method)
    kshape = _validation.as_shape(kernel_shape, "kernel_shape")
    x = _validation.as_float_array("x (image)", x)
    _validation.check_kernel_fits(x.shape, kshape, mode)
    return KernelOperator(x, kshape, mode, method)


def image_operator(h, image_shape, mode: str = "valid", *, method: str = "auto") -> ImageOperator:
    """Builds the validated operator ``x -> conv2d(x, h, mode)``.

    Args:
      h: kernel, shape (k, l).
      image_shape: (m, n).
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      method: ``"auto"``, ``"direct"`` or ``"fft"``.

    Returns:
      An :class:`ImageOperator`.
    """
    mode = _validation.check_mode(mode)
    _validation.check_method(method)
    ishape = _validation.as_shape(image_shape, "image_shape", example="(256, 256)")
    h = _validation.as_float_array("h (kernel)", h)
    _validation.check_kernel_fits(ishape, h.shape, mode)
    return ImageOperator(h, ishape, mode, method)


@jax.jit
def _apply_both(op, u, v):
    return op.matvec(u), op.rmatvec(v)


def dottest(op, *, seed: int = 0, rtol: float | None = None) -> tuple[float, float]:
    """Checks ``<A u, v> == <u, A^T v>`` on random vectors (pylops' dot test).

    Args:
      op: an object with ``matvec``, ``rmatvec``, ``in_shape``, ``out_shape``.
      seed: seed of the random vectors.
      rtol: relative tolerance; default scales with the operator's dtype
        (1e-10 for float64, 1e-4 for float32).

    Returns:
      ``(<A u, v>, <u, A^T v>)``.

    Raises:
      AssertionError: showing both inner products when they differ.
    """
    leaf = jax.tree_util.tree_leaves(op)[0]
    dtype = leaf.dtype
    rng = np.random.default_rng(seed)
    u = jnp.asarray(rng.standard_normal(op.in_shape), dtype)
    v = jnp.asarray(rng.standard_normal(op.out_shape), dtype)
    au, atv = _apply_both(op, u, v)
    lhs = float(jnp.vdot(au, v))
    rhs = float(jnp.vdot(u, atv))
    if rtol is None:
        rtol = 1e-10 if dtype == jnp.float64 else 1e-4
    scale = float(jnp.linalg.norm(au) * jnp.linalg.norm(v) + jnp.linalg.norm(u) * jnp.linalg.norm(atv))
    if abs(lhs - rhs) > rtol * max(scale, np.finfo(np.float64).tiny):
        raise AssertionError(f"Dot test failed: <A u, v> = {lhs!r} but <u, A^T v> = {rhs!r} "
                             f"(|difference| {abs(lhs - rhs):.3e} > {rtol:g} x {scale:.3e}).")
    return lhs, rhs

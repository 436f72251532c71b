"""Input validation shared by the public functions.

Every check here runs eagerly, before anything is traced, so that a user's
mistake becomes one clear ``ValueError``/``TypeError`` naming the problem and
the fix, never a traceback from deep inside JAX. Checks that need values
(finiteness, constant images) run only on concrete arrays: inside a user's own
``jax.jit`` the arrays are tracers and those checks are skipped.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("valid", "same", "full", "circular")


def closest(word: str, choices: Iterable[str]) -> str:
    """Returns " Did you mean 'x'?" for the closest choice, or ""."""
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """Raises ValueError unless ``value`` is one of ``choices``; returns it."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
                f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}."
                + closest(value, choices))
    return value


def check_mode(mode) -> str:
    """Validates a convolution geometry name."""
    return check_choice("mode", mode, MODES)


def is_concrete(a) -> bool:
    """True when ``a`` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(a, jax.core.Tracer)


def default_float_dtype():
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return jnp.zeros((), dtype=float).dtype


def resolve_dtype(dtype):
    """Validates a user-requested dtype (None, float32 or float64)."""
    if dtype is None:
        return None
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}.")
    if dt == np.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
                "dtype float64 was requested but JAX runs in 32-bit mode; enable 64-bit "
                "floats first with jax.config.update('jax_enable_x64', True) (or set "
                "JAX_ENABLE_X64=1), or ask for dtype='float32'.")
    return dt


def as_float_array(name: str, a, *, ndim: int | None = 2, dtype=None):
    """Converts ``a`` to a floating JAX array and validates it.

    Integer and boolean inputs are converted to the default float dtype (never
    kept as integers, which would overflow in the products). Complex, object and
    string inputs are rejected.

    Args:
        name: what the argument is called in the caller's signature (for messages).
        a: array-like.
        ndim: required number of dimensions, or None for any.
        dtype: target float dtype, or None to keep a float input's dtype.

    Returns:
        A floating ``jax.Array``.

    Raises:
        TypeError: for non-numeric or complex input.
        ValueError: wrong number of dimensions, empty, or non-finite values.
    """
    if isinstance(a, jax.Array) or isinstance(a, jax.core.Tracer):
        arr = a
        kind = np.dtype(arr.dtype).kind
    else:
        try:
            np_arr = np.asarray(a)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be an array of numbers, got {type(a).__name__}.") from e
        kind = np_arr.dtype.kind
        if kind not in "biuf":
            raise TypeError(
                    f"{name} must be a real-valued numeric array, got dtype {np_arr.dtype}."
                    + (" Take the real part or the magnitude first." if kind == "c" else ""))
        arr = np_arr
    if kind == "c":
        raise TypeError(f"{name} must be real-valued, got complex dtype {arr.dtype}; "
                                        "take the real part or the magnitude first.")
    if kind not in "biuf":
        raise TypeError(f"{name} must be a real-valued numeric array, got dtype {arr.dtype}.")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
                f"{name} must be a {ndim}-D array, got shape {tuple(arr.shape)} ({arr.ndim}-D)."
                + (" For a batch of images use estimate_kernels or jax.vmap; for colour "
                      "images convert to gray or process channels separately."
                      if arr.ndim == ndim + 1 else ""))
    if any(s == 0 for s in arr.shape):
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)}); give a non-empty array.")
    target = dtype
    if target is None:
        target = arr.dtype if kind == "f" else default_float_dtype()
    if is_concrete(arr):
        host = np.asarray(arr)
        if kind == "f" and not np.all(np.isfinite(host)):
            bad = int(np.size(host) - np.count_nonzero(np.isfinite(host)))
            raise ValueError(
                    f"{name} contains {bad} NaN or infinite value(s); clean or mask them "
                    "before estimating (e.g. np.nan_to_num or crop the bad region).")
    return jnp.asarray(arr, dtype=target)


def common_float(*arrays):
    """Promotes floating arrays to their common dtype."""
    dt = jnp.result_type(*arrays)
    return tuple(jnp.asarray(a, dtype=dt) for a in arrays)


def kernel_shape_tuple(kernel_shape, *, name: str = "kernel_shape") -> tuple[int, int]:
    """Normalises ``15`` or ``(15, 11)`` to a tuple of two positive ints."""
    if isinstance(kernel_shape, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {kernel_shape!r}.")
    if isinstance(kernel_shape, (int, np.integer)):
        shape = (int(kernel_shape), int(kernel_shape))
    else:
        try:
            shape = tuple(operator.index(s) for s in kernel_shape)
        except TypeError as e:
            raise TypeError(
                    f"{name} must be an int or a pair of ints like (15, 11), got {kernel_shape!r}.") from e
        if len(shape) != 2:
            raise ValueError(f"{name} must have two entries (k, l), got {kernel_shape!r}.")
    if min(shape) <= 0:
        raise ValueError(f"{name} {shape} has a non-positive size; give positive sizes like (15, 15).")
    return shape


def output_shape(image_shape, kernel_shape, mode: str) -> tuple[int, int]:
    """Shape of ``conv2d(x, h, mode)`` for the given image and kernel shapes."""
    (m, n), (k, l) = image_shape, kernel_shape
    if mode == "valid":
        return (m - k + 1, n - l + 1)
    if mode == "full":
        return (m + k - 1, n + l - 1)
    return (m, n)


def check_kernel_fits(image_shape, kernel_shape, mode: str, *, what: str = "kernel"):
    """Raises if a kernel cannot be applied to the image in ``mode``."""
    (m, n), (k, l) = tuple(image_shape), tuple(kernel_shape)
    if mode in ("valid", "circular") and (k > m or l > n):
        raise ValueError(
                f"{what} shape {(k, l)} is larger than the image shape {(m, n)} in "
                f"mode {mode!r}; the {what} must fit inside the image (k <= m and l <= n). "
                "Use a smaller kernel size or a larger image.")

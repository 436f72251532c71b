"""Input validation: the one place where a user's mistake becomes a message.

Every check runs eagerly, before anything is traced, so that a mistake becomes
one ``ValueError``/``TypeError`` naming the problem and the fix, never a
traceback from inside JAX. Checks that need values (finiteness, constant
images) run only on concrete arrays: inside a user's own ``jax.jit`` the
arrays are tracers and those checks are skipped.

All messages follow one pattern: what was given, what is expected, and (where
it helps) an example or the closest valid name.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdeconv import _names

#: Upper bounds checked before anything is allocated (a typo must not exhaust memory);
#: declared once in the JAX-free ``_limits`` so the CLI can check them without JAX.
from jdeconv._limits import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_ITERS, MAX_KERNEL_SIDE  # noqa: E402,F401


# ----------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------

def closest(word: Any, choices: Iterable[str]) -> str:
    """Returns `` Did you mean 'x'?`` for the closest choice, or ``""``."""
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def unknown_name(kind: str, value: Any, choices: Iterable[str]) -> ValueError:
    """The error for an unknown name: the valid names and the closest one."""
    choices = tuple(choices)
    return ValueError(f"unknown {kind} {value!r}; expected one of "
                      f"{', '.join(map(repr, choices))}." + closest(value, choices))


def check_choice(kind: str, value: Any, choices: Iterable[str]) -> str:
    """Raises ``ValueError`` unless ``value`` is one of ``choices``; returns it."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise unknown_name(kind, value, choices)
    return value


def check_mode(mode: Any) -> str:
    """Validates a convolution geometry name."""
    return check_choice("mode", mode, _names.MODES)


def check_method(method: Any) -> str:
    """Validates a convolution method name."""
    return check_choice("method", method, _names.METHODS)


def check_prior(prior: Any) -> str:
    """Validates a prior name."""
    return check_choice("prior", prior, _names.PRIORS)


def check_solver(solver: Any) -> str:
    """Validates a solver name."""
    return check_choice("solver", solver, _names.SOLVERS)


# ----------------------------------------------------------------------------
# Scalars
# ----------------------------------------------------------------------------

def is_int(value: Any) -> bool:
    """True for Python/NumPy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(value: Any, name: str, *, minimum: int | None = None,
              maximum: int | None = None, example: Any = None) -> int:
    """Validates an integer in ``[minimum, maximum]``; returns a Python int.

    Floats that are whole numbers (``100.0`` from a YAML file) are accepted
    when they are in range; ``1e23`` is refused by the bound, not by an
    overflow deep inside a jitted call.
    """
    hint = f"; e.g. {name}={example}" if example is not None else ""
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        if maximum is not None and value > maximum:
            raise ValueError(f"{name} is {value:g}; it must be at most {maximum}{hint}.")
        value = int(value)
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}{hint}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} is {value}; it must be at least {minimum}{hint}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} is {value}; it must be at most {maximum}{hint}.")
    return int(value)


def check_real(value: Any, name: str, *, positive: bool = False, nonnegative: bool = False,
               maximum: float | None = None, example: Any = "1.0") -> float:
    """Validates a finite real number; returns a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}; "
                        f"e.g. {name}={example}.")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} is {v}; give a finite number like {name}={example}.")
    if positive and v <= 0:
        raise ValueError(f"{name} is {v}; it must be > 0, e.g. {name}={example}.")
    if nonnegative and v < 0:
        raise ValueError(f"{name} is {v}; it must be >= 0, e.g. {name}={example}.")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} is {v:g}; it must be at most {maximum:g}.")
    return v


def check_seed(seed: Any) -> int:
    """Validates a seed for ``np.random.default_rng`` (a non-negative int)."""
    if not is_int(seed):
        raise TypeError(f"seed must be a non-negative integer, got {type(seed).__name__} "
                        f"{seed!r}; e.g. seed=0.")
    if seed < 0:
        raise ValueError(f"seed is {seed}; give a non-negative integer like seed=0.")
    return int(seed)


def check_tol(tol: Any) -> float:
    """Validates a stopping tolerance (finite, >= 0)."""
    try:
        tol = float(tol)
    except (TypeError, ValueError) as e:
        raise TypeError(f"tol must be a number, got {tol!r}.") from e
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol}.")
    return tol


# ----------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------

def as_shape(shape: Any, name: str = "kernel_shape", *, example: str = "(15, 15)",
             maximum: int | None = None) -> tuple[int, int]:
    """Normalises ``15`` or ``(15, 11)`` to a pair of positive Python ints.

    Args:
      shape: an int ``s`` (meaning ``(s, s)``) or a pair of ints.
      name: what the shape is called in the caller's signature.
      example: a valid value, shown in messages.
      maximum: largest allowed side (checked before anything is allocated).
    """
    if isinstance(shape, np.ndarray) and shape.ndim == 0:
        shape = shape.item()
    if is_int(shape):
        dims: tuple[Any, ...] = (shape, shape)
    elif isinstance(shape, (Sequence, np.ndarray)) and not isinstance(shape, (str, bytes)):
        dims = tuple(shape)
        if len(dims) != 2:
            raise ValueError(f"{name} {shape!r} has {len(dims)} entries; give two positive "
                             f"integers (rows, columns) like {example}.")
        try:
            dims = tuple(operator.index(d) for d in dims if not isinstance(d, (bool, np.bool_)))
        except TypeError:
            dims = ()
        if len(dims) != 2:
            raise TypeError(f"{name} {shape!r} must contain integers; give positive integers "
                            f"like {example}.")
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {type(shape).__name__} "
                        f"{shape!r}; give positive integers like {example}.")
    m, n = int(dims[0]), int(dims[1])
    if m <= 0 or n <= 0:
        raise ValueError(f"{name} {(m, n)} has a non-positive size; give positive integers "
                         f"like {example}.")
    if maximum is not None and max(m, n) > maximum:
        raise ValueError(f"{name} {(m, n)} is too large: each side must be at most {maximum}.")
    return m, n


def check_image_size(shape: tuple[int, ...], name: str = "image") -> None:
    """Refuses images too large to allocate before anything is allocated."""
    if any(s > MAX_IMAGE_SIDE for s in shape[-2:]) or math.prod(shape[-2:]) > MAX_IMAGE_PIXELS:
        raise ValueError(f"{name} of shape {tuple(shape)} is too large: at most "
                         f"{MAX_IMAGE_SIDE} pixels per side and {MAX_IMAGE_PIXELS} pixels in all.")


def check_kernel_fits(image_shape, kernel_shape, mode: str, *, what: str = "kernel") -> None:
    """Raises if a kernel cannot be applied to an image in ``mode``."""
    (m, n), (k, l) = tuple(image_shape), tuple(kernel_shape)
    if mode in ("valid", "circular") and (k > m or l > n):
        raise ValueError(
            f"{what} shape {(k, l)} is larger than the image shape {(m, n)} in mode {mode!r}; "
            f"the {what} must fit inside the image (k <= m and l <= n). Use a smaller kernel "
            "size or a larger image.")


def check_shape_is(name: str, shape, expected, hint: str = "") -> None:
    """Raises ``Dimension mismatch`` when ``shape`` is not ``expected``."""
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(shape)} but {tuple(expected)} is expected."
                         + (f" {hint}" if hint else ""))


# ----------------------------------------------------------------------------
# Arrays
# ----------------------------------------------------------------------------

def is_concrete(a) -> bool:
    """True when ``a`` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(a, jax.core.Tracer)


def default_float_dtype():
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))  # no array: 0.2 ms less a call


def resolve_dtype(dtype):
    """Validates a user-requested dtype (None, float32 or float64)."""
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}.") from e
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}.")
    if dt == np.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "dtype float64 was requested but JAX runs in 32-bit mode; enable 64-bit floats "
            "first with jax.config.update('jax_enable_x64', True) (or set JAX_ENABLE_X64=1), "
            "or ask for dtype='float32'.")
    return dt


def count_nonfinite(a) -> int:
    """Number of NaN/Inf entries of a concrete array."""
    host = np.asarray(a)
    return int(host.size - np.count_nonzero(np.isfinite(host)))


def as_float_array(name: str, a, *, ndim: int | None = 2, dtype=None, allow_nan: bool = False):
    """Converts ``a`` to a floating JAX array and validates it.

    Integer and boolean inputs are converted to the default float dtype (never
    kept as integers, which would overflow in the products). Complex, object
    and string inputs are rejected.

    Args:
      name: what the argument is called in the caller's signature.
      a: array-like.
      ndim: required number of dimensions, or None for any.
      dtype: target float dtype, or None to keep a float input's dtype.
      allow_nan: accept NaN (the caller masks it); infinities are still refused.

    Returns:
      A floating ``jax.Array``.

    Raises:
      TypeError: for non-numeric or complex input.
      ValueError: wrong number of dimensions, empty, or non-finite values.
    """
    if isinstance(a, (jax.Array, jax.core.Tracer)):
        arr = a
        kind = np.dtype(arr.dtype).kind
    else:
        try:
            arr = np.asarray(a)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be an array of numbers, got {type(a).__name__}.") from e
        kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real-valued, got complex dtype {arr.dtype}; take the "
                        "real part or the magnitude first.")
    if kind not in "biuf":
        raise TypeError(f"{name} must be a real-valued numeric array, got dtype {arr.dtype}.")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array, got shape {tuple(arr.shape)} ({arr.ndim}-D)."
            + (" For a batch of images use estimate_kernels or jax.vmap; for colour images "
               "convert to gray or process channels separately." if arr.ndim == ndim + 1 else ""))
    if any(s == 0 for s in arr.shape):
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)}); give a non-empty array.")
    if arr.ndim >= 2:
        check_image_size(tuple(arr.shape), name)
    target = dtype
    if target is None:
        target = arr.dtype if kind == "f" else default_float_dtype()
        if np.dtype(target).itemsize > np.dtype(default_float_dtype()).itemsize:
            target = default_float_dtype()  # float64 input in 32-bit mode: no truncation warning
    if kind == "f" and is_concrete(arr):
        host = np.asarray(arr)
        bad = ~np.isfinite(host)
        if allow_nan:
            bad &= ~np.isnan(host)
        if bad.any():
            what = "infinite" if allow_nan else "NaN or infinite"
            raise ValueError(
                f"{name} contains {int(bad.sum())} {what} value(s); clean or mask them before "
                "estimating (e.g. np.nan_to_num, crop the bad region, or pass nan='mask' to "
                "treat NaN pixels of the blurred image as masked).")
    return jnp.asarray(arr, dtype=target)


def common_float(*arrays):
    """Promotes floating arrays to their common dtype."""
    dt = jnp.result_type(*arrays)
    return tuple(jnp.asarray(a, dtype=dt) for a in arrays)


# ----------------------------------------------------------------------------
# Options of named families (images, kernels)
# ----------------------------------------------------------------------------

def call_with_options(func: Callable[..., Any], kind: str, name: str, args: tuple[Any, ...],
                      options: dict[str, Any]) -> Any:
    """Calls ``func(*args, **options)``; unknown or missing option names become a clear TypeError."""
    params = inspect.signature(func).parameters
    accepted = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    accepted += [p for p, v in list(params.items())[len(args):]
                 if v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"{kind} {name!r} does not take option(s) {', '.join(unknown)}; "
                        f"accepted options: {', '.join(accepted) if accepted else '(none)'}."
                        + (closest(unknown[0], accepted) if accepted else ""))
    missing = [p for p, v in params.items()
               if v.default is inspect.Parameter.empty and p not in options
               and v.kind in (inspect.Parameter.KEYWORD_ONLY,
                              inspect.Parameter.POSITIONAL_OR_KEYWORD)
               and list(params).index(p) >= len(args)]
    if missing:
        raise TypeError(f"{kind} {name!r} needs option(s) {', '.join(missing)}; e.g. "
                        f"make_{kind}({name!r}, ..., {missing[0]}=...).")
    return func(*args, **options)

"""Solver hyperparameters and data-term options: the tables and their one checker.

``solver_options=`` and ``loss_options=`` of :func:`jdeconv.estimate_kernel`
(and the configs' ``solver.options`` / ``estimate.loss_options``) are checked
here, once, into sorted tuples of ``(key, value)`` pairs: hashable, so they can
be static arguments of ``jax.jit``.

Example:
  >>> from jdeconv._solvers.options import check_solver_options, check_loss_options
  >>> check_solver_options("fista", {"restart": False})
  (('matrix_free', None), ('restart', False))
  >>> check_loss_options("poisson", {"read_noise": 3})
  (('background', 0.0), ('floor', None), ('read_noise', 3.0))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jdeconv import _validation
from jdeconv._solvers import adam, momentum

#: Hyperparameters each solver accepts through ``solver_options=`` (and their defaults).
#: ``matrix_free`` (first-order solvers): ``None`` chooses the matrix-free path (FFT
#: convolutions, O(image) memory) above :data:`jdeconv._estimate.EXACT_MAX_TAPS` taps
#: and for the losses that have no normal equations; ``True``/``False`` force it.
SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "exact": {"max_fallback_iters": None},
    "fista": {"restart": True, "matrix_free": None},
    "gd": {"matrix_free": None},
    "momentum": {"momentum": momentum.DEFAULT_MOMENTUM, "matrix_free": None},
    "adam": {"learning_rate": adam.DEFAULT_RATE, "decay_rate": adam.DEFAULT_DECAY,
             "matrix_free": None},
    "fourier": {"eps": None},
}

#: Options of each data term (``loss_options=``, matrix-free path) and their defaults.
LOSS_OPTIONS: dict[str, dict[str, Any]] = {
    "l2": {},
    "huber": {"delta": None, "rounds": 3, "warmup": 100},
    "poisson": {"read_noise": 0.0, "background": 0.0, "floor": None},
}

_BOOLEAN = ("restart",)
_OPTIONAL_BOOLEAN = ("matrix_free",)
_COUNTS = ("warmup", "rounds", "max_fallback_iters")
_NONNEGATIVE = ("read_noise", "background")
_OPTIONAL_POSITIVE = ("delta", "floor", "eps")


def _check_value(key: str, value, default):
    if key in _BOOLEAN or (key in _OPTIONAL_BOOLEAN and value is not None):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"option {key!r} must be true or false, got {value!r}.")
        return bool(value)
    if value is None and (key in _OPTIONAL_BOOLEAN or key in _OPTIONAL_POSITIVE
                          or key == "max_fallback_iters"):
        return None
    if key in _COUNTS:
        return _validation.check_int(value, key, minimum=0, maximum=_validation.MAX_ITERS,
                                     example=default if default is not None else 100)
    if key == "momentum":
        value = _validation.check_real(value, "momentum", nonnegative=True, example=0.9)
        if value >= 1:
            raise ValueError(f"momentum is {value}; it must be in [0, 1), e.g. 0.9.")
        return value
    if key in _NONNEGATIVE:
        return _validation.check_real(value, key, nonnegative=True, example=1.0)
    return _validation.check_real(value, key, positive=True,
                                  example=default if default is not None else 1e-3)


def check_options(kind: str, name: str, options, table) -> tuple:
    """Validates ``options`` of ``name`` against ``table[name]``; a sorted tuple, defaults filled.

    Args:
      kind: what the options are called in messages (``"solver_options"``).
      name: the solver or loss they belong to.
      options: None, a mapping, or a tuple of pairs (already checked).
      table: :data:`SOLVER_OPTIONS` or :data:`LOSS_OPTIONS`.

    Returns:
      ``tuple(sorted(options.items()))`` with every key of ``table[name]``.
    """
    allowed = table[name]
    if options is None:
        options = {}
    if isinstance(options, tuple):
        options = dict(options)
    if not isinstance(options, dict):
        example = next(iter(allowed), "key")
        raise TypeError(f"{kind} must be a mapping like {{'{example}': ...}}, got {options!r}.")
    out = dict(allowed)
    for key, value in options.items():
        if key not in allowed:
            names = ", ".join(allowed) if allowed else "(none)"
            noun = kind.removesuffix("_options")
            raise ValueError(f"{noun} {name!r} has no option {key!r}; its options are: "
                             f"{names}." + _validation.closest(key, allowed))
        out[key] = _check_value(key, value, allowed[key])
    return tuple(sorted(out.items()))


def check_solver_options(solver: str, options=None) -> tuple:
    """Validates ``solver_options`` for ``solver`` (see :data:`SOLVER_OPTIONS`)."""
    return check_options("solver_options", solver, options, SOLVER_OPTIONS)


def check_loss_options(loss: str, options=None) -> tuple:
    """Validates ``loss_options`` for ``loss`` (see :data:`LOSS_OPTIONS`)."""
    return check_options("loss_options", loss, options, LOSS_OPTIONS)

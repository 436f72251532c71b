"""The validated estimation problem: built once per call, handed to every stage.

:func:`make_problem` checks a pair (or a batch) once, with one wording, and
returns a :class:`Problem`: the images in the solver's geometry (a ``"same"``
blurred image reduced to the part the valid model explains), the kernel shape,
the user's mode and the solver's mode, the dtype and the support. The engine,
the automatic weight choice and the diagnostics all take a ``Problem``; none
validates again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jdeconv import _geometry, _priors, _validation


@dataclasses.dataclass(frozen=True)
class Problem:
    """A validated kernel-estimation problem (a pytree: arrays are leaves).

    Attributes:
      x: original image(s), (m, n), or (B, m, n) for a batch; (m, n) when one
        original serves a batch of blurred images (``shared_original``).
      y: blurred image(s) in the solver's geometry: (M, N) or (B, M, N).
      support: optional (k, l) bool mask of taps allowed to be non-zero.
      kernel_shape: (k, l).
      mode: the geometry the user gave.
      solve_mode: the geometry the problem is solved in (``"same"`` -> ``"valid"``).
      batched: whether ``y`` has a leading batch axis.
      shared_original: one ``x`` for every ``y`` of the batch.
    """

    x: Any
    y: Any
    support: Any
    kernel_shape: tuple
    mode: str
    solve_mode: str
    batched: bool = False
    shared_original: bool = False

    @property
    def dtype(self):
        return self.x.dtype

    @property
    def n_taps(self) -> int:
        return self.kernel_shape[0] * self.kernel_shape[1]

    @property
    def batch_size(self) -> int:
        return int(self.y.shape[0]) if self.batched else 1


jax.tree_util.register_dataclass(
    Problem, data_fields=["x", "y", "support"],
    meta_fields=["kernel_shape", "mode", "solve_mode", "batched", "shared_original"])


def _check_textured(x, batched: bool) -> None:
    if not _validation.is_concrete(x):
        return
    host = np.asarray(x)
    flat = host.reshape(-1, host.shape[-2] * host.shape[-1]) if host.ndim == 3 else \
        host.reshape(1, -1)
    const = np.ptp(flat, axis=1) == 0
    if const.any():
        which = f" (pair {int(np.argmax(const))})" if batched and host.ndim == 3 else ""
        raise ValueError(
            f"the original image{which} is constant: every kernel with the same sum blurs it to "
            "the same image, so the kernel cannot be identified (the problem is singular). Use "
            "a textured original (edges, shapes, noise target).")


def make_problem(x, y, kernel_shape, *, mode: str = "valid", dtype=None, support=None,
                 batched: bool = False) -> Problem:
    """Validates a pair (or a batch) and returns the :class:`Problem`.

    Args:
      x: original image (m, n); for ``batched``: (B, m, n), or one (m, n)
        original shared by every blurred image.
      y: blurred image in ``mode``'s geometry (``batched``: (B, ...)).
      kernel_shape: (k, l) or an int.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      dtype: None (the inputs' common float type), ``"float32"`` or ``"float64"``.
      support: optional (k, l) bool mask.
      batched: whether ``y`` (and possibly ``x``) has a leading batch axis.

    Returns:
      A :class:`Problem`.

    Raises:
      ValueError, TypeError: naming the problem and the fix.

    Example:
      >>> import numpy as np, jdeconv
      >>> x = np.random.default_rng(0).random((20, 20))
      >>> p = jdeconv.make_problem(x, np.zeros((20, 20)), 5, mode="same")
      >>> p.y.shape, p.solve_mode
      ((16, 16), 'valid')
    """
    mode = _validation.check_mode(mode)
    kshape = _validation.as_shape(kernel_shape, "kernel_shape",
                                  maximum=_validation.MAX_KERNEL_SIDE)
    dt = _validation.resolve_dtype(dtype)
    xname = "xs (original images)" if batched else "x (original image)"
    yname = "ys (blurred images)" if batched else "y (blurred image)"
    x_ndim = np.ndim(x) if not hasattr(x, "ndim") else x.ndim
    shared = batched and x_ndim == 2
    x = _validation.as_float_array(xname, x, ndim=2 if (shared or not batched) else 3, dtype=dt)
    y = _validation.as_float_array(yname, y, ndim=3 if batched else 2, dtype=dt)
    if dt is None:
        x, y = _validation.common_float(x, y)
    if batched and not shared and x.shape[0] != y.shape[0]:
        raise ValueError(f"xs has {x.shape[0]} images but ys has {y.shape[0]}; give one "
                         "blurred image per original (or one original for all).")
    ishape = tuple(x.shape[-2:])
    k, l = kshape
    if k > ishape[0] or l > ishape[1]:
        raise ValueError(
            f"kernel shape {kshape} is larger than the original image {ishape}; the kernel "
            "must be smaller than the image (and much smaller for a well-posed estimate).")
    expected = _geometry.output_shape(ishape, kshape, mode)
    if tuple(y.shape[-2:]) != expected:
        hint = ""
        if mode == "valid" and tuple(y.shape[-2:]) == ishape:
            hint = " The blurred image is as large as the original: use mode='same'."
        elif mode == "same" and tuple(y.shape[-2:]) == _geometry.output_shape(ishape, kshape,
                                                                             "valid"):
            hint = " The blurred image has the valid size: use mode='valid'."
        raise ValueError(
            f"blurred image has shape {tuple(y.shape[-2:])} but an original {ishape} blurred by "
            f"a {kshape} kernel in mode {mode!r} has shape {expected}.{hint} Otherwise check "
            "the kernel size and that the two images belong together.")
    if mode == "same":
        y = _geometry.same_to_valid(y, kshape)
    solve_mode = _geometry.solver_mode(mode)
    M, N = y.shape[-2:]
    if solve_mode == "valid" and M * N < k * l:
        raise ValueError(
            f"the valid region of the blurred image has {M}x{N} = {M * N} pixels but the kernel "
            f"has {k}x{l} = {k * l} unknowns: the problem is underdetermined. Use a smaller "
            "kernel size or larger images.")
    _check_textured(x, batched)
    mask = _priors.check_support(support, kshape)
    return Problem(x, y, mask, kshape, mode, solve_mode, batched, shared)

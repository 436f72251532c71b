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
import jax.numpy as jnp
import numpy as np

from jdeconv import _geometry, _priors, _validation, _weighted_gram
from jdeconv._names import NAN_POLICIES


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
      pixel_weights: None, or per-pixel weights of ``y`` in the solver geometry
        (0 = not used; the product of ``mask``, ``weights``, the saturation and
        the NaN masks). Masked pixels of ``y`` hold 0.
      inverse_variance: the weights are inverse variances (``weights=`` was
        given), so a good fit has unit weighted residual variance.
    """

    x: Any
    y: Any
    support: Any
    kernel_shape: tuple
    mode: str
    solve_mode: str
    batched: bool = False
    shared_original: bool = False
    pixel_weights: Any = None
    inverse_variance: bool = False

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
    Problem, data_fields=["x", "y", "support", "pixel_weights"],
    meta_fields=["kernel_shape", "mode", "solve_mode", "batched", "shared_original",
                 "inverse_variance"])


def _pixel_weights(x, y, kshape, mode, *, mask, weights, saturation, nan, batched):
    """The product of the pixel masks and weights, in ``y``'s (user) geometry, or None."""
    if mask is None and weights is None and saturation is None and nan == "raise":
        return None, False
    ones = np.ones(y.shape, dtype=np.asarray(y).dtype)
    w = ones
    if mask is not None:
        try:
            m = np.asarray(mask)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise TypeError(f"mask must be a boolean image, got {type(mask).__name__}.") from e
        if m.dtype.kind not in "biuf" or (m.dtype != bool and not np.isin(m, (0, 1)).all()):
            raise TypeError("mask must be boolean (True = use the pixel) or 0/1 numbers, got "
                            f"dtype {m.dtype}.")
        if m.shape != y.shape[-m.ndim:] or m.ndim not in (2, y.ndim):
            raise ValueError(f"mask has shape {m.shape} but the blurred image has shape "
                             f"{tuple(y.shape[-2:])}; give one boolean per pixel of y.")
        w = w * m.astype(w.dtype)
    inverse_variance = False
    if weights is not None:
        if isinstance(weights, str):
            if weights != "poisson":
                raise _validation.unknown_name("weights", weights, ("poisson",))
            yh = np.asarray(y)
            var = np.maximum(np.where(np.isnan(yh), 0, yh), 0)
            wt = np.where(var > 0, 1 / np.where(var > 0, var, 1), 0)
        else:
            wt = np.asarray(_validation.as_float_array("weights", weights, ndim=None))
            if wt.shape != tuple(y.shape[-wt.ndim:]) or wt.ndim not in (2, y.ndim):
                raise ValueError(f"weights has shape {wt.shape} but the blurred image has "
                                 f"shape {tuple(y.shape[-2:])}; give one inverse variance per "
                                 "pixel of y.")
            if (wt < 0).any():
                raise ValueError(f"weights has {int((wt < 0).sum())} negative value(s); weights "
                                 "are inverse variances (>= 0; 0 = masked).")
        w = w * wt
        inverse_variance = True
    if nan == "mask":
        w = w * ~np.isnan(np.asarray(y))
    if saturation is not None:
        level = _validation.check_real(saturation, "saturation", positive=True, example=0.98)
        w = w * np.asarray(_saturation_mask(x, y, level, kshape, mode))
    return w, inverse_variance


def _saturation_mask(x, y, level, kshape, mode):
    """:func:`jdeconv.saturation_mask` in ``mode``'s geometry, for a pair or a batch.

    ``x`` padded for ``mode`` has ``y``'s shape as its valid output; a batch (``y`` of
    rank 3, with one ``x`` per pair or one shared) is mapped pair by pair.
    """
    xp = _geometry.pad(x, kshape, mode)
    lvl = jnp.asarray(level, xp.dtype)

    def one(xi, yi):
        return _weighted_gram._saturation_jit(xi, yi, lvl, kshape)

    if y.ndim == 2:
        return one(xp, y)
    return jax.vmap(one, in_axes=(0 if xp.ndim == 3 else None, 0))(xp, y)


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
                 batched: bool = False, mask=None, weights=None, saturation=None,
                 nan: str = "raise") -> Problem:
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
      mask: optional boolean image of ``y``'s shape, True = use the pixel.
      weights: optional per-pixel inverse variances of ``y``'s shape, or
        ``"poisson"`` (variance = ``y``, counts).
      saturation: optional level: pixels of ``y`` at or above it, and pixels of
        ``y`` whose footprint covers a pixel of ``x`` at or above it, are not used.
      nan: ``"raise"`` (NaN in ``y`` is an error) or ``"mask"`` (NaN pixels of
        ``y`` are not used).

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
    nan = _validation.check_choice("nan", nan, NAN_POLICIES)
    kshape = _validation.as_shape(kernel_shape, "kernel_shape",
                                  maximum=_validation.MAX_KERNEL_SIDE)
    dt = _validation.resolve_dtype(dtype)
    xname = "xs (original images)" if batched else "x (original image)"
    yname = "ys (blurred images)" if batched else "y (blurred image)"
    x_ndim = np.ndim(x) if not hasattr(x, "ndim") else x.ndim
    shared = batched and x_ndim == 2
    x = _validation.as_float_array(xname, x, ndim=2 if (shared or not batched) else 3, dtype=dt)
    y = _validation.as_float_array(yname, y, ndim=3 if batched else 2, dtype=dt,
                                   allow_nan=nan == "mask")
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
    w, inverse_variance = _pixel_weights(x, y, kshape, mode, mask=mask, weights=weights,
                                         saturation=saturation, nan=nan, batched=batched)
    if w is not None:
        if w.ndim < y.ndim:
            w = np.broadcast_to(w, y.shape)
        w = jnp.asarray(w, y.dtype)
        y = jnp.where(w > 0, jnp.nan_to_num(y), 0)
    if mode == "same":
        y = _geometry.same_to_valid(y, kshape)
        w = None if w is None else _geometry.same_to_valid(w, kshape)
    solve_mode = _geometry.solver_mode(mode)
    if w is not None:
        used = np.asarray(w > 0).reshape(-1, w.shape[-2] * w.shape[-1]).sum(axis=1).min()
        if used < kshape[0] * kshape[1]:
            raise ValueError(
                f"only {int(used)} pixels of the blurred image remain after masking, fewer "
                f"than the {kshape[0] * kshape[1]} kernel taps; mask fewer pixels or use a "
                "smaller kernel.")
    M, N = y.shape[-2:]
    if solve_mode == "valid" and M * N < k * l:
        raise ValueError(
            f"the valid region of the blurred image has {M}x{N} = {M * N} pixels but the kernel "
            f"has {k}x{l} = {k * l} unknowns: the problem is underdetermined. Use a smaller "
            "kernel size or larger images.")
    _check_textured(x, batched)
    support_mask = _priors.check_support(support, kshape)
    return Problem(x, y, support_mask, kshape, mode, solve_mode, batched, shared, w,
                   inverse_variance)

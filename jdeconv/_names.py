"""Every name a user can pass, declared once.

Each set of names is a ``Literal`` type (for signatures, the config schema and
type checkers) and the tuple of its values (for validation messages and CLI
choices). This module imports nothing heavy: the command line reads it to
answer ``--help`` without loading JAX.
"""

from __future__ import annotations

import typing
from typing import Literal

Mode = Literal["valid", "same", "full", "circular"]
"""Convolution geometry (see :func:`jdeconv.conv2d`)."""

Method = Literal["auto", "direct", "fft"]
"""How a convolution is computed."""

Prior = Literal["simplex", "nonneg", "sum_to_one", "none"]
"""The closed convex set the kernel lies in."""

Solver = Literal["auto", "exact", "fista", "gd", "momentum", "adam", "fourier"]
"""Estimation algorithms (``"auto"`` resolves to a concrete one)."""

Regularizer = Literal["tikhonov", "smooth", "l1"]
"""Regularisation terms on the kernel."""

QuadraticRegularizer = Literal["tikhonov", "smooth"]
"""The regularisers whose weight :func:`jdeconv.choose_regularization` can choose."""

Criterion = Literal["gcv", "upre", "discrepancy", "lcurve"]
"""Criteria for the automatic choice of a regularisation weight."""

Channels = Literal["gray", "rgb", "keep"]
"""How image files with colour are read."""

Background = Literal["none", "constant", "plane"]
"""Named background models (an int ``d >= 0`` is a polynomial degree; see
:func:`jdeconv.estimate_kernel`'s ``background=``)."""

Loss = Literal["l2", "huber", "poisson"]
"""Data losses: least squares; Huber (robust: reweighted exact solves, or the
matrix-free path with a first-order solver); the Poisson likelihood of counts
(matrix-free path only)."""

Orientation = Literal["convolution", "correlation"]
"""How a kernel is stored: as a convolution kernel, or flipped 180° (a correlation filter)."""

NanPolicy = Literal["raise", "mask"]
"""What NaN in the blurred image means: an error, or a masked pixel."""

MODES: tuple[str, ...] = typing.get_args(Mode)
METHODS: tuple[str, ...] = typing.get_args(Method)
PRIORS: tuple[str, ...] = typing.get_args(Prior)
SOLVERS: tuple[str, ...] = typing.get_args(Solver)
REGULARIZERS: tuple[str, ...] = typing.get_args(Regularizer)
QUADRATIC_REGULARIZERS: tuple[str, ...] = typing.get_args(QuadraticRegularizer)
CRITERIA: tuple[str, ...] = typing.get_args(Criterion)
CHANNELS: tuple[str, ...] = typing.get_args(Channels)
BACKGROUNDS: tuple[str, ...] = typing.get_args(Background)
LOSSES: tuple[str, ...] = typing.get_args(Loss)
ORIENTATIONS: tuple[str, ...] = typing.get_args(Orientation)
NAN_POLICIES: tuple[str, ...] = typing.get_args(NanPolicy)

#: Solvers that iterate with a gradient step (optax transformations + projection).
FIRST_ORDER_SOLVERS: tuple[str, ...] = ("fista", "gd", "momentum", "adam")
#: Priors that fix ``sum(h) = 1`` / ``h >= 0``.
EQUALITY_PRIORS: tuple[str, ...] = ("sum_to_one", "simplex")
BOUND_PRIORS: tuple[str, ...] = ("nonneg", "simplex")

PSFModel = Literal["gaussian", "elliptical_gaussian", "moffat", "airy", "defocus", "line_motion",
                   "zernike"]
"""Parametric PSF models (see :data:`jdeconv.PSF_MODELS` and :func:`jdeconv.fit_psf`)."""

FWHMMethod = Literal["profile", "moments"]
"""How :func:`jdeconv.fwhm` measures a width."""

PSF_MODEL_NAMES: tuple[str, ...] = typing.get_args(PSFModel)
FWHM_METHODS: tuple[str, ...] = typing.get_args(FWHMMethod)

TargetKind = Literal["binary", "noise"]
"""Random calibration targets (see :func:`jdeconv.make_target`)."""

TARGET_KINDS: tuple[str, ...] = typing.get_args(TargetKind)


def coupling_conflicts(gain, background, loss) -> list[str]:
    """The options a coupled PSF field (``coupling > 0``) cannot take, by their API names.

    The coupled solve is a plain least-squares problem: no ``gain``, no
    ``background`` and ``loss="l2"`` only. Each layer (API, config, command line)
    names the conflicts in its own spelling.

    Example:
      >>> coupling_conflicts(True, "none", "huber")
      ['gain', 'loss']
    """
    return [name for name, on in (("gain", bool(gain)),
                                  ("background", background not in (None, "none")),
                                  ("loss", loss != "l2")) if on]

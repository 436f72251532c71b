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

MODES: tuple[str, ...] = typing.get_args(Mode)
METHODS: tuple[str, ...] = typing.get_args(Method)
PRIORS: tuple[str, ...] = typing.get_args(Prior)
SOLVERS: tuple[str, ...] = typing.get_args(Solver)
REGULARIZERS: tuple[str, ...] = typing.get_args(Regularizer)
QUADRATIC_REGULARIZERS: tuple[str, ...] = typing.get_args(QuadraticRegularizer)
CRITERIA: tuple[str, ...] = typing.get_args(Criterion)
CHANNELS: tuple[str, ...] = typing.get_args(Channels)

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

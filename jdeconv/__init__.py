"""jdeconv: estimate the convolution kernel (PSF) between an image and its blurred copy.

The forward model is :func:`conv2d` (MATLAB ``conv2`` geometry); the estimation
problem is least squares in the kernel, ``min_h ½||conv2d(x, h) - y||²``, under
priors such as the simplex (nonnegative, sum to one).

Three layers, imported one way:

* ``jdeconv`` (this namespace, the core): forward model, operators, normal
  equations, priors, regularisers, solvers, the estimate. Needs only jax,
  optax and numpy.
* :mod:`jdeconv.data`: synthetic images, kernel families, noise, image files.
* :mod:`jdeconv.experiment`: YAML configs, runs, metrics, plots, the CLI.

The names a user can pass are listed in the constants ``MODES``, ``PRIORS``,
``SOLVERS`` and ``REGULARIZERS`` (declared once in ``jdeconv/_names.py``).

Names are loaded on first use (PEP 562), so ``import jdeconv`` is cheap and the
command line answers ``--help`` without importing JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jdeconv._version import __version__ as __version__

# public name -> private module that defines it (the one place it is exported)
_EXPORTS = {
    "conv2d": "_conv",
    "conv2d_adjoint_image": "_conv",
    "conv2d_adjoint_kernel": "_conv",
    "ImageOperator": "_operators",
    "KernelOperator": "_operators",
    "dottest": "_operators",
    "image_operator": "_operators",
    "kernel_operator": "_operators",
    "data_loss": "_loss",
    "data_loss_grad": "_loss",
    "NormalEquations": "_gram",
    "normal_equations": "_gram",
    "project_prior": "_priors",
    "Problem": "_problem",
    "make_problem": "_problem",
    "RESULTS": "_solution",
    "EstimateError": "_solution",
    "KernelEstimate": "_solution",
    "estimate_kernel": "_estimate",
    "estimate_kernels": "_estimate",
    "AutoRegularization": "_autoreg",
    "choose_regularization": "_autoreg",
    "estimate_noise": "_noise_level",
    "FitWarning": "_diagnostics",
    "KernelBoxWarning": "_diagnostics",
    "conv2d_field": "_field_conv",
    "conv2d_field_adjoint_kernels": "_field_conv",
    "conv2d_field_adjoint_image": "_field_conv",
    "KernelFieldOperator": "_field_conv",
    "ImageFieldOperator": "_field_conv",
    "kernel_field_operator": "_field_conv",
    "image_field_operator": "_field_conv",
    "estimate_psf_field": "_field",
    "PSFField": "_field",
    "TILE_RESULTS": "_field",
    "estimate_psf_polynomial": "_field_poly",
    "PolynomialPSF": "_field_poly",
    "fit_psf": "_fit_psf",
    "PSFFit": "_fit_psf",
    "PSF_MODELS": "_psf_models",
    "ParametricPSF": "_psf_models",
    "gaussian_psf": "_psf_models",
    "elliptical_gaussian_psf": "_psf_models",
    "moffat_psf": "_psf_models",
    "airy_psf": "_psf_models",
    "defocus_psf": "_psf_models",
    "line_motion_psf": "_psf_models",
    "zernike_psf": "_psf_models",
    "kernel_moments": "_kernel_metrics",
    "fwhm": "_kernel_metrics",
    "ellipticity": "_kernel_metrics",
    "mtf": "_kernel_metrics",
    "mtf50": "_kernel_metrics",
    "KernelMoments": "_kernel_metrics",
    "FWHM": "_kernel_metrics",
    "Ellipticity": "_kernel_metrics",
    "MTF": "_kernel_metrics",
    "SOLVER_OPTIONS": "_estimate",
    "LOSS_OPTIONS": "_estimate",
    "solve_qp_differentiable": "_implicit",
    "kernel_standard_errors": "_uncertainty",
    "KernelUncertainty": "_uncertainty",
    "residual_noise_sigma": "_uncertainty",
    "conditioning_report": "_uncertainty",
    "ConditioningReport": "_uncertainty",
    "IdentifiabilityWarning": "_uncertainty",
    "make_target": "_uncertainty",
    "CalibrationTarget": "_uncertainty",
    "weighted_normal_equations": "_weighted_gram",
    "augmented_normal_equations": "_weighted_gram",
    "solve_photometric": "_weighted_gram",
    "PhotometricFit": "_weighted_gram",
    "saturation_mask": "_weighted_gram",
    "huber_weights": "_weighted_gram",
    "poisson_weights": "_weighted_gram",
    "background_image": "_weighted_gram",
    "MODES": "_names",
    "PRIORS": "_names",
    "SOLVERS": "_names",
    "REGULARIZERS": "_names",
}

# subpackages reachable as attributes (``jdeconv.data.shapes_image``)
_SUBPACKAGES = ("data", "experiment")

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"jdeconv.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"jdeconv.{name}")
    raise AttributeError(f"module 'jdeconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBPACKAGES))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from jdeconv._autoreg import AutoRegularization, choose_regularization
    from jdeconv._conv import conv2d, conv2d_adjoint_image, conv2d_adjoint_kernel
    from jdeconv._estimate import estimate_kernel, estimate_kernels
    from jdeconv._gram import NormalEquations, normal_equations
    from jdeconv._loss import data_loss, data_loss_grad
    from jdeconv._names import MODES, PRIORS, REGULARIZERS, SOLVERS
    from jdeconv._noise_level import estimate_noise
    from jdeconv._operators import (ImageOperator, KernelOperator, dottest, image_operator,
                                    kernel_operator)
    from jdeconv._priors import project_prior
    from jdeconv._problem import Problem, make_problem
    from jdeconv._diagnostics import FitWarning, KernelBoxWarning
    from jdeconv._estimate import LOSS_OPTIONS, SOLVER_OPTIONS
    from jdeconv._field import TILE_RESULTS, PSFField, estimate_psf_field
    from jdeconv._field_conv import (ImageFieldOperator, KernelFieldOperator, conv2d_field,
                                     conv2d_field_adjoint_image, conv2d_field_adjoint_kernels,
                                     image_field_operator, kernel_field_operator)
    from jdeconv._field_poly import PolynomialPSF, estimate_psf_polynomial
    from jdeconv._fit_psf import PSFFit, fit_psf
    from jdeconv._implicit import solve_qp_differentiable
    from jdeconv._kernel_metrics import (FWHM, MTF, Ellipticity, KernelMoments, ellipticity,
                                         fwhm, kernel_moments, mtf, mtf50)
    from jdeconv._psf_models import (PSF_MODELS, ParametricPSF, airy_psf, defocus_psf,
                                     elliptical_gaussian_psf, gaussian_psf, line_motion_psf,
                                     moffat_psf, zernike_psf)
    from jdeconv._solution import RESULTS, EstimateError, KernelEstimate
    from jdeconv._uncertainty import (CalibrationTarget, ConditioningReport,
                                      IdentifiabilityWarning, KernelUncertainty,
                                      conditioning_report, kernel_standard_errors, make_target,
                                      residual_noise_sigma)
    from jdeconv._weighted_gram import (PhotometricFit, augmented_normal_equations,
                                        background_image, huber_weights, poisson_weights,
                                        saturation_mask, solve_photometric,
                                        weighted_normal_equations)

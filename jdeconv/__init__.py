"""jdeconv: estimate the convolution kernel (PSF) between an image and its blurred copy.

The forward model is :func:`conv2d` (MATLAB ``conv2`` geometry); the estimation
problem is least squares in the kernel, ``min_h ½||conv2d(x, h) - y||²``, under
priors such as the simplex (nonnegative, sum to one).
"""

from jdeconv._autoreg import AutoRegularization as AutoRegularization
from jdeconv._autoreg import choose_regularization as choose_regularization
from jdeconv._config import Config as Config
from jdeconv._config import ConfigError as ConfigError
from jdeconv._config import load_config as load_config
from jdeconv._conv import conv2d as conv2d
from jdeconv._conv import conv2d_adjoint_image as conv2d_adjoint_image
from jdeconv._conv import conv2d_adjoint_kernel as conv2d_adjoint_kernel
from jdeconv._estimate import SOLVERS as SOLVERS
from jdeconv._estimate import estimate_kernel as estimate_kernel
from jdeconv._estimate import estimate_kernels as estimate_kernels
from jdeconv._gram import NormalEquations as NormalEquations
from jdeconv._gram import normal_equations as normal_equations
from jdeconv._images import IMAGE_NAMES as IMAGE_NAMES
from jdeconv._images import NATURAL_IMAGE_NAMES as NATURAL_IMAGE_NAMES
from jdeconv._images import checkerboard_image as checkerboard_image
from jdeconv._images import delta_image as delta_image
from jdeconv._images import fractal_image as fractal_image
from jdeconv._images import make_image as make_image
from jdeconv._images import natural_image as natural_image
from jdeconv._images import noise_target as noise_target
from jdeconv._images import question_square_image as question_square_image
from jdeconv._images import shapes_image as shapes_image
from jdeconv._io import ImageInfo as ImageInfo
from jdeconv._io import LossyImageWarning as LossyImageWarning
from jdeconv._io import read_image as read_image
from jdeconv._io import write_image as write_image
from jdeconv._kernels import KERNEL_FAMILIES as KERNEL_FAMILIES
from jdeconv._kernels import airy_kernel as airy_kernel
from jdeconv._kernels import box_kernel as box_kernel
from jdeconv._kernels import disk_kernel as disk_kernel
from jdeconv._kernels import gaussian_kernel as gaussian_kernel
from jdeconv._kernels import make_kernel as make_kernel
from jdeconv._kernels import motion_kernel as motion_kernel
from jdeconv._kernels import random_smooth_kernel as random_smooth_kernel
from jdeconv._loss import data_loss as data_loss
from jdeconv._loss import data_loss_grad as data_loss_grad
from jdeconv._noise_level import estimate_noise as estimate_noise
from jdeconv._operators import ImageOperator as ImageOperator
from jdeconv._operators import KernelOperator as KernelOperator
from jdeconv._operators import dottest as dottest
from jdeconv._operators import image_operator as image_operator
from jdeconv._noise import add_gaussian_noise as add_gaussian_noise
from jdeconv._noise import add_poisson_noise as add_poisson_noise
from jdeconv._noise import quantize as quantize
from jdeconv._operators import kernel_operator as kernel_operator
from jdeconv._priors import PRIORS as PRIORS
from jdeconv._priors import project as project_prior
from jdeconv._regularizers import REGULARIZERS as REGULARIZERS
from jdeconv._result import KernelEstimate as KernelEstimate
from jdeconv._runner import run_experiment as run_experiment

__version__ = "0.1.0"

__all__ = [
    "AutoRegularization",    "Config",
    "ConfigError",    "IMAGE_NAMES",
    "ImageInfo",
    "ImageOperator",
    "KernelEstimate",
    "PRIORS",
    "REGULARIZERS",
    "SOLVERS",
    "KERNEL_FAMILIES",
    "LossyImageWarning",
    "NATURAL_IMAGE_NAMES",
    "NormalEquations",
    "add_gaussian_noise",
    "add_poisson_noise",
    "airy_kernel",
    "box_kernel",
    "checkerboard_image",
    "choose_regularization",
    "delta_image",
    "disk_kernel",
    "estimate_kernel",
    "estimate_kernels",
    "estimate_noise",
    "fractal_image",
    "gaussian_kernel",
    "make_image",
    "make_kernel",
    "motion_kernel",
    "natural_image",
    "noise_target",
    "normal_equations",
    "project_prior",
    "question_square_image",
    "quantize",
    "random_smooth_kernel",
    "read_image",
    "run_experiment",
    "shapes_image",
    "write_image",
    "KernelOperator",
    "conv2d",
    "conv2d_adjoint_image",
    "conv2d_adjoint_kernel",
    "data_loss",
    "data_loss_grad",
    "dottest",
    "image_operator",
    "kernel_operator",
    "load_config",
]

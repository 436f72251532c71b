"""jdeconv: estimate the convolution kernel (PSF) between an image and its blurred copy.

The forward model is :func:`conv2d` (MATLAB ``conv2`` geometry); the estimation
problem is least squares in the kernel, ``min_h ½||conv2d(x, h) - y||²``, under
priors such as the simplex (nonnegative, sum to one).
"""

from jdeconv._conv import conv2d as conv2d
from jdeconv._conv import conv2d_adjoint_image as conv2d_adjoint_image
from jdeconv._conv import conv2d_adjoint_kernel as conv2d_adjoint_kernel
from jdeconv._loss import data_loss as data_loss
from jdeconv._loss import data_loss_grad as data_loss_grad
from jdeconv._operators import ImageOperator as ImageOperator
from jdeconv._operators import KernelOperator as KernelOperator
from jdeconv._operators import dottest as dottest
from jdeconv._operators import image_operator as image_operator
from jdeconv._operators import kernel_operator as kernel_operator

__version__ = "0.1.0"

__all__ = [
    "ImageOperator",
    "KernelOperator",
    "conv2d",
    "conv2d_adjoint_image",
    "conv2d_adjoint_kernel",
    "data_loss",
    "data_loss_grad",
    "dottest",
    "image_operator",
    "kernel_operator",
]

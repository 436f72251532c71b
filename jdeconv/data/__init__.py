"""Data for kernel-estimation experiments: synthetic images, kernel families, noise, image files.

The data layer of jdeconv. It depends on the core (``jdeconv``) and never the
other way round; :mod:`jdeconv.experiment` builds its runs from it. Every
function returns host-side NumPy float64 arrays, is deterministic given an
explicit ``seed``, and checks its sizes before allocating anything.

* Images: :func:`make_image` by name (``IMAGE_NAMES``), or
  :func:`shapes_image`, :func:`noise_target`, :func:`fractal_image`,
  :func:`natural_image` (photographs from scikit-image), ...
* Kernels: :func:`make_kernel` by family (``KERNEL_FAMILIES``), or
  :func:`gaussian_kernel`, :func:`motion_kernel`, :func:`disk_kernel`, ...
* Noise: :func:`add_gaussian_noise`, :func:`add_poisson_noise`, :func:`quantize`.
* Files: :func:`read_image`, :func:`write_image` (PNG, TIFF, ``.npy``; JPEG
  read-only).

Example:
    >>> import jdeconv
    >>> x = jdeconv.data.shapes_image((48, 48), seed=0, n_shapes=6)
    >>> h = jdeconv.data.gaussian_kernel(5, 1.0)
    >>> y = jdeconv.data.add_gaussian_noise(jdeconv.conv2d(x, h), 0.01, seed=1)
    >>> y.shape, y.dtype
    ((44, 44), dtype('float64'))
"""

from jdeconv.data._images import IMAGE_NAMES as IMAGE_NAMES
from jdeconv.data._images import NATURAL_IMAGE_NAMES as NATURAL_IMAGE_NAMES
from jdeconv.data._images import checkerboard_image as checkerboard_image
from jdeconv.data._images import delta_image as delta_image
from jdeconv.data._images import fractal_image as fractal_image
from jdeconv.data._images import make_image as make_image
from jdeconv.data._images import natural_image as natural_image
from jdeconv.data._images import noise_target as noise_target
from jdeconv.data._images import question_square_image as question_square_image
from jdeconv.data._images import shapes_image as shapes_image
from jdeconv.data._io import READ_EXTENSIONS as READ_EXTENSIONS
from jdeconv.data._io import WRITE_EXTENSIONS as WRITE_EXTENSIONS
from jdeconv.data._io import ImageInfo as ImageInfo
from jdeconv.data._io import LossyImageWarning as LossyImageWarning
from jdeconv.data._io import read_image as read_image
from jdeconv.data._io import write_image as write_image
from jdeconv.data._kernels import KERNEL_FAMILIES as KERNEL_FAMILIES
from jdeconv.data._kernels import airy_kernel as airy_kernel
from jdeconv.data._kernels import box_kernel as box_kernel
from jdeconv.data._kernels import disk_kernel as disk_kernel
from jdeconv.data._kernels import gaussian_kernel as gaussian_kernel
from jdeconv.data._kernels import make_kernel as make_kernel
from jdeconv.data._kernels import motion_kernel as motion_kernel
from jdeconv.data._kernels import random_smooth_kernel as random_smooth_kernel
from jdeconv.data._noise import add_gaussian_noise as add_gaussian_noise
from jdeconv.data._noise import add_poisson_noise as add_poisson_noise
from jdeconv.data._noise import quantize as quantize

__all__ = [
    "IMAGE_NAMES",
    "KERNEL_FAMILIES",
    "NATURAL_IMAGE_NAMES",
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "ImageInfo",
    "LossyImageWarning",
    "add_gaussian_noise",
    "add_poisson_noise",
    "airy_kernel",
    "box_kernel",
    "checkerboard_image",
    "delta_image",
    "disk_kernel",
    "fractal_image",
    "gaussian_kernel",
    "make_image",
    "make_kernel",
    "motion_kernel",
    "natural_image",
    "noise_target",
    "quantize",
    "random_smooth_kernel",
    "read_image",
    "shapes_image",
    "write_image",
]

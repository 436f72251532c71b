"""Shared test helpers (import as ``from _helpers import ...``; tests/ is on pythonpath)."""

import numpy as np
from hypothesis import strategies as st


def tol(dtype):
    """Relative tolerance that scales with the floating type."""
    return 1e-10 if np.dtype(dtype) == np.float64 else 2e-4


def rel_err(a, b):
    """``||a - b|| / ||b||`` in float64."""
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(np.asarray(a, np.float64).reshape(b.shape) - b) / np.linalg.norm(b))


def blur(x, h, mode="valid"):
    """``conv2d(x, h, mode)`` as a NumPy array."""
    import jdeconv

    return np.asarray(jdeconv.conv2d(x, h, mode))


# ----------------------------------------------------------------------------
# Small convolution problems for property tests (forward model, operators, loss).
# Shapes come from small fixed sets: every new shape compiles (0.1-1 s each).
# ----------------------------------------------------------------------------

IMAGE_SHAPES = [(1, 1), (4, 4), (5, 8), (9, 6), (12, 12)]
KERNEL_SHAPES = [(1, 1), (2, 3), (3, 3), (4, 2), (4, 4), (5, 8), (12, 12)]
MODES = ["valid", "same", "full", "circular"]
DTYPES = [np.float32, np.float64]


@st.composite
def conv_problems(draw, modes=MODES):
    """An (image shape, kernel shape, mode, dtype, seed) with the kernel fitting the image."""
    m, n = draw(st.sampled_from(IMAGE_SHAPES))
    mode = draw(st.sampled_from(modes))
    k, l = draw(st.sampled_from([s for s in KERNEL_SHAPES if s[0] <= m and s[1] <= n]))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    return (m, n), (k, l), mode, dtype, seed


def random_array(rng, shape, dtype):
    """Standard normal values of ``shape`` in ``dtype``."""
    return rng.standard_normal(shape).astype(dtype)


def well_posed():
    """A well-conditioned pair (noise calibration target, 40x40; 5x5 Gaussian).

    Shared by the first-order solver tests: one shape, so each (solver, prior,
    max_iters) compiles once per session.
    """
    import jdeconv

    return (jdeconv.data.noise_target((40, 40), seed=1), jdeconv.data.gaussian_kernel(5, 1.0))


#: Iteration budget of the first-order solver tests (static: one program per solver and prior).
FIRST_ORDER_ITERS = 3000


def batch_problem():
    """Four pairs of the well-posed shape (40x40 originals, 5x5 kernels), scales 1e-4 to 1e5.

    Returns ``(xs, ys, hs)``; the blurred images carry 0.1 % noise.
    """
    import jdeconv

    d = jdeconv.data
    hs = [d.gaussian_kernel(5, s) for s in (0.8, 1.0, 1.4)] + [d.motion_kernel(5, 4.0)]
    xs = np.stack([d.noise_target((40, 40), seed=s) * 10.0 ** (3 * s - 4) for s in range(4)])
    ys = np.stack([d.add_gaussian_noise(blur(x, h), 1e-3 * x.max(), seed=i)
                   for i, (x, h) in enumerate(zip(xs, hs))])
    return xs, ys, hs

"""jdeconv._solvers.fourier: the regularised spectral division (exact for full/circular data)."""

import jax.numpy as jnp
import numpy as np
import pytest

import jdeconv
from jdeconv._solvers import fourier
from _helpers import blur, rel_err

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")


@pytest.mark.parametrize("mode", ["full", "circular"])
def test_exact_for_full_and_circular_data(mode):
    x = jdeconv.data.natural_image("camera", shape=(48, 48))
    h = jdeconv.data.disk_kernel(6, 2.5)
    est = jdeconv.estimate_kernel(x, blur(x, h, mode), 6, mode=mode, solver="fourier")
    assert rel_err(est.kernel, h) <= 1e-6, rel_err(est.kernel, h)
    assert est.solver == "fourier" and int(est.iterations) == 1 and bool(est.converged)


def test_unconstrained_solve_inverts_circular_blur():
    x = jnp.asarray(jdeconv.data.noise_target((16, 16), seed=2))
    h = np.random.default_rng(0).random((3, 4))
    y = jdeconv.conv2d(x, h, "circular")
    est = fourier.solve(x, y, (3, 4), "circular", 1e-12)
    np.testing.assert_allclose(est, h, atol=1e-8)


def test_fourier_is_approximate_on_valid_data_but_reasonable():
    x = jdeconv.data.natural_image("camera", shape=(96, 96))
    h = jdeconv.data.gaussian_kernel(9, 1.6)
    est = jdeconv.estimate_kernel(x, blur(x, h), 9, solver="fourier")
    assert est.solver == "fourier" and int(est.iterations) == 1
    assert 1e-6 < rel_err(est.kernel, h) < 0.3
    # a one-shot solve: its history holds the start and the end
    hist = np.asarray(est.loss_history)
    assert np.isfinite(hist[:2]).all() and np.isnan(hist[2:]).all() and hist[1] < hist[0]
    k = np.asarray(est.kernel)
    assert k.min() >= 0 and abs(k.sum() - 1) < 1e-12  # projected on the prior

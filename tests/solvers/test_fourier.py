"""jdeconv._solvers.fourier: the regularised spectral division (exact for full/circular data)."""

import jax
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


def _sparse_pair(shape=(48, 48), k=7, noise=1e-3):
    x = jnp.asarray(jdeconv.data.natural_image("camera", shape=shape))
    h = np.zeros((k, k))
    h[1:3, 1:k - 1] = 1.0  # a short off-centre streak: most taps are zero
    h /= h.sum()
    y = blur(x, h) + noise * np.random.default_rng(3).standard_normal(
        (shape[0] - k + 1, shape[1] - k + 1))
    return x, jnp.asarray(y), h


@pytest.mark.parametrize("prior", ["simplex", "nonneg"])
def test_active_set_guess_starts_the_exact_solver_elsewhere_not_at_another_answer(prior):
    from jdeconv._solvers.exact import solve_qp

    x, y, h = _sparse_pair()
    k = h.shape[0]
    mask = jnp.ones(k * k, bool).at[0].set(False)  # a support: its complement starts at zero
    # at 7 x 7 the estimate frees most taps: the rule that would then give the full
    # support is switched off (dense=1), as the engine guesses only from 400 taps
    guess = fourier.active_set_guess(x, y, (k, k), mask, eq=prior == "simplex", dense=1.0)
    jitted = jax.jit(fourier.active_set_guess, static_argnames=("kernel_shape", "eq", "crop"))
    np.testing.assert_array_equal(jitted(x, y, kernel_shape=(k, k), mask=mask,
                                         eq=prior == "simplex", dense=1.0), guess)
    g = np.asarray(guess)
    assert g[0] and not g.reshape(k, k)[h > 0].any()  # the kernel's taps start free
    assert g.sum() >= 0.2 * (h == 0).sum()  # and many zeros at zero (at 31x31: 80-90 %)
    ne = jdeconv.normal_equations(x, y, k)
    cold = solve_qp(ne.gram, ne.rhs, prior=prior, mask=mask)
    warm = solve_qp(ne.gram, ne.rhs, prior=prior, mask=mask, initial_active=guess)
    assert bool(cold.converged) and bool(warm.converged)
    np.testing.assert_allclose(warm.solution, cold.solution, rtol=0, atol=1e-9)


def test_active_set_guess_from_a_crop_of_a_large_pair():
    x, y, h = _sparse_pair(shape=(96, 80))
    k = h.shape[0]
    g = np.asarray(fourier.active_set_guess(x, y, (k, k), jnp.ones(k * k, bool), eq=True,
                                            crop=48, dense=1.0))  # 48² of the 90 x 74 pixels
    assert not g.reshape(k, k)[h > 0].any() and g.sum() >= 0.2 * (h == 0).sum()
    from jdeconv import _conv

    assert _conv.fast_len_at_most(74) == 72 and _conv.fast_len_at_most(48) == 48
    assert _conv.fast_len_at_most(225) == 225 and _conv.fast_len(526) == 540


def test_a_guess_that_frees_nearly_everything_gives_way_to_the_full_support():
    x = jnp.asarray(jdeconv.data.natural_image("camera", shape=(48, 48)))
    y = jnp.asarray(blur(x, jdeconv.data.gaussian_kernel(7, 1.5)))  # fills its box
    mask = jnp.ones(49, bool).at[3].set(False)
    loose = fourier.active_set_guess(x, y, (7, 7), mask, eq=True, dense=1.0)
    assert 0.85 * 48 < int((~loose).sum()) < 48  # the guess itself: a few taps at zero
    np.testing.assert_array_equal(fourier.active_set_guess(x, y, (7, 7), mask, eq=True), ~mask)

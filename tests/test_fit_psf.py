"""fit_psf: parameter recovery, calibrated standard errors, geometry, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdeconv
from jdeconv._fit_psf import PSFFit, fit_psf
from jdeconv._psf_models import PSF_MODELS, ParametricPSF
from jdeconv._solution import RESULTS

SHAPE = (11, 11)
IMAGE = (48, 48)

# Truths away from the defaults, with sub-pixel offsets.
TRUTH = {
    "gaussian": {"sigma": 1.3, "dx": 0.2, "dy": -0.1},
    "elliptical_gaussian": {"sigma_major": 2.0, "sigma_minor": 1.1, "angle": 0.5, "dx": 0.2,
                            "dy": -0.1},
    "moffat": {"alpha": 2.0, "beta": 2.5, "dx": 0.2, "dy": -0.1},
    "airy": {"radius": 3.0, "dx": 0.2, "dy": -0.1},
    "defocus": {"radius": 2.7, "dx": 0.2, "dy": -0.1},
    "line_motion": {"length": 5.3, "angle": 0.6, "dx": 0.2, "dy": -0.1},
    "zernike": {"coeffs": np.array([0.4, 0.2, -0.1, 0.15, -0.1, 0.1]), "radius": 3.0,
                "dx": 0.2, "dy": -0.1},
}
# The sign of the even Zernike terms is a branch choice (see zernike_psf): start on its side.
INIT = {"zernike": {"coeffs": np.array([0.3, 0.1, 0.0, 0.1, 0.0, 0.05])}}


def texture(shape=IMAGE, seed=0):
    """A natural-like textured original: white noise plus smoothed noise, fixed seed."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(shape)
    f = np.fft.fftfreq(shape[0])[:, None] ** 2 + np.fft.fftfreq(shape[1])[None, :] ** 2
    smooth = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) * np.exp(-60 * f)))
    return 0.5 * white + 2.0 * smooth / smooth.std() + 1.0


def blurred(name, x, mode="valid"):
    return jdeconv.conv2d(x, PSF_MODELS[name](TRUTH[name], SHAPE), mode)


def relative_error(fit, truth):
    return max(float(np.max(np.abs(np.asarray(fit.params[k]) - np.asarray(v))
                            / np.abs(np.asarray(v)))) for k, v in truth.items())


# Each model compiles its own fit (~3 s): the Gaussians (whose fits other tests reuse) run by
# default, the other models under the slow marker.
@pytest.mark.parametrize("name", [
    n if n in ("gaussian", "elliptical_gaussian") else pytest.param(n, marks=pytest.mark.slow)
    for n in PSF_MODELS])
def test_clean_pair_recovers_the_parameters(name):
    x = texture()
    fit = fit_psf(x, blurred(name, x), name, SHAPE, init=INIT.get(name, "default"))
    assert bool(fit.converged), fit.message
    assert relative_error(fit, TRUTH[name]) < 1e-6, fit.summary()
    np.testing.assert_allclose(fit.kernel, PSF_MODELS[name](TRUTH[name], SHAPE), atol=1e-10)
    assert float(fit.residual_norm) < 1e-8 * float(jnp.linalg.norm(blurred(name, x)))
    assert fit.model == name and fit.param_names == PSF_MODELS[name].param_names


def test_same_mode_fits_the_valid_part():
    x = texture()
    y = np.array(blurred("gaussian", x, "same"))
    y[:4] = 1e3  # the borders the valid model does not explain are never used
    fit = fit_psf(x, y, "gaussian", SHAPE, mode="same", init="default")
    assert fit.mode == "same" and relative_error(fit, TRUTH["gaussian"]) < 1e-6


def test_starts_from_the_nonparametric_estimate():
    x = texture()
    y = blurred("elliptical_gaussian", x)
    fit = fit_psf(x, y, "elliptical_gaussian", SHAPE)  # init=None: moments of estimate_kernel
    assert bool(fit.converged) and relative_error(fit, TRUTH["elliptical_gaussian"]) < 1e-6


def _noisy_batch(draws, sigma):
    x = texture()
    y = blurred("gaussian", x)
    keys = jax.random.split(jax.random.PRNGKey(0), draws)
    noise = jax.vmap(lambda k: jax.random.normal(k, y.shape, y.dtype))(keys)
    return x, y[None] + sigma * noise


def test_standard_errors_are_calibrated_over_seeded_draws():
    # 40 noise draws of one pair, each fitted by the one compiled fit.
    draws, sigma = 40, 0.05
    x, ys = _noisy_batch(draws, sigma)
    fits = [fit_psf(x, y, "gaussian", SHAPE, init="default") for y in ys]
    fits = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *fits)
    assert bool(jnp.all(fits.converged))
    inside, spread = [], []
    for k, v in TRUTH["gaussian"].items():
        est, se = np.asarray(fits.params[k]), np.asarray(fits.stderr[k])
        inside.append(np.abs(est - v) <= 2 * se)
        spread.append(np.std(est, ddof=1) / np.median(se))
    coverage = np.mean(inside)
    assert coverage >= 0.85, coverage                     # ≈ 95 % expected
    assert np.all(np.abs(np.array(spread) - 1) < 0.35), spread  # empirical sd ≈ reported
    # The noise level and the fit statistic: ≈ 1 for the right model.
    np.testing.assert_allclose(np.median(np.asarray(fits.noise_sigma)), sigma, rtol=0.15)
    assert 0.85 < np.median(np.asarray(fits.fit_statistic)) < 1.15
    assert 0.85 < np.median(np.asarray(fits.chi2_dof)) < 1.3


def test_wrong_model_shows_in_the_fit_statistic():
    x = texture()
    y = jdeconv.conv2d(x, PSF_MODELS["line_motion"](TRUTH["line_motion"], SHAPE))
    y = y + 0.01 * jax.random.normal(jax.random.PRNGKey(1), y.shape, y.dtype)
    fit = fit_psf(x, y, "gaussian", SHAPE, init="default")
    assert float(fit.fit_statistic) > 3


def test_known_noise_sigma_scales_the_covariance():
    x, ys = _noisy_batch(1, 0.05)
    free = fit_psf(x, ys[0], "gaussian", SHAPE, init="default")
    known = fit_psf(x, ys[0], "gaussian", SHAPE, init="default", noise_sigma=0.1)
    np.testing.assert_allclose(known.params["sigma"], free.params["sigma"], rtol=1e-9)
    residual_sigma = float(free.residual_norm) / np.sqrt(free.dof)
    np.testing.assert_allclose(known.covariance, free.covariance * (0.1 / residual_sigma) ** 2,
                               rtol=1e-8)
    assert float(known.noise_sigma) == 0.1


def test_result_is_a_pytree_with_a_summary():
    x = texture()
    fit = fit_psf(x, blurred("gaussian", x), "gaussian", SHAPE, init="default")
    assert isinstance(fit, PSFFit) and fit.covariance.shape == (3, 3)
    assert fit.covariance_names == ("sigma", "dx", "dy")
    leaves = jax.tree_util.tree_leaves(fit)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, fit)
    assert doubled.model == "gaussian"
    assert float(doubled.params["sigma"]) == 2 * float(fit.params["sigma"])
    np.testing.assert_allclose(fit.params["sigma"], 1.3, rtol=1e-9)
    assert RESULTS(int(fit.result)) is RESULTS.successful and fit.message == "converged"
    assert fit.summary().startswith("model=gaussian sigma=1.3")
    assert fit.summary().endswith(f"iterations={int(fit.iterations)} converged=True")
    # A previous fit is a valid starting point.
    again = fit_psf(x, blurred("gaussian", x), "gaussian", SHAPE, init=fit)
    assert relative_error(again, TRUTH["gaussian"]) < 1e-6


def test_user_errors_are_clear():
    x = texture()
    y = blurred("gaussian", x)
    with pytest.raises(ValueError, match="unknown PSF model 'gausian'.*Did you mean 'gaussian'"):
        fit_psf(x, y, "gausian", SHAPE)
    with pytest.raises(TypeError, match="model must be a name"):
        fit_psf(x, y, 3, SHAPE)
    with pytest.raises(ValueError, match="y \\(blurred image\\) has shape .*mode 'same'"):
        fit_psf(x, y, "gaussian", SHAPE, mode="same")
    with pytest.raises(ValueError, match="init has key 'sigm'.*Did you mean 'sigma'"):
        fit_psf(x, y, "gaussian", SHAPE, init={"sigm": 1.0})
    with pytest.raises(ValueError, match="init\\['sigma'\\].*must be > 0"):
        fit_psf(x, y, "gaussian", SHAPE, init={"sigma": -1.0})
    with pytest.raises(ValueError, match="unknown init 'moments'"):
        fit_psf(x, y, "gaussian", SHAPE, init="moments")
    with pytest.raises(TypeError, match="init must be None"):
        fit_psf(x, y, "gaussian", SHAPE, init=1.0)
    with pytest.raises(ValueError, match="'coeffs'.*shape \\(6,\\)"):
        fit_psf(x, y, "zernike", SHAPE, init={"coeffs": np.zeros(3)})
    with pytest.raises(ValueError, match="noise_sigma.*> 0"):
        fit_psf(x, y, "gaussian", SHAPE, noise_sigma=-1.0)
    with pytest.raises(ValueError, match="unknown mode"):
        fit_psf(x, y, "gaussian", SHAPE, mode="vaild")
    with pytest.raises(ValueError, match="larger than the image"):
        fit_psf(x[:5, :5], y[:1, :1], "gaussian", SHAPE)
    with pytest.raises(ValueError, match="not more than the 3 parameters"):
        fit_psf(x[:11, :11], y[:1, :1], "gaussian", SHAPE)
    with pytest.raises(TypeError, match="max_iters must be an integer"):
        fit_psf(x, y, "gaussian", SHAPE, max_iters=1.5)
    assert isinstance(PSF_MODELS["gaussian"], ParametricPSF)

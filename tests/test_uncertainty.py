"""Per-tap standard errors, conditioning report, calibration targets (jdeconv._uncertainty)."""

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from jdeconv._gram import normal_equations
from jdeconv._implicit import solve_qp_differentiable
from jdeconv._regularizers import laplacian
from jdeconv._uncertainty import (
    IdentifiabilityWarning,
    conditioning_report,
    face_standard_errors,
    kernel_standard_errors,
    make_target,
    residual_noise_sigma,
)

KS = (5, 5)
N = 25
DRAWS = 50


def _gaussian(sigma=1.2):
    a = np.arange(5.0) - 2
    h = np.exp(-(a[:, None] ** 2 + a[None, :] ** 2) / (2 * sigma**2))
    return h / h.sum()


@partial(jax.jit, static_argnames="prior")
def _draws(x, y_clean, noise, reg, prior):
    """Estimates for each noisy copy ``y_clean + noise[i]`` (vmapped: one compile)."""
    gram = normal_equations(x, y_clean, KS).gram + reg

    def one(e):
        yn = y_clean + e
        rhs = normal_equations(x, yn, KS).rhs
        res = solve_qp_differentiable(gram, rhs, prior=prior)
        resid = yn - jax.scipy.signal.convolve2d(x, res.solution.reshape(KS), mode="valid",
                                                 precision=jax.lax.Precision.HIGHEST)
        rss = jnp.sum(resid**2)
        return res.solution, res.active_set, res.converged, rss

    return jax.vmap(one)(noise)


# (prior, relative smoothness weight): unregularised simplex, and a nonneg estimate
# regularised enough that sigma^2 K_e (the unregularised formula) is visibly wrong
SETTINGS = [("simplex", 0.0), ("nonneg", 0.3)]


@pytest.mark.parametrize(("prior", "weight"), SETTINGS)
def test_standard_errors_are_calibrated(prior, weight):
    sigma = 0.02
    x = make_target((64, 64), kind="noise", seed=3).image
    y = scipy.signal.convolve2d(x, _gaussian(), "valid")
    ne = normal_equations(x, y, KS)
    reg = weight * float(jnp.trace(ne.gram)) / N * jnp.asarray(laplacian(KS))
    noise = sigma * np.random.default_rng(0).standard_normal((DRAWS, *y.shape))
    sols, active, converged, rss = _draws(x, y, noise, reg, prior)
    assert bool(jnp.all(converged))
    # the premise of the formula: one active set for every draw (here: every tap free)
    assert not bool(jnp.any(active))

    eq = prior == "simplex"
    unc = kernel_standard_errors(ne.gram + reg, active[0], sigma, eq=eq, gram_data=ne.gram)
    se = np.asarray(unc.standard_errors)
    empirical = np.std(np.asarray(sols), axis=0, ddof=1)
    ratio = empirical / se
    assert np.mean(np.abs(ratio - 1) <= 0.2) >= 0.9, np.round(ratio, 2)
    # the noise level from the residuals (effective degrees of freedom tr(K_e G))
    sig = jax.vmap(lambda r: residual_noise_sigma(r, y.size, ne.gram + reg, active[0], eq=eq,
                                                  gram_data=ne.gram))(rss)
    if weight == 0:
        assert abs(float(jnp.mean(sig)) / sigma - 1) < 0.01
    else:  # the residual also holds the misfit of the regularisation bias
        assert float(jnp.min(sig)) > sigma
    np.testing.assert_allclose(se, np.sqrt(np.diag(unc.covariance)))
    if eq:  # the estimates sum to one exactly: the covariance has 1 in its null space
        np.testing.assert_allclose(unc.covariance @ np.ones(N), 0, atol=1e-12 * se.max() ** 2)
    else:  # the regularised formula matters: the unregularised one would be rejected
        naive = np.asarray(kernel_standard_errors(ne.gram + reg, active[0], sigma, eq=eq)
                           .standard_errors)
        assert np.mean(np.abs(empirical / naive - 1) <= 0.2) < 0.5


def test_covariance_is_the_jacobian_squared():
    """sigma^2 K_e G K_e = sigma^2 J G J^T with J = dh/db from implicit differentiation.

    (``b = A^T y`` has covariance ``sigma^2 G``.)  With taps on the bound and regularisation.
    """
    rng = np.random.default_rng(4)
    x = make_target((64, 64), kind="noise", seed=3).image
    h_true = _gaussian()
    h_true[[0, 0, -1, -1], [0, -1, 0, -1]] = -0.01  # negative corners: taps on the bound
    y = scipy.signal.convolve2d(x, h_true, "valid") + 0.02 * rng.standard_normal((60, 60))
    ne = normal_equations(x, y, KS)
    reg = 0.05 * float(jnp.trace(ne.gram)) / N * jnp.eye(N)

    def h_of_b(rhs):
        return solve_qp_differentiable(ne.gram + reg, rhs, prior="simplex").solution

    res = solve_qp_differentiable(ne.gram + reg, ne.rhs, prior="simplex")
    active = np.asarray(res.active_set)
    assert 1 <= active.sum() < N
    jac = np.asarray(jax.jacrev(h_of_b)(ne.rhs))
    unc = kernel_standard_errors(ne.gram + reg, res.active_set, 0.3, eq=True, gram_data=ne.gram)
    np.testing.assert_allclose(unc.covariance, 0.09 * jac @ np.asarray(ne.gram) @ jac.T,
                               rtol=1e-9, atol=1e-12 * float(jnp.abs(unc.covariance).max()))
    se = np.asarray(unc.standard_errors)
    assert np.all(se[active] == 0) and np.all(se[~active] > 0)
    np.testing.assert_array_equal(unc.free, ~active)


def test_standard_errors_scale_with_sigma_and_refuse_bad_shapes():
    g = jnp.diag(jnp.arange(1.0, 5.0))
    act = jnp.zeros(4, bool)
    se1 = kernel_standard_errors(g, act, 1.0, eq=False).standard_errors
    se2 = kernel_standard_errors(g, act, 2.0, eq=False).standard_errors
    np.testing.assert_allclose(se1, 1 / np.sqrt(np.arange(1.0, 5.0)))
    np.testing.assert_allclose(se2, 2 * se1)
    with pytest.raises(ValueError, match="shapes"):
        kernel_standard_errors(g, jnp.zeros(3, bool), 1.0, eq=False)


@pytest.mark.parametrize("eq", [False, True])
def test_host_standard_errors_equal_the_jitted_ones(eq):
    """face_standard_errors (NumPy, for the border check) is kernel_standard_errors' formula."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((60, N))
    g = a.T @ a
    g_reg = g + 0.3 * np.trace(g) / N * laplacian(KS)
    for free in (np.ones(N, bool), rng.random(N) < 0.6):
        ref = kernel_standard_errors(g_reg, ~free, 0.05, eq=eq, gram_data=g).standard_errors
        np.testing.assert_allclose(face_standard_errors(g, g_reg, free, 0.05, eq=eq), ref,
                                   rtol=1e-9, atol=1e-15)
    assert not face_standard_errors(g, g, np.zeros(N, bool), 1.0, eq=eq).any()


# ----------------------------------------------------------------------------
# Conditioning report
# ----------------------------------------------------------------------------


def test_white_noise_target_is_well_conditioned():
    report = make_target((64, 64), kind="binary", seed=0, kernel_shape=KS).conditioning
    assert report.identifiable
    assert report.effective_rank == N and report.condition_number < 1e3
    assert report.excitation.min() > 1e-3 and not report.unexcited.any()
    np.testing.assert_allclose(report.eigenvalues, np.sort(report.eigenvalues)[::-1])
    assert report.frequencies.shape == (5, 5, 2) and report.kernel_shape == KS
    assert "identifiable" in report.message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conditioning_report(make_target(64).image, KS, warn=True)  # no warning


@pytest.mark.parametrize("kind", ["nearly-constant", "smooth"])
def test_smooth_original_reports_unexcited_frequencies(kind):
    rng = np.random.default_rng(1)
    u = np.arange(64.0)
    if kind == "nearly-constant":
        x = 0.5 + 1e-4 * rng.random((64, 64))
    else:  # a broad Gaussian blob
        x = np.exp(-((u[:, None] - 30) ** 2 + (u[None, :] - 34) ** 2) / (2 * 12.0**2))
    with pytest.warns(IdentifiabilityWarning, match="not identifiable") as record:
        report = conditioning_report(x, KS, warn=True)
    assert not report.identifiable
    assert report.unexcited.sum() >= 16 and not report.unexcited[0, 0]  # DC is excited
    assert report.excitation[0, 0] == 1.0
    assert "does not excite" in str(record[0].message)
    assert report.condition_number > 1e6


def test_noise_level_lowers_the_effective_rank():
    x = make_target((64, 64), kind="noise", seed=2).image
    quiet = conditioning_report(x, KS, noise_sigma=1e-4)
    loud = conditioning_report(x, KS, noise_sigma=5.0)
    assert quiet.effective_rank == N and quiet.identifiable
    lam = loud.eigenvalues
    assert loud.rank_threshold == pytest.approx((5.0 / (0.1 / N)) ** 2)
    assert loud.effective_rank == int(np.sum(lam > loud.rank_threshold)) < N
    assert not loud.identifiable


def test_conditioning_modes_and_validation():
    x = make_target((40, 40), kind="noise", seed=5).image
    same = conditioning_report(x, (3, 3), "same")
    valid = conditioning_report(x, (3, 3), "valid")
    np.testing.assert_allclose(same.eigenvalues, valid.eigenvalues)
    full = conditioning_report(x, (3, 4), "full")
    assert full.kernel_shape == (3, 4) and full.excitation.shape == (3, 4)
    with pytest.raises(ValueError, match="larger than the image"):
        conditioning_report(x, (41, 3), "valid")
    with pytest.raises(ValueError, match="mode"):
        conditioning_report(x, 3, "vaild")


def test_make_target():
    a = make_target((20, 30), kind="noise", seed=7)
    b = make_target((20, 30), kind="noise", seed=7)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.conditioning is None and a.image.shape == (20, 30)
    assert 0 <= a.image.min() and a.image.max() <= 1 and len(np.unique(a.image)) > 100
    binary = make_target(16, seed=7).image
    assert set(np.unique(binary).tolist()) == {0.0, 1.0}
    assert 0.3 < binary.mean() < 0.7
    with pytest.raises(ValueError, match="binary"):
        make_target(16, kind="binray")
    with pytest.raises(ValueError, match="seed"):
        make_target(16, seed=-1)

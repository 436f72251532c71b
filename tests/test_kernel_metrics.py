"""Kernel metrics against known answers: Gaussian FWHM, MTF and MTF50, ellipticity, delta."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdeconv._kernel_metrics import (GAUSSIAN_FWHM_PER_SIGMA, ellipticity, fwhm, kernel_moments,
                                     mtf, mtf50)
from jdeconv._psf_models import airy_psf

SIDE = 21  # wide enough that Gaussians of σ <= 2.4 are not truncated
C = np.arange(SIDE) - (SIDE - 1) / 2


def gaussian(sigma, dx=0.0, dy=0.0):
    r2 = (C[None, :] - dx) ** 2 + (C[:, None] - dy) ** 2
    return jnp.asarray(np.exp(-r2 / (2 * sigma ** 2)))


def elliptical(major, minor, angle):
    x, y = C[None, :], C[:, None]
    a = x * np.cos(angle) + y * np.sin(angle)
    b = y * np.cos(angle) - x * np.sin(angle)
    return jnp.asarray(np.exp(-0.5 * (a ** 2 / major ** 2 + b ** 2 / minor ** 2)))


def delta():
    return jnp.zeros((SIDE, SIDE)).at[SIDE // 2, SIDE // 2].set(1.0)


def test_gaussian_fwhm_is_2_3548_sigma():
    assert abs(GAUSSIAN_FWHM_PER_SIGMA - 2.3548200450309493) < 1e-15
    for method, rtol in (("profile", 1e-6), ("moments", 1e-5)):
        w = fwhm(gaussian(2.0, dx=0.3, dy=-0.4), method=method)
        np.testing.assert_allclose([w.major, w.minor, w.mean], 2.3548200450309493 * 2.0,
                                   rtol=rtol, err_msg=method)


def test_elliptical_gaussian_fwhm_ellipticity_and_angle():
    h = elliptical(2.4, 1.2, 0.4)
    w = fwhm(h)
    np.testing.assert_allclose([w.major, w.minor], [2.3548200450309493 * 2.4,
                                                    2.3548200450309493 * 1.2], rtol=2e-3)
    np.testing.assert_allclose(float(w.angle), 0.4, atol=1e-4)
    e = ellipticity(h)
    np.testing.assert_allclose(float(e.ellipticity), (2.4 - 1.2) / (2.4 + 1.2), rtol=2e-3)
    np.testing.assert_allclose(float(e.axis_ratio), 0.5, rtol=2e-3)
    np.testing.assert_allclose(float(e.flattening), 1 - float(e.axis_ratio), rtol=1e-12)
    # A round kernel: ellipticity 0, angle 0 by convention.
    e0 = ellipticity(gaussian(1.5))
    assert abs(float(e0.ellipticity)) < 1e-12 and float(e0.angle) == 0.0


def test_moments_of_a_shifted_gaussian():
    m = kernel_moments(gaussian(1.5, dx=0.7, dy=-0.4))
    np.testing.assert_allclose([m.dx, m.dy], [0.7, -0.4], atol=1e-9)
    np.testing.assert_allclose([m.mu_xx, m.mu_yy], 1.5 ** 2, rtol=1e-6)
    assert abs(float(m.mu_xy)) < 1e-12
    np.testing.assert_allclose(float(m.total), 2 * math.pi * 1.5 ** 2, rtol=1e-6)


def test_gaussian_mtf_and_mtf50_are_analytic():
    sigma = 2.0
    m = mtf(gaussian(sigma))
    analytic = np.exp(-2 * math.pi ** 2 * sigma ** 2 * np.asarray(m.frequency) ** 2)
    np.testing.assert_allclose(m.radial, analytic, atol=1e-6)
    fy, fx = np.meshgrid(m.grid_frequency, m.grid_frequency, indexing="ij")
    analytic_2d = np.exp(-2 * math.pi ** 2 * sigma ** 2 * (fx ** 2 + fy ** 2))
    np.testing.assert_allclose(m.grid, analytic_2d, atol=1e-6)
    assert float(m.frequency[0]) == 0 and float(m.frequency[-1]) == 0.5
    assert abs(float(m.radial[0]) - 1) < 1e-14
    expected = math.sqrt(math.log(2) / 2) / (math.pi * sigma)
    np.testing.assert_allclose(float(mtf50(gaussian(sigma))), expected, rtol=1e-6)
    # Differentiable: d MTF50 / dσ = −0.18739 / σ² through the bisection.
    slope = jax.jit(jax.grad(lambda s: mtf50(jnp.exp(-(C[None, :] ** 2 + C[:, None] ** 2)
                                                     / (2 * s ** 2)))))(sigma)
    np.testing.assert_allclose(float(slope), -expected / sigma, rtol=1e-5)


def test_delta_kernel_passes_every_frequency():
    m = mtf(delta())
    np.testing.assert_allclose(m.radial, 1.0, atol=1e-14)
    np.testing.assert_allclose(m.grid, 1.0, atol=1e-14)
    assert bool(jnp.isnan(mtf50(delta())))    # never falls to 0.5
    # A shift does not change the MTF.
    np.testing.assert_allclose(mtf(jnp.roll(gaussian(1.0), 3, axis=1)).radial,
                               mtf(gaussian(1.0)).radial, atol=1e-12)


def test_airy_profile_fwhm_and_moment_width():
    h = airy_psf({"radius": 4.0, "dx": 0.0, "dy": 0.0}, (SIDE, SIDE))
    profile = fwhm(h)
    # FWHM of the Airy disk: 1.02899 λF with the first dark ring at 1.21967 λF.
    np.testing.assert_allclose(float(profile.major), 4.0 * 1.0289939 / 1.2196699, rtol=2e-3)
    # The moment width is that of a Gaussian: the Airy wings make it too large.
    assert float(fwhm(h, method="moments").major) > 1.1 * float(profile.major)


def test_vmap_jit_and_grad():
    stack = jnp.stack([gaussian(1.2), elliptical(2.4, 1.2, 0.4)])
    widths = jax.vmap(fwhm)(stack)
    shapes = jax.vmap(ellipticity)(stack)
    curves = jax.vmap(mtf)(stack)
    for i in range(2):
        np.testing.assert_allclose(widths.major[i], fwhm(stack[i]).major, rtol=1e-12)
        np.testing.assert_allclose(shapes.ellipticity[i], ellipticity(stack[i]).ellipticity,
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(curves.radial[i], mtf(stack[i]).radial, rtol=1e-12)
    # The profile FWHM is differentiable (implicit gradient of the crossings).
    slope = jax.jit(jax.grad(lambda s: fwhm(jnp.exp(-(C[None, :] ** 2 + C[:, None] ** 2)
                                                    / (2 * s ** 2))).major))(2.0)
    np.testing.assert_allclose(float(slope), 2.3548200450309493, rtol=1e-5)


def test_a_profile_that_never_halves_has_no_fwhm():
    flat = jnp.ones((9, 9))
    assert bool(jnp.isnan(fwhm(flat).major))
    np.testing.assert_allclose(float(fwhm(flat, method="moments").major),
                               2.3548200450309493 * math.sqrt(20 / 3), rtol=1e-12)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2-D.*jax.vmap"):
        fwhm(jnp.ones((2, 5, 5)))
    with pytest.raises(ValueError, match="unknown FWHM method 'moment'.*Did you mean 'moments'"):
        fwhm(gaussian(1.0), method="moment")
    with pytest.raises(ValueError, match="n_freq is 1"):
        mtf(gaussian(1.0), n_freq=1)
    with pytest.raises(TypeError, match="kernel must be real-valued"):
        ellipticity(jnp.ones((3, 3), dtype=complex))
    with pytest.raises(ValueError, match="NaN"):
        kernel_moments(jnp.full((3, 3), jnp.nan))

"""Parametric PSF models: simplex, centring, gradients, known shapes, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jdeconv import _names
from jdeconv._kernel_metrics import kernel_moments
from jdeconv._psf_models import (J1_ZERO, PSF_MODELS, airy_psf, defocus_psf,
                                 elliptical_gaussian_psf, gaussian_psf, line_motion_psf,
                                 zernike_model, zernike_psf)

# Non-default, well-identified parameters for every model, centred (zero offsets).
# The Zernike point has no coma, so it is centrosymmetric.
CENTRED = {
    "gaussian": {"sigma": 1.3},
    "elliptical_gaussian": {"sigma_major": 2.0, "sigma_minor": 1.1, "angle": 0.5},
    "moffat": {"alpha": 2.0, "beta": 2.5},
    "airy": {"radius": 3.0},
    "defocus": {"radius": 2.7},
    "line_motion": {"length": 5.3, "angle": 0.6},
    "zernike": {"coeffs": np.array([0.4, 0.2, -0.1, 0.0, 0.0, 0.1]), "radius": 3.0},
}


def params_of(name, dx=0.0, dy=0.0, **extra):
    p = {k: jnp.asarray(v) for k, v in CENTRED[name].items()}
    p.update(dx=jnp.asarray(dx), dy=jnp.asarray(dy))
    p.update({k: jnp.asarray(v) for k, v in extra.items()})
    return p


def test_registry_matches_names():
    assert tuple(PSF_MODELS) == _names.PSF_MODEL_NAMES
    for name, model in PSF_MODELS.items():
        assert model.name == name
        assert set(model.positive) <= set(model.param_names)
        assert tuple(b[0] for b in model.bounds) == model.param_names
        assert set(CENTRED[name]) | {"dx", "dy"} == set(model.param_names)


@pytest.mark.parametrize("shape", [(11, 11), (10, 9)])
@pytest.mark.parametrize("name", list(PSF_MODELS))
def test_simplex_and_centred(name, shape):
    model = PSF_MODELS[name]
    h = np.asarray(model(params_of(name), shape))
    assert h.shape == shape
    assert np.all(np.isfinite(h)) and h.min() >= 0
    assert abs(h.sum() - 1) < 1e-12
    m = kernel_moments(h)
    # Centred on ((k-1)/2, (l-1)/2), fractional for even sizes (all these points are
    # centrosymmetric, so the centroid is exactly the centre).
    assert abs(float(m.dx)) < 1e-12 and abs(float(m.dy)) < 1e-12
    # The default guess gives a valid kernel too.
    h0 = np.asarray(model(model.init(shape), shape))
    assert np.all(np.isfinite(h0)) and h0.min() >= 0 and abs(h0.sum() - 1) < 1e-12


def test_offsets_move_the_centre():
    # A Gaussian well inside an 11×11 support: centroid = (dx, dy) to truncation accuracy.
    h = gaussian_psf({"sigma": 1.0, "dx": 0.7, "dy": -0.4}, (11, 11))
    m = kernel_moments(h)
    np.testing.assert_allclose([float(m.dx), float(m.dy)], [0.7, -0.4], atol=1e-5)
    # The peak of a moved model is the tap nearest to its centre.
    h = defocus_psf({"radius": 1.2, "dx": 2.0, "dy": -1.0}, (9, 9))
    assert np.unravel_index(int(np.argmax(h)), (9, 9)) == (3, 6)


@pytest.mark.parametrize("name", list(PSF_MODELS))
def test_gradients_finite_and_match_finite_differences(name):
    model = PSF_MODELS[name]
    shape = (11, 11)
    p = params_of(name, dx=0.3, dy=-0.2)
    weights = jnp.asarray(np.random.default_rng(1).standard_normal(shape))

    def f(params):
        return jnp.sum(weights * model(params, shape))

    grad = jax.grad(f)(p)
    flat = np.concatenate([np.ravel(np.asarray(grad[k])) for k in model.param_names])
    assert np.all(np.isfinite(flat)) and np.any(flat != 0)
    direction = {k: jnp.asarray(np.random.default_rng(2).standard_normal(np.shape(v)))
                 for k, v in p.items()}
    eps = 1e-5
    plus = f({k: p[k] + eps * direction[k] for k in p})
    minus = f({k: p[k] - eps * direction[k] for k in p})
    fd = (plus - minus) / (2 * eps)
    analytic = sum(jnp.sum(grad[k] * direction[k]) for k in p)
    assert abs(float(analytic - fd)) <= 1e-6 * max(1.0, abs(float(fd)))


def test_jit_and_vmap_agree_with_a_loop():
    sigmas = jnp.array([0.8, 1.3, 2.1])
    batch = {"sigma": sigmas, "dx": jnp.zeros(3), "dy": jnp.array([0.0, 0.5, -0.5])}
    stacked = jax.jit(jax.vmap(lambda p: gaussian_psf(p, (9, 9))))(batch)
    for i in range(3):
        one = gaussian_psf({k: v[i] for k, v in batch.items()}, (9, 9))
        np.testing.assert_allclose(stacked[i], one, rtol=1e-12, atol=1e-15)


def test_gaussian_values():
    h = gaussian_psf({"sigma": 1.5, "dx": 0.0, "dy": 0.0}, (9, 9))
    c = np.arange(9) - 4.0
    g = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * 1.5 ** 2))
    np.testing.assert_allclose(h, g / g.sum(), rtol=1e-12)


def test_elliptical_gaussian_axes():
    p = {"sigma_major": 2.0, "sigma_minor": 1.0, "angle": math.pi / 2, "dx": 0.0, "dy": 0.0}
    h = np.asarray(elliptical_gaussian_psf(p, (11, 11)))
    # Major axis along y (rows) at angle π/2: the kernel is the transpose of angle 0.
    h0 = np.asarray(elliptical_gaussian_psf({**p, "angle": 0.0}, (11, 11)))
    np.testing.assert_allclose(h, h0.T, atol=1e-15)
    # Canonical form: swapping the axes and turning by π/2 gives the same kernel.
    model = PSF_MODELS["elliptical_gaussian"]
    swapped = {**p, "sigma_major": 1.0, "sigma_minor": 2.0, "angle": 0.0}
    canon = model.canonicalize(swapped)
    assert float(canon["sigma_major"]) == 2.0 and float(canon["sigma_minor"]) == 1.0
    np.testing.assert_allclose(model(canon, (11, 11)), model(swapped, (11, 11)), atol=1e-15)


def test_airy_matches_scipy_bessel():
    radius = 2.5
    h = np.asarray(airy_psf({"radius": radius, "dx": 0.4, "dy": 0.0}, (11, 11)))
    c = np.arange(11) - 5.0
    r = np.hypot(c[None, :] - 0.4, c[:, None])
    z = J1_ZERO * r / radius
    ref = (2 * scipy.special.j1(z) / z) ** 2
    np.testing.assert_allclose(h, ref / ref.sum(), rtol=1e-9, atol=1e-15)
    # Far in the wings, where the asymptotic series takes over (z > 16).
    far = np.asarray(airy_psf({"radius": 0.9, "dx": 0.0, "dy": 0.0}, (11, 11)))
    r = np.hypot(c[None, :], c[:, None])
    z = np.where(r > 0, J1_ZERO * r / 0.9, 1.0)
    ref = np.where(r > 0, (2 * scipy.special.j1(z) / z) ** 2, 1.0)
    np.testing.assert_allclose(far, ref / ref.sum(), rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-11), (np.float32, 1e-5)])
def test_jinc_is_finite_and_accurate_in_both_precisions(dtype, atol):
    # both series and the switch between them, z from 0 to 60 (float32 once overflowed: NaN)
    from jdeconv._psf_models import _jinc_of_r2

    z = np.linspace(0.0, 60.0, 6001)
    got = np.asarray(_jinc_of_r2(jnp.asarray(z * z, dtype), jnp.asarray(1.0, dtype)))
    ref = np.where(z > 0, 2 * scipy.special.j1(z) / np.where(z > 0, z, 1), 1.0)
    assert got.dtype == dtype and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)
    h = airy_psf({"radius": jnp.asarray(2.5, dtype), "dx": 0.4, "dy": 0.0}, (11, 11))
    assert np.isfinite(np.asarray(h)).all()


def test_zernike_without_aberrations_is_airy():
    airy = airy_psf({"radius": 3.0, "dx": 0.3, "dy": -0.2}, (11, 11))
    flat = zernike_psf({"coeffs": jnp.zeros(6), "radius": 3.0, "dx": 0.3, "dy": -0.2},
                       (11, 11))
    assert float(jnp.abs(flat - airy).max()) < 1e-3 * float(airy.max())
    # Defocus spreads the light: the peak falls (Strehl ratio < 1).
    defocused = zernike_psf({"coeffs": jnp.array([0.6, 0, 0, 0, 0, 0.0]), "radius": 3.0,
                             "dx": 0.0, "dy": 0.0}, (11, 11))
    assert float(defocused.max()) < 0.8 * float(flat.max())
    # Coma moves the centroid along its axis (Z8: x), not across it.
    coma = zernike_psf({"coeffs": jnp.array([0, 0, 0, 0, 0.5, 0.0]), "radius": 3.0,
                        "dx": 0.0, "dy": 0.0}, (11, 11))
    m = kernel_moments(coma)
    assert abs(float(m.dx)) > 0.05 and abs(float(m.dy)) < 1e-12


def test_zernike_pupil_sampling_converges():
    p = {"coeffs": jnp.array([0.3, 0.1, 0.0, 0.1, 0.0, 0.1]), "radius": 2.5, "dx": 0.0,
         "dy": 0.0}
    coarse = zernike_psf(p, (9, 9), n_pupil=32)
    fine = zernike_model(128)(p, (9, 9))
    assert float(jnp.abs(coarse - fine).max()) < 2e-3 * float(fine.max())


def test_defocus_and_line_motion_shapes():
    disk = np.asarray(defocus_psf({"radius": 3.0, "dx": 0.0, "dy": 0.0}, (9, 9)))
    assert abs(disk[4, 7] / disk[4, 4] - 0.5) < 1e-12       # rim: half weight
    np.testing.assert_allclose(disk[4, 5] / disk[4, 4], 1, atol=1e-6)  # flat inside
    assert disk[4, 5] == disk[3, 4]
    # The kernel grows continuously with the radius (anti-aliased rim).
    a = defocus_psf({"radius": 2.5, "dx": 0.0, "dy": 0.0}, (9, 9))
    b = defocus_psf({"radius": 2.5 + 1e-6, "dx": 0.0, "dy": 0.0}, (9, 9))
    assert 0 < float(jnp.abs(a - b).max()) < 1e-5
    line = np.asarray(line_motion_psf({"length": 6.0, "angle": math.pi / 2, "dx": 0.0,
                                       "dy": 0.0}, (9, 9)))
    assert line[:, 4].sum() > 0.9                            # vertical: the middle column
    np.testing.assert_allclose(line, line[::-1], atol=1e-15)  # symmetric along it
    # An angle and the opposite direction are the same blur; canonical angles wrap.
    p = {"length": 4.0, "angle": 0.3, "dx": 0.0, "dy": 0.0}
    turned = {**p, "angle": 0.3 + math.pi}
    np.testing.assert_allclose(line_motion_psf(p, 9), line_motion_psf(turned, 9), atol=1e-14)
    canon = PSF_MODELS["line_motion"].canonicalize(turned)
    assert abs(float(canon["angle"]) - 0.3) < 1e-12


def test_moments_init_follows_the_estimate():
    h = gaussian_psf({"sigma": 1.6, "dx": 0.5, "dy": -0.3}, (11, 11))
    m = kernel_moments(h)
    for name, model in PSF_MODELS.items():
        p = model.init((11, 11), m)
        # (the moments of the truncated kernel are slightly biased towards the centre)
        assert abs(float(p["dx"]) - 0.5) < 1e-2 and abs(float(p["dy"]) + 0.3) < 1e-2, name
        assert all(float(jnp.min(p[k])) > 0 for k in model.positive), name
    assert abs(float(PSF_MODELS["gaussian"].init((11, 11), m)["sigma"]) - 1.6) < 1e-2


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="no parameter 'sigmaa'.*Did you mean 'sigma'"):
        gaussian_psf({"sigmaa": 1.0, "dx": 0.0, "dy": 0.0}, 9)
    with pytest.raises(ValueError, match="needs parameter.*'dy'"):
        gaussian_psf({"sigma": 1.0, "dx": 0.0}, 9)
    with pytest.raises(ValueError, match="'coeffs'.*shape \\(6,\\)"):
        zernike_psf({"coeffs": jnp.zeros(4), "radius": 2.0, "dx": 0.0, "dy": 0.0}, 9)
    with pytest.raises(ValueError, match="'sigma'.*must be a scalar"):
        gaussian_psf({"sigma": jnp.ones(2), "dx": 0.0, "dy": 0.0}, 9)
    with pytest.raises(TypeError, match="must be a dict"):
        gaussian_psf(1.5, 9)
    with pytest.raises(TypeError, match="must be real"):
        gaussian_psf({"sigma": 1j, "dx": 0.0, "dy": 0.0}, 9)
    with pytest.raises(ValueError, match="kernel_shape"):
        gaussian_psf({"sigma": 1.0, "dx": 0.0, "dy": 0.0}, (9, 0))

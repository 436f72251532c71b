"""estimate_noise: accuracy on blurred natural images, jit/vmap, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdeconv
from jdeconv import estimate_noise


@pytest.fixture(scope="module")
def blurred():
    """Blurred natural images (valid part): two photographs, a Gaussian and a disk blur."""
    out = {}
    for name in ("camera", "coffee"):
        x = jdeconv.data.natural_image(name, shape=128)
        for kname, h in (("gauss", jdeconv.data.gaussian_kernel(9, 1.5)),
                         ("disk", jdeconv.data.disk_kernel(11, 4.0))):
            out[name, kname] = np.asarray(jdeconv.conv2d(x, h))
    return out


@pytest.mark.parametrize("sigma", [0.002, 0.005, 0.01, 0.02])
def test_within_10_percent(blurred, sigma):
    for key, y in blurred.items():
        noisy = jdeconv.data.add_gaussian_noise(y, sigma, seed=3)
        est = float(estimate_noise(noisy))
        assert abs(est / sigma - 1) < 0.10, (key, sigma, est)


@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.02])
def test_within_10_percent_8bit(blurred, sigma):
    # 8-bit quantisation adds 1/(255 sqrt 12) ~ 0.0011 in quadrature: < 2.5 % at 0.005.
    for key, y in blurred.items():
        noisy = jdeconv.data.quantize(jdeconv.data.add_gaussian_noise(y, sigma, seed=4), 8)
        est = float(estimate_noise(noisy))
        assert abs(est / sigma - 1) < 0.10, (key, sigma, est)


def test_fractal_image():
    x = jdeconv.data.fractal_image(128, seed=2)
    y = np.asarray(jdeconv.conv2d(x, jdeconv.data.gaussian_kernel(9, 1.5)))
    est = float(estimate_noise(jdeconv.data.add_gaussian_noise(y, 0.005, seed=1)))
    assert abs(est / 0.005 - 1) < 0.10


def test_clean_blurred_image_is_small(blurred):
    assert float(estimate_noise(blurred["camera", "gauss"])) < 1e-3


def test_scale_equivariant(blurred):
    y = jdeconv.data.add_gaussian_noise(blurred["coffee", "disk"], 0.01, seed=0)
    a, b = float(estimate_noise(y)), float(estimate_noise(255.0 * y + 7.0))
    assert b == pytest.approx(255.0 * a, rel=1e-8)


def test_jit_vmap_match_loop(blurred):
    ys = jnp.stack([jnp.asarray(jdeconv.data.add_gaussian_noise(blurred["camera", "gauss"], s, seed=1))
                    for s in (0.002, 0.01, 0.02)])
    loop = np.array([float(estimate_noise(y)) for y in ys])
    np.testing.assert_allclose(np.asarray(jax.vmap(estimate_noise)(ys)), loop, rtol=1e-10)
    np.testing.assert_allclose(float(jax.jit(estimate_noise)(ys[1])), loop[1], rtol=1e-10)


def test_float32(blurred):
    y = jdeconv.data.add_gaussian_noise(blurred["camera", "gauss"], 0.01, seed=5)
    est = estimate_noise(jnp.asarray(y, jnp.float32))
    assert est.dtype == jnp.float32
    assert abs(float(est) / 0.01 - 1) < 0.10


def test_constant_image_is_zero():
    assert float(estimate_noise(np.full((40, 40), 0.3))) == 0.0


@pytest.mark.parametrize("bad, err, match", [
    (np.zeros((4, 20, 20)), ValueError, "2-D"),
    (np.zeros((0, 20)), ValueError, "empty"),
    (np.full((30, 30), np.nan), ValueError, "NaN"),
    (np.zeros((10, 10)), ValueError, "too small"),
    (np.zeros((30, 30), complex), TypeError, "real"),
])
def test_bad_input(bad, err, match):
    with pytest.raises(err, match=match):
        estimate_noise(bad)


@pytest.mark.parametrize("patch_size, err", [(1, ValueError), (2.5, TypeError), (True, TypeError)])
def test_bad_patch_size(patch_size, err):
    with pytest.raises(err):
        estimate_noise(np.zeros((40, 40)), patch_size=patch_size)


def test_patch_moments_by_strips_equal_the_whole_image(blurred):
    """Large images sum their patch moments strip by strip: the same sum, less memory."""
    from jdeconv import _gram, _noise_level

    image = blurred["camera", "gauss"]
    assert image.shape[0] - 7 + 1 == 114  # patch rows: 3 strips of 37 and a remainder of 3
    y = jnp.asarray(image) - float(np.mean(image))
    whole = jax.jit(_gram._gram_impl, static_argnums=(1, 2, 3))(y, 7, 7, "valid")
    strips = jax.jit(_noise_level._patch_second_moments, static_argnums=(1, 2))(y, 7, 37)
    np.testing.assert_allclose(strips, whole, rtol=1e-10, atol=1e-10 * float(jnp.max(whole)))
    noisy = jnp.asarray(jdeconv.data.add_gaussian_noise(image, 0.01, seed=0))
    sigma = jax.jit(_noise_level.noise_sigma, static_argnums=(1, 2))
    assert float(sigma(noisy, 7, 37)) == pytest.approx(float(sigma(noisy, 7, None)), rel=1e-8)


@pytest.mark.parametrize("shape, r", [((20, 17), 7), ((9, 30), 3), ((5, 5), 1)])
def test_window_means_equal_their_definition(shape, r):
    from jdeconv._noise_level import _box_means

    y = np.random.default_rng(r).random(shape) + 5.0
    M, N = shape[0] - r + 1, shape[1] - r + 1
    expected = [[y[a:a + M, b:b + N].mean() for b in range(r)] for a in range(r)]
    np.testing.assert_allclose(np.asarray(_box_means(jnp.asarray(y), r)), expected, rtol=1e-13)

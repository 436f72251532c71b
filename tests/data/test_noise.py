"""Tests for jdeconv.data._noise (noise models and quantisation)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jdeconv.data import add_gaussian_noise, add_poisson_noise, quantize

# --- gaussian ---------------------------------------------------------------


def test_gaussian_noise_statistics_and_determinism():
    x = np.full((200, 200), 0.5)
    y = add_gaussian_noise(x, 0.05, seed=1)
    assert y.shape == x.shape and y.dtype == np.float64
    assert abs((y - x).std() - 0.05) < 0.002
    assert abs((y - x).mean()) < 0.002
    assert np.array_equal(y, add_gaussian_noise(x, 0.05, seed=1))
    assert not np.array_equal(y, add_gaussian_noise(x, 0.05, seed=2))
    assert np.array_equal(x, np.full((200, 200), 0.5))  # input untouched


def test_gaussian_noise_zero_sigma_and_int_input():
    x = np.arange(6).reshape(2, 3)
    y = add_gaussian_noise(x, 0.0, seed=0)
    assert y.dtype == np.float64 and np.array_equal(y, x)


def test_gaussian_noise_requires_seed():
    with pytest.raises(TypeError):
        add_gaussian_noise(np.zeros(3), 0.1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "image, sigma, seed, exc, text",
    [
        (np.zeros(3), -0.1, 0, ValueError, "sigma"),
        (np.zeros(3), np.nan, 0, ValueError, "sigma"),
        (np.zeros(3), "0.1", 0, TypeError, "sigma"),
        (np.zeros(3), 0.1, -1, ValueError, "seed"),
        (np.zeros(3), 0.1, 0.5, TypeError, "seed"),
        (np.array([0.0, np.nan]), 0.1, 0, ValueError, "NaN"),
        (np.array(["a"]), 0.1, 0, TypeError, "numeric"),
        (np.zeros((0, 3)), 0.1, 0, ValueError, "empty"),
    ],
)
def test_gaussian_noise_errors(image, sigma, seed, exc, text):
    with pytest.raises(exc, match=text):
        add_gaussian_noise(image, sigma, seed=seed)


# --- poisson ----------------------------------------------------------------


def test_poisson_noise_statistics():
    photons = 400.0
    x = np.full((200, 200), 0.25)
    y = add_poisson_noise(x, photons, seed=0)
    assert y.dtype == np.float64 and y.min() >= 0
    assert np.allclose(y * photons, np.round(y * photons))  # integer counts / photons
    assert abs(y.mean() - 0.25) < 0.003
    assert abs(y.var() - 0.25 / photons) < 0.1 * 0.25 / photons
    assert np.array_equal(y, add_poisson_noise(x, photons, seed=0))
    assert not np.array_equal(y, add_poisson_noise(x, photons, seed=1))


def test_poisson_noise_accepts_fft_rounding_below_zero():
    """A blur of a nonnegative image by FFT dips a few ulps below 0 there: zero intensity."""
    import jdeconv
    x = np.zeros((32, 32))
    x[8:12, 8:12] = 1.0
    y = np.array(jdeconv.conv2d(x, jdeconv.data.gaussian_kernel(9, 1.5), mode="same"))
    y[0, 0] = -3e-16  # what the FFT blur of a natural image gave (min -2.3e-16)
    out = add_poisson_noise(y, 100.0, seed=0)
    assert out[0, 0] == 0.0 and (out >= 0).all()
    with pytest.raises(ValueError, match="negative"):
        add_poisson_noise(np.where(y < 0, -1e-9, y), 100.0, seed=0)


def test_poisson_noise_zero_stays_zero():
    x = np.zeros((5, 5))
    x[2, 2] = 1.0
    y = add_poisson_noise(x, 1e6, seed=3)
    assert np.all(y[x == 0] == 0)
    assert abs(y[2, 2] - 1.0) < 0.01


@pytest.mark.parametrize(
    "image, photons, exc, text",
    [
        (np.array([-0.1, 0.5]), 100.0, ValueError, "negative"),
        (np.ones(3), 0.0, ValueError, "photons"),
        (np.ones(3), -5.0, ValueError, "photons"),
        (np.ones(3), np.inf, ValueError, "photons"),
        (np.ones(3), 1e16, ValueError, "fewer photons"),
        (np.array([np.inf]), 10.0, ValueError, "NaN or Inf"),
    ],
)
def test_poisson_noise_errors(image, photons, exc, text):
    with pytest.raises(exc, match=text):
        add_poisson_noise(image, photons, seed=0)


# --- quantize ---------------------------------------------------------------


def test_quantize_known_levels():
    assert np.array_equal(quantize(np.array([-0.2, 0.3, 0.5001, 0.8, 1.7]), 1), [0, 0, 1, 1, 1])
    q = quantize(np.linspace(0, 1, 1001), 2)
    assert np.array_equal(np.unique(q), [0, 1 / 3, 2 / 3, 1])
    q8 = quantize(np.random.default_rng(0).random(1000), 8)
    assert np.array_equal(q8 * 255, np.round(q8 * 255))
    grid16 = np.arange(65536) / 65535
    assert np.array_equal(quantize(grid16, 16), grid16)  # 16-bit levels are fixed points
    assert quantize(np.array([0.5]), 16)[0] == np.round(0.5 * 65535) / 65535


def test_quantize_shape_and_dtype():
    q = quantize(np.zeros((2, 3, 3), dtype=np.float32), 8)
    assert q.shape == (2, 3, 3) and q.dtype == np.float64


@settings(deadline=None, max_examples=25)
@given(
    x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=16), elements=st.floats(-0.5, 1.5)),
    bits=st.integers(1, 16),
)
def test_quantize_properties(x, bits):
    q = quantize(x, bits)
    levels = 2**bits - 1
    assert q.min() >= 0 and q.max() <= 1
    assert np.all(np.abs(q - np.clip(x, 0, 1)) <= 0.5 / levels + 1e-12)
    assert np.array_equal(quantize(q, bits), q)  # idempotent
    assert np.allclose(q * levels, np.round(q * levels), atol=1e-9)


@pytest.mark.parametrize(
    "bits, exc", [(0, ValueError), (17, ValueError), (-3, ValueError), (8.5, TypeError), (True, TypeError),
                  ("8", TypeError), (1e23, ValueError)]
)
def test_quantize_bad_bits(bits, exc):
    with pytest.raises(exc, match="bits"):
        quantize(np.zeros(3), bits)


def test_quantize_whole_float_bits_accepted():
    # Shared rule of jdeconv._validation.check_int: 8.0 (e.g. from YAML) means 8.
    x = np.linspace(0, 1, 7)
    assert np.array_equal(quantize(x, 8.0), quantize(x, 8))


def test_quantize_nan():
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([np.nan]), 8)

"""Tests for jdeconv.data._images (synthetic and bundled original images)."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jdeconv.data import (
    IMAGE_NAMES,
    NATURAL_IMAGE_NAMES,
    checkerboard_image,
    delta_image,
    fractal_image,
    make_image,
    natural_image,
    noise_target,
    question_square_image,
    shapes_image,
)


def _assert_unit_image(x: np.ndarray, shape: tuple[int, int]) -> None:
    assert isinstance(x, np.ndarray)
    assert x.shape == shape
    assert x.dtype == np.float64
    assert np.all(np.isfinite(x))
    assert x.min() >= 0.0 and x.max() <= 1.0


# --- question square --------------------------------------------------------


def test_question_square_known_pixels():
    x = question_square_image()
    _assert_unit_image(x, (200, 200))
    assert x.sum() == 900.0
    assert np.all(x[85:115, 85:115] == 1.0)
    # 1-based rows/cols 86..115 are white, 85 and 116 are black.
    for r, c in [(84, 100), (115, 100), (100, 84), (100, 115), (0, 0), (199, 199)]:
        assert x[r, c] == 0.0
    assert set(np.unique(x)) == {0.0, 1.0}


def test_question_square_returns_fresh_array():
    a = question_square_image()
    a[0, 0] = 5.0
    assert question_square_image()[0, 0] == 0.0


# --- shapes -----------------------------------------------------------------


def test_shapes_image_basic_properties():
    x = shapes_image((96, 128), seed=0)
    _assert_unit_image(x, (96, 128))
    margin = max(2, 96 // 10)
    assert np.all(x[:margin] == 0) and np.all(x[-margin:] == 0)
    assert np.all(x[:, :margin] == 0) and np.all(x[:, -margin:] == 0)
    fg = x[x > 0]
    assert 0.03 < fg.size / x.size < 0.9
    assert fg.min() >= 0.3
    assert len(np.unique(fg)) >= 4  # several intensities
    # Edges in both directions (texture for a well-posed estimate).
    assert np.count_nonzero(np.diff(x, axis=0)) > 50
    assert np.count_nonzero(np.diff(x, axis=1)) > 50


def test_shapes_image_default_and_int_shape():
    assert shapes_image().shape == (256, 256)
    assert shapes_image(32).shape == (32, 32)


def test_shapes_image_deterministic_and_seed_dependent():
    a = shapes_image((64, 64), seed=5)
    assert np.array_equal(a, shapes_image((64, 64), seed=5))
    assert not np.array_equal(a, shapes_image((64, 64), seed=6))


def test_shapes_image_custom_margin():
    x = shapes_image((64, 64), seed=1, margin=20, n_shapes=3)
    assert np.all(x[:20] == 0) and np.all(x[44:] == 0)
    assert x.max() > 0


@settings(deadline=None, max_examples=20)
@given(
    m=st.integers(16, 64),
    n=st.integers(16, 64),
    seed=st.integers(0, 2**31),
    n_shapes=st.integers(1, 8),
)
def test_shapes_image_property(m, n, seed, n_shapes):
    x = shapes_image((m, n), seed=seed, n_shapes=n_shapes)
    _assert_unit_image(x, (m, n))
    margin = max(2, min(m, n) // 10)
    assert np.all(x[:margin] == 0) and np.all(x[m - margin :] == 0)
    assert np.all(x[:, :margin] == 0) and np.all(x[:, n - margin :] == 0)
    assert x.max() >= 0.3


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        (dict(shape=(8, 64)), ValueError, ">= 16"),
        (dict(shape=(0, 5)), ValueError, "non-positive"),
        (dict(shape=(32, 32), n_shapes=0), ValueError, "n_shapes"),
        (dict(shape=(32, 32), n_shapes=2.5), TypeError, "n_shapes"),
        (dict(shape=(32, 32), margin=13), ValueError, "margin"),
        (dict(shape=(32, 32), margin=-1), ValueError, "margin"),
        (dict(shape=(32, 32), seed=-1), ValueError, "seed"),
        (dict(shape=(32, 32), seed=1.5), TypeError, "seed"),
        (dict(shape=(32, 32), seed=True), TypeError, "seed"),
    ],
)
def test_shapes_image_errors(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        shapes_image(**kwargs)


@pytest.mark.parametrize(
    "shape, exc, text",
    [
        ((0, 5), ValueError, r"\(0, 5\) has a non-positive size; give positive integers"),
        (-3, ValueError, "non-positive"),
        ((4,), ValueError, "2 integers|two positive integers"),
        ((4, 5, 6), ValueError, "two positive integers"),
        ((4.0, 5), TypeError, "integers"),
        ("44", TypeError, "int or a pair"),
        (None, TypeError, "int or a pair"),
        (2.5, TypeError, "int or a pair"),
    ],
)
def test_bad_shapes(shape, exc, text):
    with pytest.raises(exc, match=text):
        checkerboard_image(shape)


def test_numpy_int_shapes_accepted():
    x = delta_image((np.int64(5), np.int32(4)))
    assert x.shape == (5, 4)
    assert delta_image(np.array([3, 3])).shape == (3, 3)


# --- noise target -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["uniform", "binary", "gaussian"])
def test_noise_target_kinds(kind):
    x = noise_target((64, 48), seed=2, kind=kind)
    _assert_unit_image(x, (64, 48))
    assert 0.4 < x.mean() < 0.6
    assert np.array_equal(x, noise_target((64, 48), seed=2, kind=kind))
    assert not np.array_equal(x, noise_target((64, 48), seed=3, kind=kind))


def test_noise_target_binary_values_and_flat_spectrum():
    x = noise_target((128, 128), seed=0, kind="binary")
    assert set(np.unique(x)) == {0.0, 1.0}
    p = np.abs(np.fft.fft2(x - x.mean())) ** 2
    p[0, 0] = np.nan
    # White: low and high frequency bands carry similar power.
    low = np.nanmean(p[:16, :16])
    high = np.nanmean(p[48:80, 48:80])
    assert 0.7 < low / high < 1.4


def test_noise_target_unknown_kind():
    with pytest.raises(ValueError, match=r"binary.*Did you mean 'binary'"):
        noise_target(8, kind="binarry")


# --- delta ------------------------------------------------------------------


@pytest.mark.parametrize("shape, pos", [((5, 5), (2, 2)), ((6, 8), (3, 4)), (7, (3, 3)), ((1, 1), (0, 0))])
def test_delta_default_centre(shape, pos):
    x = delta_image(shape)
    assert x.sum() == 1.0 and x[pos] == 1.0
    assert x.dtype == np.float64


def test_delta_position():
    x = delta_image((4, 6), position=(0, 5))
    assert x[0, 5] == 1.0 and x.sum() == 1.0


@pytest.mark.parametrize(
    "pos, exc",
    [((4, 0), ValueError), ((0, -1), ValueError), ((1,), TypeError), ((1.0, 2), TypeError), ("ab", TypeError)],
)
def test_delta_bad_position(pos, exc):
    with pytest.raises(exc, match="position"):
        delta_image((4, 6), position=pos)


# --- checkerboard -----------------------------------------------------------


def test_checkerboard_known_pattern():
    x = checkerboard_image((4, 6), square=2)
    expected = np.array(
        [
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [1, 1, 0, 0, 1, 1],
            [1, 1, 0, 0, 1, 1],
        ],
        dtype=float,
    )
    assert np.array_equal(x, expected)
    assert checkerboard_image(16).mean() == 0.5


@pytest.mark.parametrize("square, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError)])
def test_checkerboard_bad_square(square, exc):
    with pytest.raises(exc, match="square"):
        checkerboard_image(8, square=square)


# --- fractal ----------------------------------------------------------------


def test_fractal_range_and_determinism():
    x = fractal_image((64, 80), seed=4)
    _assert_unit_image(x, (64, 80))
    assert np.isclose(x.min(), 0.05) and np.isclose(x.max(), 0.95)
    assert np.array_equal(x, fractal_image((64, 80), seed=4))
    assert not np.array_equal(x, fractal_image((64, 80), seed=5))


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_fractal_power_spectrum_slope(beta):
    n = 128
    x = fractal_image(n, seed=0, beta=beta)
    p = np.abs(np.fft.fft2(x - x.mean())) ** 2
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    bins = np.geomspace(2.0 / n, 0.45, 12)
    idx = np.digitize(f, bins)
    fc, pc = [], []
    for b in range(1, len(bins)):
        sel = idx == b
        fc.append(f[sel].mean())
        pc.append(p[sel].mean())
    slope = np.polyfit(np.log(fc), np.log(pc), 1)[0]
    assert abs(slope + beta) < 0.35


def test_fractal_single_pixel_and_beta_zero():
    assert np.array_equal(fractal_image(1), np.full((1, 1), 0.5))
    x = fractal_image(16, beta=0.0)
    assert np.isclose(x.min(), 0.05)


@pytest.mark.parametrize("beta, exc", [(-1.0, ValueError), (np.inf, ValueError), ("2", TypeError)])
def test_fractal_bad_beta(beta, exc):
    with pytest.raises(exc, match="beta"):
        fractal_image(8, beta=beta)


# --- natural ----------------------------------------------------------------


def test_natural_image_camera():
    pytest.importorskip("skimage")
    x = natural_image("camera")
    _assert_unit_image(x, (512, 512))
    assert x.std() > 0.1


def test_natural_image_rgb_is_channel_mean():
    skdata = pytest.importorskip("skimage.data")
    x = natural_image("astronaut")
    raw = skdata.astronaut().astype(np.float64) / 255.0
    assert np.allclose(x, raw.mean(axis=2))


def test_natural_image_resize_and_crop():
    pytest.importorskip("skimage")
    x = natural_image("coins", shape=(64, 96))
    _assert_unit_image(x, (64, 96))
    y = natural_image("camera", shape=(100, 50), fit="crop")
    _assert_unit_image(y, (100, 50))
    full = natural_image("camera")
    assert np.array_equal(y, full[206:306, 231:281])
    with pytest.raises(ValueError, match="fit='resize'"):
        natural_image("page", shape=(400, 400), fit="crop")


def test_natural_image_unknown_name_and_fit():
    with pytest.raises(ValueError, match=r"camera.*Did you mean 'camera'"):
        natural_image("camra")
    with pytest.raises(ValueError, match="crop"):
        natural_image("camera", fit="stretch")
    assert "camera" in NATURAL_IMAGE_NAMES and "moon" in NATURAL_IMAGE_NAMES


def test_natural_image_without_skimage(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match=r"jdeconv\[natural\].*fractal_image"):
        natural_image("camera")


# --- make_image -------------------------------------------------------------


def test_make_image_dispatch():
    assert np.array_equal(make_image("shapes", (32, 40), seed=3), shapes_image((32, 40), seed=3))
    assert np.array_equal(make_image("question_square"), question_square_image())
    assert np.array_equal(make_image("question_square", (200, 200)), question_square_image())
    assert np.array_equal(
        make_image("noise", 16, seed=7, kind="gaussian"), noise_target(16, seed=7, kind="gaussian")
    )
    assert np.array_equal(make_image("delta", (5, 7)), delta_image((5, 7)))
    assert np.array_equal(make_image("checkerboard", 8, square=2), checkerboard_image(8, square=2))
    assert np.array_equal(make_image("fractal", 16, seed=1, beta=1.5), fractal_image(16, seed=1, beta=1.5))
    assert make_image("shapes").shape == (256, 256)
    assert make_image(" Delta ", 3)[1, 1] == 1.0


def test_make_image_natural():
    pytest.importorskip("skimage")
    a = make_image("natural:moon", (32, 32))
    assert np.array_equal(a, natural_image("moon", shape=(32, 32)))
    b = make_image("natural", (32, 32), name="moon")
    assert np.array_equal(a, b)
    assert make_image("natural:camera").shape == (512, 512)


def test_make_image_names_listed():
    for name in ("shapes", "question_square", "noise", "delta", "checkerboard", "fractal", "natural:camera"):
        assert name in IMAGE_NAMES


@pytest.mark.parametrize(
    "name, kwargs, exc, text",
    [
        ("shape", {}, ValueError, r"Did you mean 'shapes'"),
        ("checkerbord", {}, ValueError, r"Did you mean 'checkerboard'"),
        ("zzz", {}, ValueError, "expected one of 'shapes'"),
        ("natural:camra", {}, ValueError, r"Did you mean 'natural:camera'"),
        ("noise", {"kindd": "binary"}, TypeError, r"kindd.*accepted options: seed, kind"),
        ("delta", {"seedy": 1}, TypeError, "seedy"),
        ("question_square", {"shape": (10, 10)}, ValueError, "200x200"),
        ("shapes", {"seed": -4}, ValueError, "seed"),
        ("natural:moon", {"name": "camera"}, TypeError, "not both"),
        (3, {}, TypeError, "str"),
    ],
)
def test_make_image_errors(name, kwargs, exc, text):
    with pytest.raises(exc, match=text):
        make_image(name, **kwargs)


# --- size bounds ------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: shapes_image(10**9),
        lambda: noise_target((60_000, 60_000)),  # sides fit, pixel count does not
        lambda: fractal_image((1, 10**7)),
        lambda: checkerboard_image(10**6),
        lambda: delta_image((70_000, 1)),
        lambda: make_image("noise", 10**9, seed=0),
        lambda: natural_image("camera", shape=10**9),  # refused before loading the photo
    ],
)
def test_absurd_image_sizes_refused_before_allocation(call):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="too large"):
        call()
    assert time.perf_counter() - t0 < 1.0

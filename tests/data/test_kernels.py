"""Tests for jdeconv.data._kernels (kernel families)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jdeconv.data import (
    KERNEL_FAMILIES,
    airy_kernel,
    box_kernel,
    disk_kernel,
    gaussian_kernel,
    make_kernel,
    motion_kernel,
    random_smooth_kernel,
)
from jdeconv.data._kernels import _bessel_j1


def _moments(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (row, col) and 2x2 covariance of a kernel seen as a distribution."""
    k, l = h.shape
    r, c = np.mgrid[0:k, 0:l].astype(float)
    mean = np.array([(h * r).sum(), (h * c).sum()])
    dr, dc = r - mean[0], c - mean[1]
    cov = np.array([[(h * dr * dr).sum(), (h * dr * dc).sum()], [(h * dr * dc).sum(), (h * dc * dc).sum()]])
    return mean, cov


def _check_kernel(h: np.ndarray, shape: tuple[int, int]) -> None:
    assert h.shape == shape
    assert h.dtype == np.float64
    assert np.all(np.isfinite(h))
    assert h.min() >= 0.0
    assert abs(h.sum() - 1.0) < 1e-12


FAMILY_PARAMS = {
    "gaussian": dict(sigma=1.3),
    "motion": dict(length=3.0, angle=20.0),
    "disk": dict(radius=2.0),
    "box": dict(),
    "airy": dict(radius=1.5),
    "random": dict(smoothness=1.0),
}


@pytest.mark.parametrize("family", sorted(FAMILY_PARAMS))
@pytest.mark.parametrize("shape", [7, (8, 8), (9, 6), (6, 11), (5, 5)])
def test_all_families_normalised(family, shape):
    h = make_kernel(family, shape, **FAMILY_PARAMS[family])
    _check_kernel(h, (shape, shape) if isinstance(shape, int) else shape)


def test_families_listed():
    assert set(FAMILY_PARAMS) <= set(KERNEL_FAMILIES)


# --- gaussian ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(15, 15), (16, 16), (15, 16)])
def test_gaussian_isotropic_symmetry_and_centre(shape):
    h = gaussian_kernel(shape, 2.0)
    assert np.allclose(h, h[::-1, :], atol=1e-16, rtol=0)
    assert np.allclose(h, h[:, ::-1], atol=1e-16, rtol=0)
    if shape[0] == shape[1]:
        assert np.allclose(h, h.T, atol=1e-16, rtol=0)
    mean, _ = _moments(h)
    assert np.allclose(mean, [(shape[0] - 1) / 2, (shape[1] - 1) / 2])


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, -45.0, 120.0])
def test_gaussian_anisotropic_covariance(angle):
    sx, sy = 3.0, 1.5
    h = gaussian_kernel((41, 41), sx, sigma_y=sy, angle=angle)
    mean, cov = _moments(h)
    a = np.radians(angle)
    u = np.array([-np.sin(a), np.cos(a)])  # (row, col) direction of the angle
    v = np.array([np.cos(a), np.sin(a)])
    expected = sx**2 * np.outer(u, u) + sy**2 * np.outer(v, v)
    assert np.allclose(mean, [20, 20], atol=1e-9)
    assert np.allclose(cov, expected, atol=1e-6)


def test_gaussian_axes_convention():
    h = gaussian_kernel((21, 21), 3.0, sigma_y=1.0)
    _, cov = _moments(h)
    assert cov[1, 1] > 8 * cov[0, 0]  # wide along columns (x), narrow along rows (y)
    v = gaussian_kernel((21, 21), 3.0, sigma_y=1.0, angle=90.0)
    assert np.allclose(v, h.T, atol=1e-15)


def test_gaussian_tiny_sigma_even_size_no_nan():
    h = gaussian_kernel((4, 4), 1e-3)
    _check_kernel(h, (4, 4))
    assert np.allclose(h[1:3, 1:3], 0.25)


@settings(deadline=None, max_examples=25)
@given(
    k=st.integers(1, 25),
    l=st.integers(1, 25),
    sigma=st.floats(0.3, 6.0),
    ratio=st.floats(0.2, 3.0),
    angle=st.floats(-360.0, 360.0),
)
def test_gaussian_property(k, l, sigma, ratio, angle):
    h = gaussian_kernel((k, l), sigma, sigma_y=sigma * ratio, angle=angle)
    _check_kernel(h, (k, l))
    assert np.allclose(h, h[::-1, ::-1], atol=1e-14, rtol=0)  # point symmetric about the centre


# --- motion -----------------------------------------------------------------


@pytest.mark.parametrize("length", [2.0, 5.0, 7.5, 12.0])
def test_motion_length_from_second_moment(length):
    h = motion_kernel((15, 15), length, angle=0.0)
    mean, cov = _moments(h)
    assert np.allclose(mean, [7, 7], atol=1e-12)
    assert cov[0, 0] < 1e-20  # stays on the centre row
    est = np.sqrt(12.0 * (cov[1, 1] - 1.0 / 6.0))  # uniform segment + bilinear splat
    assert abs(est - length) < 0.01 * length


@pytest.mark.parametrize("angle", [30.0, 45.0, 135.0])
def test_motion_rotated_second_moment(angle):
    length = 10.0
    h = motion_kernel((21, 21), length, angle=angle)
    mean, cov = _moments(h)
    a = np.radians(angle)
    u = np.array([-np.sin(a), np.cos(a)])
    v = np.array([np.cos(a), np.sin(a)])
    var_u = u @ cov @ u
    var_v = v @ cov @ v
    assert np.allclose(mean, [10, 10], atol=1e-9)
    assert abs(var_u - length**2 / 12) < 0.35
    assert var_v < 0.35  # thin line: only the splat's spread across it
    # Direction convention: 45 degrees goes up-right (row decreases as col increases).
    if angle == 45.0:
        assert cov[0, 1] < 0


def test_motion_angle_conventions():
    h0 = motion_kernel((15, 15), 9.0, 0.0)
    assert np.allclose(motion_kernel((15, 15), 9.0, 90.0), h0.T, atol=1e-12)
    assert np.allclose(motion_kernel((15, 15), 9.0, 180.0), h0, atol=1e-12)
    assert np.allclose(motion_kernel((1, 11), 10.0), motion_kernel((1, 11), 10.0)[:, ::-1], atol=1e-12)


@settings(deadline=None, max_examples=25)
@given(length=st.floats(0.1, 14.0), angle=st.floats(-180.0, 180.0), extra=st.integers(0, 3))
def test_motion_property(length, angle, extra):
    size = int(np.ceil(length)) + 1 + extra
    h = motion_kernel((size, size), length, angle)
    _check_kernel(h, (size, size))
    assert np.allclose(h, h[::-1, ::-1], atol=1e-12)


def test_motion_does_not_fit():
    with pytest.raises(ValueError, match=r"does not fit in kernel shape \(15, 15\).*\(1, 22\)"):
        motion_kernel((15, 15), 21.0)
    with pytest.raises(ValueError, match="does not fit"):
        motion_kernel((3, 15), 9.0, angle=90.0)


# --- disk -------------------------------------------------------------------


@pytest.mark.parametrize("shape, radius", [(15, 7.0), (16, 5.5), ((9, 13), 4.2), (2, 1.0), (1, 0.5)])
def test_disk_symmetry_and_support(shape, radius):
    h = disk_kernel(shape, radius)
    k, l = (shape, shape) if isinstance(shape, int) else shape
    _check_kernel(h, (k, l))
    assert np.array_equal(h, h[::-1, :]) and np.array_equal(h, h[:, ::-1])
    if k == l:
        assert np.array_equal(h, h.T)
    r, c = np.mgrid[0:k, 0:l]
    d = np.hypot(r - (k - 1) / 2, c - (l - 1) / 2)
    assert np.all(h[d > radius + 0.75] == 0)  # nothing outside the disk
    inner = h[d < radius - 0.75]
    if inner.size:
        assert np.allclose(inner, inner.max())  # flat inside


def test_disk_area():
    radius = 6.0
    h = disk_kernel(31, radius)
    area_pixels = 1.0 / h.max()  # each fully inside pixel holds 1/area
    assert abs(area_pixels - np.pi * radius**2) < 0.5


@pytest.mark.parametrize(
    "radius, shape, text", [(0.3, 5, ">= 0.5"), (4.0, 7, r"at least \(8, 8\)"), (0.0, 5, "> 0")]
)
def test_disk_errors(radius, shape, text):
    with pytest.raises(ValueError, match=text):
        disk_kernel(shape, radius)


# --- box --------------------------------------------------------------------


def test_box_kernel():
    h = box_kernel((3, 4))
    assert np.allclose(h, 1 / 12) and h.shape == (3, 4)
    assert np.array_equal(box_kernel(1), np.ones((1, 1)))


# --- airy -------------------------------------------------------------------


@pytest.mark.parametrize("radius", [2, 3, 5])
def test_airy_first_zero(radius):
    h = airy_kernel((21, 21), float(radius))
    _check_kernel(h, (21, 21))
    peak = h[10, 10]
    assert h.argmax() == 10 * 21 + 10
    for r, c in [(10, 10 + radius), (10 - radius, 10), (10, 10 - radius), (10 + radius, 10)]:
        assert h[r, c] < 1e-12 * peak
    # Just inside the zero is brighter than the zero, and a secondary ring exists beyond it.
    assert h[10, 10 + radius - 1] > 1e-4 * peak
    assert np.allclose(h, h[::-1, ::-1]) and np.allclose(h, h.T)


def test_airy_matches_formula():
    special = pytest.importorskip("scipy.special")
    radius = 2.5
    h = airy_kernel((15, 15), radius)
    r, c = np.mgrid[0:15, 0:15] - 7.0
    x = 3.8317059702075125 * np.hypot(r, c) / radius
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.where(x == 0, 1.0, (2 * special.j1(x) / x) ** 2)
    ref /= ref.sum()
    assert np.allclose(h, ref, rtol=1e-10, atol=1e-16)


def test_bessel_j1_accuracy():
    special = pytest.importorskip("scipy.special")
    x = np.concatenate([np.linspace(0, 50, 2001), np.linspace(50, 300, 501)])
    assert np.max(np.abs(_bessel_j1(x) - special.j1(x))) < 1e-12
    assert abs(_bessel_j1(np.array([3.8317059702075125]))[0]) < 1e-14


# --- random -----------------------------------------------------------------


def test_random_smooth_kernel_determinism():
    a = random_smooth_kernel((11, 13), seed=3)
    _check_kernel(a, (11, 13))
    assert np.array_equal(a, random_smooth_kernel((11, 13), seed=3))
    assert not np.array_equal(a, random_smooth_kernel((11, 13), seed=4))
    assert np.array_equal(make_kernel("random", (11, 13), seed=3), a)
    assert np.array_equal(make_kernel("random_smooth", (11, 13), seed=3), a)


def test_random_smooth_kernel_smoothness():
    rough = random_smooth_kernel(31, seed=0, smoothness=0.0)
    smooth = random_smooth_kernel(31, seed=0, smoothness=3.0)
    _check_kernel(rough, (31, 31))
    tv = lambda h: np.abs(np.diff(h, axis=0)).sum() + np.abs(np.diff(h, axis=1)).sum()  # noqa: E731
    assert tv(smooth) < 0.3 * tv(rough)
    # Mass fades towards the border (PSF-like envelope).
    assert smooth[0].sum() + smooth[-1].sum() < 2 * smooth[15].sum()


@settings(deadline=None, max_examples=20)
@given(k=st.integers(1, 20), l=st.integers(1, 20), seed=st.integers(0, 10_000), s=st.floats(0.0, 5.0))
def test_random_smooth_property(k, l, seed, s):
    _check_kernel(random_smooth_kernel((k, l), seed=seed, smoothness=s), (k, l))


# --- make_kernel ------------------------------------------------------------


def test_make_kernel_dispatch():
    assert np.array_equal(make_kernel("gaussian", 9, sigma=1.5, angle=10), gaussian_kernel(9, 1.5, angle=10))
    assert np.array_equal(make_kernel("motion", 9, length=5, angle=30), motion_kernel(9, 5, 30))
    assert np.array_equal(make_kernel("Disk", 9, radius=3), disk_kernel(9, 3))
    assert np.array_equal(make_kernel("box", (2, 3)), box_kernel((2, 3)))
    assert np.array_equal(make_kernel("airy", 9, radius=2), airy_kernel(9, 2))


@pytest.mark.parametrize(
    "family, kwargs, exc, text",
    [
        ("gausian", dict(sigma=1), ValueError, r"Did you mean 'gaussian'"),
        ("blur", {}, ValueError, "expected one of 'gaussian'"),
        ("gaussian", {}, TypeError, "needs option.*sigma"),
        ("gaussian", dict(sigma=1, radius=2), TypeError, r"radius.*accepted options: sigma_y, angle"),
        ("motion", {}, TypeError, "length"),
        ("disk", dict(sigma=2), TypeError, "sigma"),
        ("random", dict(seed=-1), ValueError, "seed"),
        (None, {}, TypeError, "str"),
    ],
)
def test_make_kernel_errors(family, kwargs, exc, text):
    with pytest.raises(exc, match=text):
        make_kernel(family, 9, **kwargs)


# --- validation -------------------------------------------------------------


@pytest.mark.parametrize(
    "call, exc, text",
    [
        (lambda: gaussian_kernel((0, 5), 1.0), ValueError, r"kernel shape \(0, 5\) has a non-positive size; give positive integers like \(15, 15\)"),
        (lambda: gaussian_kernel(5, 0.0), ValueError, "sigma"),
        (lambda: gaussian_kernel(5, -1.0), ValueError, "sigma"),
        (lambda: gaussian_kernel(5, np.nan), ValueError, "finite"),
        (lambda: gaussian_kernel(5, np.inf), ValueError, "finite"),
        (lambda: gaussian_kernel(5, "2"), TypeError, "sigma"),
        (lambda: gaussian_kernel(5, True), TypeError, "sigma"),
        (lambda: gaussian_kernel(5, 1.0, sigma_y=0.0), ValueError, "sigma_y"),
        (lambda: gaussian_kernel(5, 1.0, angle=np.nan), ValueError, "angle"),
        (lambda: motion_kernel(9, 0.0), ValueError, "length"),
        (lambda: motion_kernel(9, -3.0), ValueError, "length"),
        (lambda: motion_kernel(9, 3.0, angle=np.inf), ValueError, "angle"),
        (lambda: airy_kernel(9, 0.0), ValueError, "radius"),
        (lambda: airy_kernel(9, -1.0), ValueError, "radius"),
        (lambda: disk_kernel(9, np.nan), ValueError, "radius"),
        (lambda: disk_kernel(9, 2.0, supersample=0), ValueError, "supersample"),
        (lambda: random_smooth_kernel(9, smoothness=-1.0), ValueError, "smoothness"),
        (lambda: random_smooth_kernel(9, seed=1.5), TypeError, "seed"),
        (lambda: box_kernel((3, -1)), ValueError, "non-positive"),
        (lambda: box_kernel("3"), TypeError, "kernel shape"),
    ],
)
def test_kernel_validation(call, exc, text):
    with pytest.raises(exc, match=text):
        call()


def test_numpy_scalar_parameters_accepted():
    h = gaussian_kernel(np.int64(7), np.float32(1.5), angle=np.int32(10))
    _check_kernel(h, (7, 7))


# --- size bounds ------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: make_kernel("gaussian", 1_000_000_000, sigma=2.0),
        lambda: gaussian_kernel((5, 10**6), 1.0),
        lambda: box_kernel(5000),
        lambda: make_kernel("random", (10**8, 3)),
        lambda: airy_kernel(10**5, 3.0),
    ],
)
def test_absurd_kernel_sizes_refused_before_allocation(call):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"kernel shape .* is too large: each side must be at most 4096"):
        call()
    assert time.perf_counter() - t0 < 1.0


def test_disk_supersample_bounded():
    with pytest.raises(ValueError, match="supersample is 1000; it must be at most 64"):
        disk_kernel(9, 2.0, supersample=1000)
    with pytest.raises(TypeError, match="supersample"):
        disk_kernel(9, 2.0, supersample=2.5)
    _check_kernel(disk_kernel(9, 2.0, supersample=64), (9, 9))


def test_airy_cost_bounded_for_tiny_radius():
    # A typo like radius=0.003 makes the J1 arguments huge; the asymptotic
    # expansion keeps the cost per pixel bounded.
    t0 = time.perf_counter()
    h = airy_kernel(65, 0.003)
    assert time.perf_counter() - t0 < 2.0
    _check_kernel(h, (65, 65))
    assert h[32, 32] > 0.99

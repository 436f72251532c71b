"""Kernel fields from one pair: tiles, residual vs a single kernel, uniform blur, coupling.

One image size (192²), one kernel size (9×9), one grid (4×4, overlap 0.1): the
tile problems compile once for the whole file.
"""

import jax
import numpy as np
import pytest
import scipy.ndimage as ndi

import jdeconv
from jdeconv._diagnostics import FitWarning, KernelBoxWarning
from jdeconv._field import TILE_RESULTS, PSFField, estimate_psf_field, tile_layout
from jdeconv._field_conv import conv2d_field, tile_centres

M = N = 192
K = 9
GRID = (4, 4)
OVERLAP = 0.1


def gauss(sigma):
    a = np.arange(K) - (K - 1) / 2
    g = np.exp(-0.5 * (a[:, None] ** 2 + a[None, :] ** 2) / sigma**2)
    return g / g.sum()


def sigma_at(u, v):
    """σ = 1 at the image centre, 2 in the corners, quadratic in the radius."""
    c, d = (M - 1) / 2, (N - 1) / 2
    r2 = ((u - c) ** 2 + (v - d) ** 2) / (c**2 + d**2)
    return 1.0 + r2


def true_field_blur(x):
    """The smoothly varying Gaussian blur, rendered with a fine 16×16 field."""
    rows, cols = tile_centres((M, N), (16, 16))
    H = np.stack([np.stack([gauss(sigma_at(r, c)) for c in cols]) for r in rows])
    return np.asarray(conv2d_field(x, H, "valid"))


def texture(seed=0):
    x = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal((M, N)), 0.7)
    return (x - x.min()) / np.ptp(x)


def tile_errors(field):
    out = np.zeros(field.grid)
    for i in range(field.grid[0]):
        for j in range(field.grid[1]):
            h = gauss(sigma_at(float(field.centres[0][i]), float(field.centres[1][j])))
            out[i, j] = np.linalg.norm(np.asarray(field.kernels[i, j]) - h) / np.linalg.norm(h)
    return out


@pytest.fixture(scope="module")
def varying_pair():
    x = texture()
    return x, true_field_blur(x)


def test_varying_blur_tiles_and_residual(varying_pair):
    x, y = varying_pair
    # noiseless pair: the tiles' residual (the blur varies inside a tile) is far above the
    # estimated noise level and σ = 2 reaches the 9x9 box's border: both are reported
    with pytest.warns(FitWarning, match="fit statistic"), \
            pytest.warns(KernelBoxWarning, match="mass lies on the border"):
        field = estimate_psf_field(x, y, K, grid=GRID, overlap=OVERLAP)
    assert isinstance(field, PSFField) and field.kernels.shape == GRID + (K, K)
    assert bool(field.converged) and (np.asarray(field.tile_result) == 0).all()
    errs = tile_errors(field)
    # measured: median 0.033, max 0.041 (the truth varies inside each tile)
    assert errs.max() < 0.07, errs
    with pytest.warns(FitWarning, match="fit statistic"):  # one kernel cannot explain it
        single = jdeconv.estimate_kernel(x, y, K)
    r_single = np.linalg.norm(np.asarray(jdeconv.conv2d(x, single.kernel)) - y)
    r_field = np.linalg.norm(np.asarray(field.render(x)) - y)
    assert r_single > 2 * r_field, (r_single, r_field)  # measured 2.35x
    # kernel_at: exact at the centres, clamped outside, batched over positions
    c0, c1 = np.asarray(field.centres[0]), np.asarray(field.centres[1])
    np.testing.assert_allclose(field.kernel_at(c0[1], c1[2]), field.kernels[1, 2], atol=1e-14)
    np.testing.assert_allclose(field.kernel_at(-50.0, 1e4), field.kernels[0, -1], atol=1e-14)
    mid = field.kernel_at((c0[0] + c0[1]) / 2, c1[0])
    np.testing.assert_allclose(mid, (field.kernels[0, 0] + field.kernels[1, 0]) / 2, atol=1e-14)
    assert field.kernel_at(np.zeros((2, 3)), 5.0).shape == (2, 3, K, K)
    # a pytree: survives flatten/unflatten and jit
    leaves, tree = jax.tree_util.tree_flatten(field)
    again = jax.tree_util.tree_unflatten(tree, leaves)
    np.testing.assert_array_equal(again.kernels, field.kernels)
    assert "successful=16" in field.summary()


def test_same_mode_uses_the_valid_part(varying_pair):
    x, y = varying_pair
    with pytest.warns(FitWarning):
        valid = estimate_psf_field(x, y, K, grid=GRID, overlap=OVERLAP)
    # a 'same' blurred image whose borders are junk: only its valid part is fitted
    c = (K - 1) // 2
    ys = np.random.default_rng(1).random((M, N))
    ys[K - 1 - c:M - c, K - 1 - c:N - c] = y
    with pytest.warns(FitWarning):
        same = estimate_psf_field(x, ys, K, grid=GRID, overlap=OVERLAP, mode="same")
    np.testing.assert_allclose(same.kernels, valid.kernels, atol=1e-12)
    for a, b in zip(same.centres, valid.centres):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.asarray(same.render(x))[K - 1 - c:M - c, K - 1 - c:N - c],
                               valid.render(x), atol=1e-12)


def test_swapped_pair_warns_once(varying_pair):
    import warnings

    x = varying_pair[0]
    rows, cols = tile_centres((M, N), (16, 16))
    H = np.stack([np.stack([gauss(sigma_at(r, c)) for c in cols]) for r in rows])
    y = np.asarray(conv2d_field(x, H, "same"))
    swap = "sharper than the original"
    for pair, expected in (((x, y), 0), ((y, x), 1)):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            estimate_psf_field(*pair, K, grid=GRID, overlap=OVERLAP, mode="same")
        assert sum(swap in str(w.message) for w in record) == expected


def test_uniform_blur_reduces_to_the_single_kernel():
    x = texture(seed=2)
    h = gauss(1.2)
    y = np.asarray(jdeconv.conv2d(x, h))
    field = estimate_psf_field(x, y, K, grid=GRID, overlap=OVERLAP)
    single = np.asarray(jdeconv.estimate_kernel(x, y, K).kernel)
    np.testing.assert_allclose(field.kernels, np.broadcast_to(single, GRID + (K, K)), atol=1e-7)
    np.testing.assert_allclose(single, h, atol=1e-7)
    np.testing.assert_allclose(field.render(x), y, atol=1e-7)
    # an exposure change (0.9 y + 0.02): every tile recovers the gain and the offset exactly
    # (same compiled program as the masked test below: mask given, gain, constant background)
    yg = 0.9 * y + 0.02
    phot = estimate_psf_field(x, yg, K, grid=GRID, overlap=OVERLAP, mask=np.ones(y.shape, bool),
                              gain=True, background="constant")
    assert phot.background.shape == GRID + (1,) and phot.background_model == "constant"
    np.testing.assert_allclose(phot.gain, 0.9, atol=1e-7)
    np.testing.assert_allclose(phot.background[..., 0], 0.02, atol=1e-7)
    np.testing.assert_allclose(phot.kernels, np.broadcast_to(h, GRID + (K, K)), atol=1e-7)
    np.testing.assert_allclose(phot.render(x), yg, atol=1e-7)


def _corrupt(y, seed=6):
    """Hot pixels and two saturated blocks, in some tiles only; returns (corrupted y, bad)."""
    bad = np.zeros(y.shape, bool)
    bad[10:30, 12:40] = True                                         # tile (0, 0)
    bad[120:126, 130:175] = True                                     # tiles (2..3, 2..3)
    bad[50:100] |= np.random.default_rng(seed).random((50, y.shape[1])) < 0.02  # tile row 1
    out = y.copy()
    out[bad] = 1.5
    return out, bad


def test_masked_corrupted_tiles_recover_kernels_gain_and_background(varying_pair):
    x, y = varying_pair
    yg = 0.9 * y + 0.02
    corrupted, bad = _corrupt(yg)
    kw = dict(grid=GRID, overlap=OVERLAP, gain=True, background="constant")
    with pytest.warns(FitWarning, match="fit statistic"), \
            pytest.warns(KernelBoxWarning, match="mass lies on the border"):
        clean = estimate_psf_field(x, yg, K, mask=np.ones(y.shape, bool), **kw)
    with pytest.warns(FitWarning, match="fit statistic"), \
            pytest.warns(KernelBoxWarning, match="mass lies on the border"):
        masked = estimate_psf_field(x, corrupted, K, mask=~bad, **kw)
    with pytest.warns(FitWarning):
        ignored = estimate_psf_field(x, corrupted, K, mask=np.ones(y.shape, bool), **kw)
    assert bool(masked.converged) and (np.asarray(masked.tile_result) == 0).all()
    e_clean, e_masked, e_ignored = tile_errors(clean), tile_errors(masked), tile_errors(ignored)
    # measured: clean median 0.037, masked within 1.06x of clean in every tile; the same
    # corrupted pair without its mask: median error above 0.5
    assert (e_masked <= 1.25 * e_clean).all(), (e_clean, e_masked)
    assert np.median(e_ignored) > 5 * np.median(e_masked)
    for field in (clean, masked):  # the blur varies inside a tile: gain/offset absorb a little
        np.testing.assert_allclose(field.gain, 0.9, atol=0.02)
        np.testing.assert_allclose(field.background[..., 0], 0.02, atol=0.01)
    np.testing.assert_allclose(masked.gain, clean.gain, atol=0.01)


def test_photometric_options_errors(varying_pair):
    x, y = varying_pair
    with pytest.raises(ValueError, match="coupling=0"):
        estimate_psf_field(x, y, K, grid=GRID, coupling=0.1, gain=True)
    with pytest.raises(ValueError, match="mask has shape"):
        estimate_psf_field(x, y, K, grid=GRID, mask=np.ones((5, 5), bool))
    with pytest.raises(ValueError, match="background"):
        estimate_psf_field(x, y, K, grid=GRID, background="plain")
    with pytest.raises(ValueError, match="no tile"):
        estimate_psf_field(x, y, K, grid=GRID, mask=np.zeros(y.shape, bool))
    with pytest.raises(ValueError, match="gain=True is not available for polynomial"):
        estimate_psf_polynomial(x, y, K, gain=True)
    with pytest.raises(ValueError, match="huber"):
        estimate_psf_polynomial(x, y, K, loss="huber")


def test_coupling_stabilises_tiles_without_texture():
    x = texture(seed=3)
    rows, cols, (S, T) = tile_layout((M - K + 1, N - K + 1), GRID, OVERLAP)
    low = np.s_[rows[1]:rows[1] + S + K - 1, cols[2]:cols[2] + T + K - 1]
    x[low] = x[low].mean() + 0.01 * (x[low] - x[low].mean())  # tile (1, 2): 1 % contrast
    x[rows[3]:rows[3] + S + K - 1, cols[0]:cols[0] + T + K - 1] = 0.5  # tile (3, 0): flat
    y = true_field_blur(x) + 0.002 * np.random.default_rng(4).standard_normal((M - K + 1,) * 2)
    with (pytest.warns(FitWarning, match=r"1 of 16 tiles have no texture .*\(tiles \(3, 0\)\)"),
          pytest.warns(FitWarning, match="fit statistic above 3"), pytest.warns(FitWarning, match="mass lies on the border")):
        free = estimate_psf_field(x, y, K, grid=GRID, overlap=OVERLAP)
    with (pytest.warns(FitWarning, match="no texture"),
          pytest.warns(FitWarning, match="fit statistic above 3"), pytest.warns(FitWarning, match="mass lies on the border")):
        coupled = estimate_psf_field(x, y, K, grid=GRID, overlap=OVERLAP, coupling=0.003)
    for field in (free, coupled):
        codes = np.asarray(field.tile_result)
        assert codes[3, 0] == TILE_RESULTS.textureless and (np.delete(codes.ravel(), 12) == 0).all()
        assert bool(field.converged)
        np.testing.assert_allclose(np.asarray(field.kernels).sum(axis=(2, 3)), 1.0, atol=1e-9)
        assert np.asarray(field.kernels).min() >= 0
    assert int(coupled.coupling_iterations) > 0
    assert float(coupled.coupling_optimality) <= 1e-9
    e_free, e_coupled = tile_errors(free), tile_errors(coupled)
    # measured: low-texture tile 0.71 -> 0.17, median 0.053 -> 0.042; flat corner (filled
    # from its neighbours, which are less blurred than the corner) 0.24 / 0.25
    assert e_coupled[1, 2] < 0.5 * e_free[1, 2], (e_free[1, 2], e_coupled[1, 2])
    assert max(e_free[3, 0], e_coupled[3, 0]) < 0.35
    assert np.median(e_coupled) <= np.median(e_free)
    assert "textureless=1" in coupled.summary() and "coupling=0.003" in coupled.summary()


@pytest.mark.parametrize("kwargs, match", [
    (dict(grid=(200, 2)), "more tiles"),
    (dict(grid=(40, 40)), "smaller than the 9x9 kernel"),
    (dict(overlap=-0.1), "overlap"),
    (dict(overlap=1.0), r"\[0, 1\)"),
    (dict(coupling=-1.0), "coupling"),
    (dict(grid=(0, 2)), "grid"),
    (dict(mode="vald"), "valid"),
    (dict(prior="simplx"), "simplex"),
    (dict(coupling=1.0, prior="none", regularization={"l1": 0.1}), "l1"),
])
def test_errors(kwargs, match):
    x = np.random.default_rng(0).random((M, N))
    y = x[: M - K + 1, : N - K + 1]
    with pytest.raises((ValueError, TypeError), match=match):
        estimate_psf_field(x, y, K, **kwargs)


def test_error_wrong_blurred_shape():
    x = np.random.default_rng(0).random((40, 40))
    with pytest.raises(ValueError, match="mode='same'"):
        estimate_psf_field(x, x, 5, grid=(2, 2))
    with pytest.raises(ValueError, match="constant"):
        estimate_psf_field(np.ones((40, 40)), np.ones((36, 36)), 5, grid=(2, 2))


# ----------------------------------------------------------------------------
# Polynomial kernel fields
# ----------------------------------------------------------------------------

from jdeconv._field_poly import PolynomialPSF, estimate_psf_polynomial  # noqa: E402


def test_polynomial_recovers_an_in_model_field():
    # 64² original, 7×7 kernels, degree 1: h(u, v) = g(0.9) + u (g(0.8) - g(0.9)) / 4 + v (...)
    rng = np.random.default_rng(5)
    x = ndi.gaussian_filter(rng.standard_normal((64, 64)), 0.5)
    a = np.arange(7) - 3.0
    g = lambda s: (lambda e: e / e.sum())(np.exp(-0.5 * (a[:, None] ** 2 + a[None, :] ** 2) / s**2))
    coef = np.stack([g(0.9), (g(0.8) - g(0.9)) / 4, (g(1.0) - g(0.9)) / 4])
    truth = PolynomialPSF(coefficients=coef, evaluation_points=None, result=None,
                          primal_residual=None, dual_residual=None, iterations=None,
                          window=(3.0, 60.0, 3.0, 60.0), degree=1, kernel_shape=(7, 7))
    y = np.asarray(truth.render(x))
    for prior in ("simplex", "none"):
        est = estimate_psf_polynomial(x, y, 7, degree=1, prior=prior)
        assert bool(est.converged) and est.window == truth.window
        atol = 1e-5 if prior == "simplex" else 1e-9
        np.testing.assert_allclose(est.coefficients, coef, atol=atol)
    np.testing.assert_allclose(est.render(x), y, atol=1e-9)
    # kernel_at: the polynomial inside, clamped outside the fitted window
    np.testing.assert_allclose(est.kernel_at(3.0, 60.0), coef[0] - coef[1] + coef[2], atol=1e-9)
    np.testing.assert_allclose(est.kernel_at(-40.0, 500.0), est.kernel_at(3.0, 60.0), atol=1e-15)
    assert est.kernels_on_grid(np.arange(3.0), np.arange(4.0)).shape == (3, 4, 7, 7)
    # degree 0 is one kernel: the single estimate (ADMM to its tolerance vs the exact solver)
    y0 = np.asarray(jdeconv.conv2d(x, g(0.9)))
    p0 = estimate_psf_polynomial(x, y0, 7, degree=0)
    np.testing.assert_allclose(p0.coefficients[0], jdeconv.estimate_kernel(x, y0, 7).kernel,
                               atol=1e-6)
    # masked corrupted pixels and an offset: the same field, and the offset
    bad = np.zeros(y.shape, bool)
    bad[5:12, 20:30] = True
    bad[rng.random(y.shape) < 0.03] = True
    yb = y + 0.02
    yb[bad] = 2.0
    pm = estimate_psf_polynomial(x, yb, 7, degree=1, mask=~bad, background="constant")
    assert bool(pm.converged) and pm.background.shape == (1,)
    np.testing.assert_allclose(pm.coefficients, coef, atol=1e-5)
    np.testing.assert_allclose(pm.background, [0.02], atol=1e-6)
    np.testing.assert_allclose(np.asarray(pm.render(x))[~bad], yb[~bad], atol=1e-5)


def test_polynomial_beats_tiles_on_a_smooth_field(varying_pair):
    x, y = varying_pair
    with pytest.warns(FitWarning):
        tiles = estimate_psf_field(x, y, K, grid=GRID, overlap=OVERLAP)
    # tol 1e-4: 69 ADMM iterations instead of ~3000 at 1e-6, the same errors (0.0058)
    poly = estimate_psf_polynomial(x, y, K, degree=4, tol=1e-4)
    assert bool(poly.converged)
    c0, c1 = np.asarray(tiles.centres[0]), np.asarray(tiles.centres[1])
    e_poly = np.zeros(GRID)
    for i in range(GRID[0]):
        for j in range(GRID[1]):
            h = gauss(sigma_at(c0[i], c1[j]))
            hp = np.asarray(poly.kernel_at(c0[i], c1[j]))
            e_poly[i, j] = np.linalg.norm(hp - h) / np.linalg.norm(h)
    # measured: median 0.007 (polynomial, degree 4) vs 0.033 (tiles)
    assert np.median(e_poly) < 0.5 * np.median(tile_errors(tiles))
    r_poly = np.linalg.norm(np.asarray(poly.render(x)) - y)
    r_tiles = np.linalg.norm(np.asarray(tiles.render(x)) - y)
    assert r_poly < r_tiles
    kernels = np.asarray(poly.kernels_on_grid(*poly.evaluation_points))
    assert kernels.min() > -1e-4 and np.abs(kernels.sum(axis=(2, 3)) - 1).max() < 1e-4


@pytest.mark.parametrize("kwargs, match", [
    (dict(degree=-1), "degree"),
    (dict(degree=2, evaluation_grid=(2, 8)), "evaluation_grid"),
    (dict(regularization="auto"), "auto"),
    (dict(regularization={"l1": 1.0}), "l1"),
    (dict(degree=6), "unknowns"),
])
def test_polynomial_errors(kwargs, match):
    x = np.random.default_rng(0).random((24, 24))
    with pytest.raises((ValueError, TypeError), match=match):
        estimate_psf_polynomial(x, x[:20, :20], 5, **kwargs)

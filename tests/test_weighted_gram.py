"""Weighted / photometric normal equations, robust weights and masks (jdeconv._weighted_gram).

References: the dense im2col matrix ``kernel_operator(x, ks).as_matrix()`` (small
problems only) and, for ``w = 1``, :func:`jdeconv.normal_equations`.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial import legendre
from scipy import ndimage

import jdeconv
from jdeconv import _weighted_gram as wg
from jdeconv._solvers.exact import solve_qp

# (image shape, kernel shape): odd, even/rectangular, 1x1, and a larger square case.
SHAPES = [((20, 23), (3, 3)), ((20, 23), (4, 5)), ((20, 23), (1, 1)), ((40, 40), (7, 7))]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _problem(rng, shape, ks, zero_fraction=0.3):
    x = rng.random(shape)
    out = (shape[0] - ks[0] + 1, shape[1] - ks[1] + 1)
    y = rng.random(out)
    w = rng.random(out) * (rng.random(out) > zero_fraction)
    return x, y, w


def _dense(x, ks):
    return np.asarray(jdeconv.kernel_operator(x, ks, "valid").as_matrix())


def _basis_reference(shape, degree):
    """Legendre products on [-1, 1], ordered 1, u, v, P2(u), uv, P2(v), ..."""
    u = np.linspace(-1, 1, shape[0]) if shape[0] > 1 else np.zeros(1)
    v = np.linspace(-1, 1, shape[1]) if shape[1] > 1 else np.zeros(1)
    cols = []
    for t in range(degree + 1):
        for b in range(t + 1):
            a = t - b
            pu = legendre.legval(u, np.eye(degree + 1)[a])
            pv = legendre.legval(v, np.eye(degree + 1)[b])
            cols.append(np.outer(pu, pv).ravel())
    return np.stack(cols, axis=1)


# ------------------------------------------------------------ weighted normal equations


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("shape, ks", SHAPES)
def test_weighted_matches_dense_reference(rng, shape, ks, method):
    x, y, w = _problem(rng, shape, ks)
    A = _dense(x, ks)
    wf = w.ravel()
    y_nan = np.where(w > 0, y, np.nan)  # masked pixels may hold NaN
    ne = wg.weighted_normal_equations(x, y_nan, w, ks, method=method)
    assert _rel(ne.gram, A.T @ (wf[:, None] * A)) < 1e-12
    assert _rel(ne.rhs, A.T @ (wf * y.ravel())) < 1e-12
    assert abs(float(ne.half_yy) - 0.5 * np.sum(w * y * y)) < 1e-12 * np.sum(w * y * y)
    assert np.array_equal(ne.gram, ne.gram.T)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_weighted_float32(rng, method):
    x, y, w = _problem(rng, (20, 23), (4, 5))
    A = _dense(x, (4, 5))
    ne = wg.weighted_normal_equations(x.astype(np.float32), y.astype(np.float32),
                                      w.astype(np.float32), (4, 5), method=method)
    assert ne.gram.dtype == jnp.float32 and ne.rhs.dtype == jnp.float32
    assert _rel(ne.gram, A.T @ (w.ravel()[:, None] * A)) < 2e-6
    assert _rel(ne.rhs, A.T @ (w.ravel() * y.ravel())) < 2e-6


@pytest.mark.parametrize("shape, ks", [SHAPES[1], SHAPES[3]])
def test_unit_weights_equal_normal_equations(rng, shape, ks):
    x, y, _ = _problem(rng, shape, ks)
    ref = jdeconv.normal_equations(x, y, ks)
    ne = wg.weighted_normal_equations(x, y, np.ones(y.shape), ks)
    assert _rel(ne.gram, ref.gram) < 1e-12
    assert _rel(ne.rhs, ref.rhs) < 1e-12
    assert abs(float(ne.half_yy - ref.half_yy)) < 1e-12 * float(ref.half_yy)


def test_auto_method_choice():
    assert wg._resolve_method("auto", 20, 23, 3, 3) == "direct"
    assert wg._resolve_method("auto", 255, 255, 31, 31) == "fft"
    assert wg._resolve_method("fft", 20, 23, 3, 3) == "fft"


# ------------------------------------------------------------------ augmented system


@pytest.mark.parametrize("weighted", [False, True])
def test_augmented_blocks_match_dense(rng, weighted):
    shape, ks, degree = (20, 23), (4, 5), 2
    x, y, w = _problem(rng, shape, ks)
    w = w if weighted else np.ones_like(w)
    D = np.concatenate([_dense(x, ks), _basis_reference(y.shape, degree)], axis=1)
    ne = wg.augmented_normal_equations(x, y, ks, w=w if weighted else None,
                                       background_degree=degree)
    assert ne.gram.shape == (20 + 6, 20 + 6)
    assert _rel(ne.gram, D.T @ (w.ravel()[:, None] * D)) < 1e-12
    assert _rel(ne.rhs, D.T @ (w.ravel() * y.ravel())) < 1e-12
    assert np.allclose(wg.background_basis(y.shape, degree).reshape(6, -1).T,
                       _basis_reference(y.shape, degree), atol=1e-14)


def test_schur_route_is_exact(rng):
    """Eliminating the background then solving equals solving the joint system."""
    x, y, w = _problem(rng, (20, 23), (3, 3), zero_fraction=0.1)
    ne = wg.augmented_normal_equations(x, y, (3, 3), w=w, background_degree="plane")
    theta = np.linalg.solve(np.asarray(ne.gram), np.asarray(ne.rhs))
    elim = wg.eliminate_background(ne, 3)
    kt = np.linalg.solve(np.asarray(elim.reduced.gram), np.asarray(elim.reduced.rhs))
    assert np.allclose(kt, theta[:9], rtol=1e-9, atol=1e-12)
    assert np.allclose(wg.recover_background(elim, kt), theta[9:], rtol=1e-9, atol=1e-12)
    # the reduced objective is the joint one minimised over the background
    full = 0.5 * theta @ np.asarray(ne.gram) @ theta - np.asarray(ne.rhs) @ theta + ne.half_yy
    red = jdeconv._gram.quadratic_value(elim.reduced, kt)
    assert abs(float(red - full)) < 1e-10 * float(ne.half_yy)


# ------------------------------------------------------------- photometric recovery


@pytest.fixture(scope="module")
def pair():
    """Natural-like textured x (smoothed noise, two scales), 64x64, and a 5x5 simplex h."""
    r = np.random.default_rng(7)
    x = (0.5 + 2.0 * ndimage.gaussian_filter(r.standard_normal((64, 64)), 2.0)
         + 0.05 * r.standard_normal((64, 64)))
    h = r.random((5, 5)) ** 2
    h /= h.sum()
    return x, h, np.asarray(jdeconv.conv2d(x, h))


def _kernel_error(h_est, h):
    return float(np.linalg.norm(np.asarray(h_est) - h) / np.linalg.norm(h))


def test_gain_and_constant_background_recovered(pair):
    x, h, ax = pair
    fit = wg.solve_photometric(x, 0.9 * ax + 0.02, (5, 5), gain=True, background_degree="constant")
    assert bool(fit.qp.converged)
    assert _kernel_error(fit.kernel, h) < 1e-8
    assert abs(float(fit.gain) - 0.9) < 1e-8
    assert np.allclose(fit.background, [0.02], atol=1e-8, rtol=0)


def test_plane_background_recovered(pair):
    x, h, ax = pair
    c_true = np.array([0.02, 0.01, -0.005])
    y = 0.9 * ax + np.asarray(wg.background_image(c_true, ax.shape, "plane"))
    fit = wg.solve_photometric(x, y, (5, 5), gain=True, background_degree=1,
                               w=np.ones(ax.shape))
    assert _kernel_error(fit.kernel, h) < 1e-8
    assert abs(float(fit.gain) - 0.9) < 1e-8
    assert np.allclose(fit.background, c_true, atol=1e-8, rtol=0)
    model = wg.photometric_model(x, fit.kernel_tilde, fit.background, background_degree=1)
    assert np.max(np.abs(np.asarray(model) - y)) < 1e-8


def test_masked_outliers_same_error_as_clean(pair):
    x, h, ax = pair
    y = 0.9 * ax + 0.02
    clean = wg.solve_photometric(x, y, (5, 5), gain=True, background_degree=0,
                                 w=np.ones(ax.shape))
    bad = np.random.default_rng(1).random(y.shape) < 0.05
    y_bad = np.where(bad, 1.0, y)
    fit = wg.solve_photometric(x, y_bad, (5, 5), gain=True, background_degree=0,
                               w=(~bad).astype(float))
    e_clean, e_masked = _kernel_error(clean.kernel, h), _kernel_error(fit.kernel, h)
    assert e_masked < max(10 * e_clean, 1e-9)
    assert abs(float(fit.gain) - 0.9) < 1e-8 and abs(float(fit.background[0]) - 0.02) < 1e-8


@pytest.mark.parametrize("noise", [0.0, 3e-4])
def test_huber_irls_with_unmasked_outliers(pair, noise):
    x, h, ax = pair
    r = np.random.default_rng(2)
    y = 0.9 * ax + 0.02 + noise * r.standard_normal(ax.shape)
    y = np.where(r.random(y.shape) < 0.05, 1.0, y)  # 5 % outliers, not masked
    w0 = np.ones(y.shape)
    w = w0
    floor = 1e-6 * (y.max() - y.min())
    errors = []
    for _ in range(10):
        ne = wg.augmented_normal_equations(x, y, (5, 5), w=w, background_degree=0)
        elim = wg.eliminate_background(ne, 1)
        kt = solve_qp(elim.reduced.gram, elim.reduced.rhs, prior="nonneg").solution
        c = wg.recover_background(elim, kt)
        errors.append(_kernel_error(wg.split_gain(kt)[0].reshape(5, 5), h))
        res = y - np.asarray(wg.photometric_model(x, kt.reshape(5, 5), c, background_degree=0))
        res = np.sqrt(w0) * res
        delta = max(wg.HUBER_C * float(wg.robust_scale(res, w0)), floor)
        w = w0 * np.asarray(wg.huber_weights(res, delta))
    assert errors[0] > 0.3  # the plain least-squares fit is ruined by the outliers
    assert errors[-1] <= 1e-2
    assert abs(float(wg.split_gain(kt)[1]) - 0.9) < 1e-2


# --------------------------------------------------------------- robust pieces, masks


def test_huber_weights_and_scale():
    r = jnp.array([0.0, 0.5, -1.0, 3.0, jnp.nan])
    assert np.allclose(wg.huber_weights(r, 1.0), [1.0, 1.0, 1.0, 1 / 3, 0.0])
    z = np.random.default_rng(3).standard_normal(20001) * 2.0
    assert abs(float(wg.robust_scale(z)) - 2.0) < 0.05
    mask = np.ones_like(z)
    mask[:100] = 0
    z[:100] = 1e6
    assert abs(float(wg.robust_scale(z, mask)) - 2.0) < 0.05
    with pytest.raises(ValueError, match="delta"):
        wg.huber_weights(r, 0.0)


def test_saturation_mask_brute_force():
    k, l = 3, 2
    x = np.zeros((6, 7))
    x[2, 3] = 2.0
    x[5, 0] = 1.0  # exactly at the level: saturated
    y = np.zeros((4, 6))
    y[0, 5] = 1.5
    got = np.asarray(wg.saturation_mask(x, y, 1.0, (k, l)))
    want = np.ones_like(got)
    for i in range(4):
        for j in range(6):
            if y[i, j] >= 1.0 or np.any(x[i:i + k, j:j + l] >= 1.0):
                want[i, j] = False
    assert got.dtype == bool and np.array_equal(got, want)
    assert not want[0, 5] and not want[1, 2] and not want[3, 0] and want[0, 0]


def test_nan_mask_and_poisson_weights():
    y = np.array([[1.0, np.nan], [0.0, 4.0]])
    assert np.asarray(wg.nan_mask(y)).tolist() == [[True, False], [True, True]]
    assert np.allclose(wg.poisson_weights(y), [[1.0, 0.0], [0.0, 0.25]])
    assert np.allclose(wg.poisson_weights(y, gain=2.0, read_noise=1.0),
                       [[1 / 1.5, 0.0], [1.0, 1 / 3]])


def test_errors(rng):
    x, y, w = _problem(rng, (20, 23), (3, 3))
    with pytest.raises(ValueError, match="negative"):
        wg.weighted_normal_equations(x, y, -w, (3, 3))
    with pytest.raises(ValueError, match="shape"):
        wg.weighted_normal_equations(x, y, w[:-1], (3, 3))
    with pytest.raises(ValueError, match="NaN"):
        wg.weighted_normal_equations(x, np.full_like(y, np.nan), w, (3, 3))
    with pytest.raises(ValueError, match="unknown background"):
        wg.augmented_normal_equations(x, y, (3, 3), background_degree="quadric")
    with pytest.raises(ValueError, match="at least 0"):
        wg.parse_background(-1)
    with pytest.raises(TypeError, match="background"):
        wg.parse_background(True)
    with pytest.raises(ValueError, match="saturation level"):
        wg.saturation_mask(x, y, -1.0, (3, 3))
    with pytest.raises(ValueError, match="method"):
        wg.weighted_normal_equations(x, y, w, (3, 3), method="im2col")
    assert wg.kernel_tilde_prior("simplex", True) == "nonneg"
    assert wg.kernel_tilde_prior("sum_to_one", True) == "none"
    assert wg.kernel_tilde_prior("simplex", False) == "simplex"


def test_jit_and_vmap_match_loop(rng):
    import jax

    xs, ys, ws = rng.random((3, 12, 12)), rng.random((3, 10, 10)), rng.random((3, 10, 10))
    f = jax.jit(lambda x, y, w: wg.weighted_normal_equations(x, y, w, (3, 3)))
    batched = jax.vmap(f)(xs, ys, ws)
    for i in range(3):
        one = wg.weighted_normal_equations(xs[i], ys[i], ws[i], (3, 3))
        assert np.allclose(batched.gram[i], one.gram, rtol=1e-13, atol=0)
        assert np.allclose(batched.rhs[i], one.rhs, rtol=1e-13, atol=0)


@pytest.mark.parametrize("mode", ["full", "circular"])
def test_other_modes_through_padding(rng, mode):
    """Every mode is the valid convolution of the padded image (jdeconv._geometry.pad)."""
    from jdeconv import _geometry

    x, ks = rng.random((12, 13)), (3, 4)
    out = _geometry.output_shape(x.shape, ks, mode)
    y, w = rng.random(out), rng.random(out)
    A = np.asarray(jdeconv.kernel_operator(x, ks, mode).as_matrix())
    ne = wg.weighted_normal_equations(_geometry.pad(x, ks, mode), y, w, ks)
    assert _rel(ne.gram, A.T @ (w.ravel()[:, None] * A)) < 1e-12
    assert _rel(ne.rhs, A.T @ (w.ravel() * y.ravel())) < 1e-12

"""Tests for jdeconv._gram: normal equations without the im2col matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jdeconv._gram import (
    NormalEquations,
    gram_matrix,
    gram_matvec,
    normal_equations,
    normal_rhs,
    quadratic_value,
)
from jdeconv._geometry import output_shape
import jdeconv

MODES = ("valid", "full", "circular")


# ----------------------------------------------------------------- NumPy reference


def conv(x, h, mode):
    if mode == "circular":
        return scipy.signal.convolve2d(x, h, mode="same", boundary="wrap")
    return scipy.signal.convolve2d(x, h, mode=mode)


def im2col(x, k, l, mode):
    """Explicit A (float64) with A @ h.ravel() == conv(x, h, mode).ravel()."""
    return np.asarray(jdeconv.kernel_operator(np.asarray(x, np.float64), (k, l), mode).as_matrix())


def reference(x, y, k, l, mode):
    A = im2col(x, k, l, mode)
    y = np.asarray(y, np.float64).ravel()
    return A, A.T @ A, A.T @ y, 0.5 * y @ y


def make_problem(rng, m, n, k, l, mode, offset=0.5):
    x = rng.standard_normal((m, n)) + offset  # nonzero mean: the realistic hard case
    h = rng.standard_normal((k, l))
    y = conv(x, h, mode)
    y = y + 0.1 * rng.standard_normal(y.shape)
    return x, y


def rel_err(got, want):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    scale = max(np.abs(want).max(initial=0.0), 1e-300)
    return np.abs(got - want).max(initial=0.0) / scale


# Shapes (m, n, k, l) chosen to cover every code path at a bounded compile cost:
# 1x1; k = m and l = n; k = 1; a single-row image; even/odd/rectangular kernels; the
# "border strips" decomposition and the "small image" decomposition on each axis.
VALID_CASES = [
    (1, 1, 1, 1),
    (5, 7, 5, 7),  # kernel == image (small-image path on both axes)
    (9, 4, 1, 4),  # k = 1, l = n
    (12, 11, 4, 3),  # strips on both axes
    (6, 13, 4, 6),  # rows: small-image path, columns: strips
    (13, 6, 6, 4),  # rows: strips, columns: small-image path
    (16, 15, 2, 8),  # even kernel; N just above l - 1
]
FULL_CASES = [(1, 1, 1, 1), (5, 7, 3, 2), (4, 3, 6, 5)]  # incl. kernel larger than image
CIRC_CASES = [(6, 7, 6, 7), (6, 9, 3, 4), (8, 5, 2, 1)]  # incl. even k = m
ALL_CASES = (
    [(c, "valid") for c in VALID_CASES]
    + [(c, "full") for c in FULL_CASES]
    + [(c, "circular") for c in CIRC_CASES]
)

_settings = settings(
    deadline=None,
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def test_reference_matches_scipy():
    rng = np.random.default_rng(0)
    for (m, n, k, l), mode in ALL_CASES:
        x = rng.standard_normal((m, n))
        h = rng.standard_normal((k, l))
        A = im2col(x, k, l, mode)
        np.testing.assert_allclose(A @ h.ravel(), conv(x, h, mode).ravel(), atol=1e-12)
        assert conv(x, h, mode).shape == output_shape((m, n), (k, l), mode)


# ------------------------------------------------------------- exactness (float64)


@_settings
@given(case=st.sampled_from(ALL_CASES), seed=st.integers(0, 2**32 - 1))
def test_matches_im2col_float64(case, seed):
    (m, n, k, l), mode = case
    rng = np.random.default_rng(seed)
    x, y = make_problem(rng, m, n, k, l, mode)
    A, G, b, c = reference(x, y, k, l, mode)
    ne = normal_equations(jnp.asarray(x), jnp.asarray(y), (k, l), mode)
    assert isinstance(ne, NormalEquations)
    assert ne.gram.shape == (k * l, k * l) and ne.rhs.shape == (k * l,) and ne.half_yy.shape == ()
    assert ne.gram.dtype == ne.rhs.dtype == ne.half_yy.dtype == jnp.float64
    assert rel_err(ne.gram, G) < 1e-12
    assert rel_err(ne.rhs, b) < 1e-12
    assert abs(float(ne.half_yy) - c) <= 1e-12 * c
    np.testing.assert_array_equal(np.asarray(ne.gram), np.asarray(ne.gram).T)
    # the quadratic from the normal equations is the least-squares loss
    h = rng.standard_normal(k * l)
    loss = 0.5 * np.sum((A @ h - y.ravel()) ** 2)
    scale = 0.5 * (np.abs(h) @ np.abs(G) @ np.abs(h)) + np.abs(b) @ np.abs(h) + c
    assert abs(float(quadratic_value(ne, jnp.asarray(h))) - loss) <= 1e-12 * scale
    assert abs(float(quadratic_value(ne, jnp.asarray(h.reshape(k, l)))) - loss) <= 1e-12 * scale


@settings(deadline=None, max_examples=5, derandomize=True)
@given(data=st.data())
def test_random_valid_shapes(data):
    m = data.draw(st.integers(1, 24), label="m")
    n = data.draw(st.integers(1, 24), label="n")
    k = data.draw(st.integers(1, m), label="k")
    l = data.draw(st.integers(1, n), label="l")
    rng = np.random.default_rng(m * 1000 + n * 100 + k * 10 + l)
    x, y = make_problem(rng, m, n, k, l, "valid")
    _, G, b, c = reference(x, y, k, l, "valid")
    ne = normal_equations(jnp.asarray(x), jnp.asarray(y), (k, l))
    assert rel_err(ne.gram, G) < 1e-12
    assert rel_err(ne.rhs, b) < 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_rhs_direct_and_fft_agree(mode):
    rng = np.random.default_rng(1)
    m, n, k, l = (12, 11, 4, 3)
    x, y = make_problem(rng, m, n, k, l, mode)
    _, _, b, _ = reference(x, y, k, l, mode)
    bd = normal_rhs(jnp.asarray(x), jnp.asarray(y), (k, l), mode, rhs_method="direct")
    bf = normal_rhs(jnp.asarray(x), jnp.asarray(y), (k, l), mode, rhs_method="fft")
    assert rel_err(bd, b) < 1e-12
    assert rel_err(bf, b) < 1e-12
    if mode == "valid":
        G = gram_matrix(jnp.asarray(x), (k, l), mode)
        assert rel_err(G, im2col(x, k, l, mode).T @ im2col(x, k, l, mode)) < 1e-12


@pytest.mark.parametrize("mode", ["valid", "full"])
def test_large_image_paths_equal_im2col(mode, monkeypatch):
    """Large images take other paths: the border correlations a few rows at a time,
    the corner terms one block at a time, the lags by a partial inverse DFT. With the
    thresholds lowered, a small problem takes them all (the chunks with a remainder
    of rows), and gives im2col's normal equations."""
    from jdeconv import _conv, _gram

    rng = np.random.default_rng(3)
    m, n, k, l = (16, 15, 6, 5)  # 5 border rows and 4 border columns per side
    x, y = make_problem(rng, m, n, k, l, mode)
    _, G, b, _ = reference(x, y, k, l, mode)
    # the spectra of one border row against 2k - 1 lags, for both blocks
    per_row = 2 * (2 * k - 1) * (_conv.fast_len(n + 2 * l - 2) // 2 + 1) * 16
    # rows (at their k lags dp <= 0) 3 + 2 at a time; columns one at a time
    monkeypatch.setattr(_gram, "_BORDER_BYTES", 2 * per_row)
    monkeypatch.setattr(_gram, "_CORNER_BYTES", 0)
    monkeypatch.setattr(_gram, "_PARTIAL_DFT_POINTS", 0)
    # a fresh jit: the thresholds are read when the program is traced
    ne = jax.jit(_gram.normal_equations_impl, static_argnums=(2, 3))(
        jnp.asarray(x), jnp.asarray(y), (k, l), mode)
    assert rel_err(ne.gram, G) < 1e-12
    assert rel_err(ne.rhs, b) < 1e-12


# ------------------------------------------------------------------------ float32

F32_CASES = [((12, 11, 4, 3), "valid"), ((6, 13, 4, 6), "valid"), ((5, 7, 3, 2), "full"),
             ((6, 9, 3, 4), "circular")]


@pytest.mark.parametrize("case", F32_CASES)
def test_float32_small(case):
    (m, n, k, l), mode = case
    rng = np.random.default_rng(2)
    x, y = make_problem(rng, m, n, k, l, mode, offset=3.0)
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    ne = normal_equations(x32, y32, (k, l), mode)
    assert ne.gram.dtype == ne.rhs.dtype == ne.half_yy.dtype == jnp.float32
    # reference from the float32-rounded data, so only the algorithm's error is measured
    _, G, b, c = reference(np.asarray(x32), np.asarray(y32), k, l, mode)
    assert rel_err(ne.gram, G) < 1e-5
    assert rel_err(ne.rhs, b) < 1e-5
    assert abs(float(ne.half_yy) - c) <= 1e-5 * c


def test_float32_medium_accuracy():
    """Bigger image, large mean: entries within ~1e-6 of max|G| (FFT + border terms)."""
    rng = np.random.default_rng(3)
    m, n, k, l = 150, 130, 9, 7
    x = rng.random((m, n)) * 255.0
    y = conv(x, rng.random((k, l)), "valid")
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    _, G, b, _ = reference(np.asarray(x32), np.asarray(y32), k, l, "valid")
    ne = normal_equations(x32, y32, (k, l))  # float32, #y > 4096: FFT right-hand side
    assert ne.gram.dtype == jnp.float32
    assert rel_err(ne.gram, G) < 2e-6
    assert rel_err(ne.rhs, b) < 2e-6
    assert rel_err(normal_rhs(x32, y32, (k, l), rhs_method="direct"), b) < 1e-5


# ----------------------------------------------------------------- transformations


def test_jit_equals_nojit():
    rng = np.random.default_rng(4)
    # one valid case with border strips on both axes (eager mode is slow to dispatch)
    for (m, n, k, l), mode in [((6, 5, 2, 2), "valid")]:
        x, y = make_problem(rng, m, n, k, l, mode)
        ne = normal_equations(jnp.asarray(x), jnp.asarray(y), (k, l), mode)
        with jax.disable_jit():
            ne2 = normal_equations(jnp.asarray(x), jnp.asarray(y), (k, l), mode)
        for a, b in zip(ne, ne2):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-13 * np.abs(np.asarray(a)).max())
        # usable inside user code that is itself jitted with static shape/mode
        f = jax.jit(normal_equations, static_argnames=("kernel_shape", "mode"))
        ne3 = f(jnp.asarray(x), jnp.asarray(y), kernel_shape=(k, l), mode=mode)
        for a, b in zip(ne, ne3):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14)


@pytest.mark.parametrize("mode", ["valid", "full"])
def test_vmap_equals_loop(mode):
    rng = np.random.default_rng(5)
    m, n, k, l = 12, 11, 4, 3
    xs, ys = zip(*(make_problem(rng, m, n, k, l, mode) for _ in range(3)))
    xs, ys = jnp.asarray(np.stack(xs)), jnp.asarray(np.stack(ys))
    batched = jax.vmap(lambda x, y: normal_equations(x, y, (k, l), mode))(xs, ys)
    assert batched.gram.shape == (3, k * l, k * l)
    for i in range(3):
        one = normal_equations(xs[i], ys[i], (k, l), mode)
        for a, b in zip(batched, one):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-12, atol=1e-12 * np.abs(np.asarray(b)).max())


def test_pytree_and_grad():
    rng = np.random.default_rng(6)
    x, y = make_problem(rng, 12, 11, 4, 3, "valid")
    ne = normal_equations(jnp.asarray(x), jnp.asarray(y), (4, 3))
    leaves = jax.tree_util.tree_leaves(ne)
    assert len(leaves) == 3
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, ne)
    assert isinstance(doubled, NormalEquations)
    # gradient of the quadratic is G h - b
    h = jnp.asarray(rng.standard_normal(12))
    g = jax.grad(lambda h: quadratic_value(ne, h))(h)
    np.testing.assert_allclose(np.asarray(g), np.asarray(ne.gram @ h - ne.rhs), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_gram_matvec(mode):
    rng = np.random.default_rng(7)
    m, n, k, l = 9, 10, 3, 4
    x = rng.standard_normal((m, n))
    h = rng.standard_normal((k, l))
    A = im2col(x, k, l, mode)
    got = gram_matvec(jnp.asarray(x), jnp.asarray(h), mode)
    assert got.shape == (k, l)
    assert rel_err(np.asarray(got).ravel(), A.T @ (A @ h.ravel())) < 1e-12


# ---------------------------------------------------------------------------- errors


def test_errors():
    x = jnp.ones((5, 6))
    with pytest.raises(ValueError, match="mode"):
        normal_equations(x, x, (2, 2), mode="sam")
    with pytest.raises(ValueError, match="larger than the image"):
        gram_matrix(x, (6, 2), "valid")
    with pytest.raises(ValueError, match="larger than the image"):
        gram_matrix(x, (2, 7), "circular")
    with pytest.raises(ValueError, match="expected"):
        normal_equations(x, jnp.ones((5, 6)), (2, 2), "valid")
    with pytest.raises(ValueError, match="2-D"):
        gram_matrix(jnp.ones((2, 5, 6)), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        gram_matrix(x, (0, 2))
    assert output_shape((5, 6), (2, 3), "full") == (6, 8)

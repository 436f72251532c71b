"""Forward model of kernel fields: adjoints, reduction to conv2d, the per-pixel formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

import jdeconv
from jdeconv import _field_conv as fc

# Small fixed shape sets: every new combination compiles.
IMAGE_SHAPES = [(24, 24), (30, 28)]
KERNEL_SHAPES = [(3, 3), (4, 5)]
GRIDS = [(1, 1), (2, 2), (2, 3)]
MODES = ["valid", "same", "full", "circular"]


@st.composite
def fields(draw):
    """(image shape, field shape, mode, seed)."""
    ishape = draw(st.sampled_from(IMAGE_SHAPES))
    kshape = draw(st.sampled_from(KERNEL_SHAPES))
    grid = draw(st.sampled_from(GRIDS))
    mode = draw(st.sampled_from(MODES))
    return ishape, grid + kshape, mode, draw(st.integers(0, 2**16))


def _draw(seed, ishape, fshape):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(ishape), rng.standard_normal(fshape), rng


@settings(max_examples=5)
@given(fields())
def test_adjoints_dot_test_and_vjp(problem):
    ishape, fshape, mode, seed = problem
    x, H, rng = _draw(seed, ishape, fshape)
    jdeconv.dottest(fc.kernel_field_operator(x, fshape, mode), seed=seed)
    jdeconv.dottest(fc.image_field_operator(H, ishape, mode), seed=seed)
    y, vjp = jax.vjp(lambda a, b: fc.conv2d_field(a, b, mode), jnp.asarray(x), jnp.asarray(H))
    r = rng.standard_normal(y.shape)
    gx, gH = vjp(jnp.asarray(r))
    np.testing.assert_allclose(fc.conv2d_field_adjoint_image(H, r, ishape, mode), gx,
                               atol=1e-11 * np.abs(gx).max(), rtol=0)
    np.testing.assert_allclose(fc.conv2d_field_adjoint_kernels(x, r, fshape, mode), gH,
                               atol=1e-11 * np.abs(gH).max(), rtol=0)


@settings(max_examples=5)
@given(fields())
def test_uniform_field_is_conv2d(problem):
    ishape, fshape, mode, seed = problem
    x, H, _ = _draw(seed, ishape, fshape)
    h = H[0, 0]
    y = fc.conv2d_field(x, np.broadcast_to(h, fshape), mode)
    ref = jdeconv.conv2d(x, h, mode)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-12 * np.abs(ref).max(), rtol=0)


@settings(max_examples=4)
@given(fields())
def test_linear_in_kernels_and_image(problem):
    ishape, fshape, mode, seed = problem
    x, H, rng = _draw(seed, ishape, fshape)
    x2, H2 = rng.standard_normal(ishape), rng.standard_normal(fshape)
    a, b = rng.standard_normal(2)
    f = lambda xx, hh: np.asarray(fc.conv2d_field(xx, hh, mode))
    scale = np.abs(f(x, H)).max() + np.abs(f(x, H2)).max() + np.abs(f(x2, H)).max()
    np.testing.assert_allclose(f(x, a * H + b * H2), a * f(x, H) + b * f(x, H2),
                               atol=1e-12 * scale * (abs(a) + abs(b)), rtol=0)
    np.testing.assert_allclose(f(a * x + b * x2, H), a * f(x, H) + b * f(x2, H),
                               atol=1e-12 * scale * (abs(a) + abs(b)), rtol=0)


def _scipy_conv(x, h, mode):
    if mode == "circular":
        return scipy.signal.convolve2d(x, h, mode="same", boundary="wrap")
    return scipy.signal.convolve2d(x, h, mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_matches_per_pixel_interpolated_kernel(mode):
    # y[p] = (h_p * x)[p] with h_p the bilinear interpolation of the grid at p's
    # centre-tap position, written out pixel by pixel with scipy.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((13, 11))
    H = rng.random((2, 3, 3, 4))
    centres = (np.array([2.0, 9.5]), np.array([1.0, 4.0, 8.0]))
    y = np.asarray(fc.conv2d_field(x, H, mode, centres=centres))
    (top, _), (left, _) = jdeconv._geometry.padding((3, 4), mode)
    ref = np.zeros_like(y)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            u, v = i + 2 - 1 - top, j + 3 - 1 - left  # k-1-ck = 1, l-1-cl = 2
            a = np.interp(u, centres[0], [1, 0]), np.interp(u, centres[0], [0, 1])
            b = [np.interp(v, centres[1], e) for e in np.eye(3)]
            hp = sum(a[s] * b[t] * H[s, t] for s in range(2) for t in range(3))
            ref[i, j] = _scipy_conv(x, hp, mode)[i, j]
    np.testing.assert_allclose(y, ref, atol=1e-12, rtol=0)


def test_weights_partition_of_unity_and_centres():
    ishape, kshape, grid = (30, 28), (4, 5), (2, 3)
    w = np.asarray(fc.field_weights(ishape, kshape, grid, "same"))
    assert w.shape == (2, 3, 30, 28)
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=(0, 1)), 1.0, atol=1e-15)
    rows, cols = fc.tile_centres(ishape, grid)
    np.testing.assert_allclose(cols, [4.16666667, 13.5, 22.83333333])
    # "same": output pixel p sits at image position p; integer centres get weight 1.
    rows, cols = np.round(rows).astype(int), np.round(cols).astype(int)
    wi = fc.field_weights(ishape, kshape, grid, "same",
                          centres=(rows.astype(float), cols.astype(float)))
    for s in range(2):
        for t in range(3):
            assert float(wi[s, t, rows[s], cols[t]]) == 1.0
    # clamped outside the outermost centres: the corner pixel belongs to tile (0, 0)
    assert float(w[0, 0, 0, 0]) == 1.0 and float(w[1, 2, -1, -1]) == 1.0


def test_jit_vmap_and_float32():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((3, 24, 24)).astype(np.float32)
    H = rng.random((2, 2, 3, 3)).astype(np.float32)
    centres = tuple(jnp.asarray(c, jnp.float32) for c in fc.tile_centres((24, 24), (2, 2)))
    f = jax.jit(jax.vmap(lambda x, c0: fc.conv2d_field(x, H, "same", centres=(c0, centres[1])),
                         in_axes=(0, None)))
    ys = f(xs, centres[0])
    assert ys.shape == (3, 24, 24) and ys.dtype == np.float32
    for x, y in zip(xs, ys):
        np.testing.assert_allclose(y, fc.conv2d_field(x, H, "same"), atol=2e-5, rtol=0)


@pytest.mark.parametrize("call, match", [
    (lambda: fc.conv2d_field(np.ones((8, 8)), np.ones((4, 3, 3))), "4-D array"),
    (lambda: fc.conv2d_field(np.ones((8, 8)), np.ones((9, 2, 3, 3)), "same"), "grid"),
    (lambda: fc.conv2d_field(np.ones((8, 8)), np.ones((2, 2, 9, 3))), "larger than the image"),
    (lambda: fc.conv2d_field(np.ones((8, 8)), np.ones((2, 2, 3, 3)), "vallid"), "valid"),
    (lambda: fc.conv2d_field(np.ones((8, 8)), np.ones((2, 2, 3, 3)),
                             centres=([1.0, 2.0, 3.0], [1.0, 2.0])), "row centre"),
    (lambda: fc.conv2d_field(np.ones((8, 8)), np.ones((2, 2, 3, 3)),
                             centres=([3.0, 1.0], [1.0, 2.0])), "strictly increasing"),
    (lambda: fc.conv2d_field_adjoint_kernels(np.ones((8, 8)), np.ones((8, 8)), (2, 2, 3, 3)),
     "pass a residual"),
    (lambda: fc.conv2d_field_adjoint_kernels(np.ones((8, 8)), np.ones((6, 6)), (2, 3, 3)),
     "field_shape"),
    (lambda: fc.conv2d_field_adjoint_image(np.ones((2, 2, 3, 3)), np.ones((6, 5)), (8, 8)),
     "pass a residual"),
    (lambda: fc.kernel_field_operator(np.ones((8, 8)), (2, 2, 3, 3)).matvec(jnp.ones((2, 2, 3, 2))),
     "Dimension mismatch"),
])
def test_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_as_matrix_is_the_operator():
    # the dense matrices (jdeconv._operators._dense, shared with the single-kernel operators)
    rng = np.random.default_rng(1)
    x, H = rng.standard_normal((10, 12)), rng.standard_normal((2, 3, 3, 3))
    A = fc.kernel_field_operator(x, H.shape, "same")
    np.testing.assert_allclose(np.asarray(A.as_matrix()) @ H.ravel(),
                               np.asarray(A.matvec(jnp.asarray(H))).ravel(), atol=1e-12)
    B = fc.image_field_operator(H, x.shape, "valid")
    np.testing.assert_allclose(np.asarray(B.as_matrix()) @ x.ravel(),
                               np.asarray(B.matvec(jnp.asarray(x))).ravel(), atol=1e-12)

"""jdeconv._geometry: padding, cropping, output shapes and the same -> valid reduction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

import jdeconv
from jdeconv import _geometry

MODES = ["valid", "same", "full", "circular"]
SHAPES = [((7, 6), (3, 4)), ((8, 9), (4, 1)), ((5, 5), (5, 5))]

# jitted: one compiled program per case (eager calls compile every primitive separately)
pad = jax.jit(_geometry.pad, static_argnums=(1, 2))
pad_transpose = jax.jit(_geometry.pad_transpose, static_argnums=(1, 2, 3))


def scipy_conv(x, h, mode):
    if mode == "circular":
        return scipy.signal.convolve2d(x, h, mode="same", boundary="wrap")
    return scipy.signal.convolve2d(x, h, mode=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ishape, kshape", SHAPES)
def test_every_mode_is_valid_convolution_of_the_padded_image(mode, ishape, kshape):
    rng = np.random.default_rng(0)
    x, h = rng.random(ishape), rng.random(kshape)
    ref = scipy_conv(x, h, mode)
    assert _geometry.output_shape(ishape, kshape, mode) == ref.shape
    xp = np.asarray(pad(x, kshape, mode))
    (top, bottom), (left, right) = _geometry.padding(kshape, mode)
    assert xp.shape == (ishape[0] + top + bottom, ishape[1] + left + right)
    np.testing.assert_allclose(scipy.signal.convolve2d(xp, h, mode="valid"), ref, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ishape, kshape", SHAPES)
def test_pad_transpose_is_the_adjoint_of_pad(mode, ishape, kshape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(ishape)
    xp = np.asarray(pad(x, kshape, mode))
    z = rng.standard_normal(xp.shape)
    back = np.asarray(pad_transpose(jnp.asarray(z), ishape, kshape, mode))
    assert back.shape == ishape
    assert np.vdot(xp, z) == pytest.approx(np.vdot(x, back), rel=1e-12)


def test_pad_acts_on_the_last_two_axes():
    x = np.random.default_rng(2).random((3, 5, 6))
    for mode in MODES:
        p = np.asarray(_geometry.pad(x, (3, 2), mode))
        assert p.shape[0] == 3
        np.testing.assert_array_equal(p[1], np.asarray(_geometry.pad(x[1], (3, 2), mode)))


@pytest.mark.parametrize("kshape", [(1, 1), (3, 3), (4, 2), (5, 6)])
def test_centre_is_scipys(kshape):
    k, l = kshape
    assert _geometry.centre(kshape) == ((k - 1) // 2, (l - 1) // 2)
    # a delta at the centre tap is the identity in "same" and "circular" mode
    h = np.zeros(kshape)
    h[_geometry.centre(kshape)] = 1.0
    x = np.random.default_rng(3).random((8, 9))
    np.testing.assert_allclose(jdeconv.conv2d(x, h, "same"), x, atol=1e-15)
    np.testing.assert_allclose(jdeconv.conv2d(x, h, "circular"), x, atol=1e-15)


@pytest.mark.parametrize("kshape", [(3, 3), (4, 2), (1, 5), (6, 6)])
def test_same_to_valid_is_the_part_the_valid_model_explains(kshape):
    rng = np.random.default_rng(4)
    x, h = rng.random((10, 9)), rng.random(kshape)
    same = np.asarray(jdeconv.conv2d(x, h, "same"))
    valid = np.asarray(jdeconv.conv2d(x, h, "valid"))
    np.testing.assert_allclose(np.asarray(_geometry.same_to_valid(same, kshape)), valid, atol=1e-12)
    rows, cols = _geometry.valid_window((10, 9), kshape, "same")
    np.testing.assert_allclose(same[rows, cols], valid, atol=1e-12)
    # batched: last two axes
    stacked = np.stack([same, 2 * same])
    np.testing.assert_allclose(np.asarray(_geometry.same_to_valid(stacked, kshape))[1], 2 * valid,
                               atol=1e-12)


@pytest.mark.parametrize("mode", ["valid", "full", "circular"])
def test_valid_window_is_everything_outside_same_mode(mode):
    rows, cols = _geometry.valid_window((10, 9), (3, 4), mode)
    assert (rows.stop - rows.start, cols.stop - cols.start) == \
        _geometry.output_shape((10, 9), (3, 4), mode)
    assert rows.start == cols.start == 0


def test_solver_mode():
    assert _geometry.solver_mode("same") == "valid"
    for mode in ("valid", "full", "circular"):
        assert _geometry.solver_mode(mode) == mode


def test_output_shapes():
    assert _geometry.output_shape((5, 6), (2, 3), "valid") == (4, 4)
    assert _geometry.output_shape((5, 6), (2, 3), "full") == (6, 8)
    assert _geometry.output_shape((5, 6), (2, 3), "same") == (5, 6)
    assert _geometry.output_shape((5, 6), (2, 3), "circular") == (5, 6)
    assert _geometry.output_shape((4, 5, 6), (2, 3), "valid") == (4, 4)  # last two axes

"""jdeconv._conv: the forward model and its adjoints (scipy agreement, autodiff, batching)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

import jdeconv
from _helpers import MODES, conv_problems, random_array, tol


def scipy_conv(x, h, mode):
    if mode == "circular":
        return scipy.signal.convolve2d(x, h, mode="same", boundary="wrap")
    return scipy.signal.convolve2d(x, h, mode=mode)


@settings(max_examples=15)
@given(conv_problems(), st.sampled_from(["direct", "fft"]))
def test_matches_scipy(problem, method):
    ishape, kshape, mode, dtype, seed = problem
    rng = np.random.default_rng(seed)
    x, h = random_array(rng, ishape, dtype), random_array(rng, kshape, dtype)
    y = jdeconv.conv2d(x, h, mode, method=method)
    ref = scipy_conv(x.astype(np.float64), h.astype(np.float64), mode)
    assert y.shape == ref.shape and y.dtype == dtype
    scale = np.abs(x).max() * np.abs(h).sum()
    np.testing.assert_allclose(y, ref, atol=tol(dtype) * scale * 10, rtol=0)


@functools.partial(jax.jit, static_argnames=("mode", "method"))
def _adjoints(x, h, r, mode, method):
    """(vjp wrt x, vjp wrt h, closed-form kernel adjoint, closed-form image adjoint)."""
    _, vjp = jax.vjp(lambda x, h: jdeconv.conv2d(x, h, mode, method=method), x, h)
    vx, vh = vjp(r)
    gh = jdeconv.conv2d_adjoint_kernel(x, r, h.shape, mode, method=method)
    gx = jdeconv.conv2d_adjoint_image(h, r, x.shape, mode, method=method)
    return vx, vh, gh, gx


@settings(max_examples=6)  # each example compiles its own program
@given(conv_problems(), st.sampled_from(["direct", "fft"]))
def test_closed_form_adjoints_equal_vjp(problem, method):
    ishape, kshape, mode, dtype, seed = problem
    rng = np.random.default_rng(seed)
    x, h = random_array(rng, ishape, dtype), random_array(rng, kshape, dtype)
    r = random_array(rng, jdeconv.conv2d(x, h, mode).shape, dtype)
    vx, vh, gh, gx = _adjoints(x, h, r, mode, method)
    scale = np.abs(r).sum() * max(np.abs(x).max(), np.abs(h).max())
    np.testing.assert_allclose(gh, vh, atol=tol(dtype) * scale, rtol=0)
    np.testing.assert_allclose(gx, vx, atol=tol(dtype) * scale, rtol=0)


@settings(max_examples=15)
@given(conv_problems())
def test_linearity_in_both_arguments(problem):
    ishape, kshape, mode, dtype, seed = problem
    rng = np.random.default_rng(seed)
    x1, x2 = random_array(rng, ishape, dtype), random_array(rng, ishape, dtype)
    h1, h2 = random_array(rng, kshape, dtype), random_array(rng, kshape, dtype)
    a, b = 0.7, -1.3

    def c(x, h):
        return np.asarray(jdeconv.conv2d(x, h, mode), np.float64)

    scale = 10 * tol(dtype) * (np.abs(x1).max() + np.abs(x2).max()) * (np.abs(h1).sum() + np.abs(h2).sum())
    np.testing.assert_allclose(c(x1, a * h1 + b * h2), a * c(x1, h1) + b * c(x1, h2), atol=scale)
    np.testing.assert_allclose(c(a * x1 + b * x2, h1), a * c(x1, h1) + b * c(x2, h1), atol=scale)


@pytest.mark.parametrize("kshape", [(1, 1), (3, 3), (4, 6), (5, 2)])
def test_delta_image_returns_the_kernel(kshape):
    k, l = kshape
    h = np.random.default_rng(1).random(kshape)
    x = np.zeros((2 * k - 1, 2 * l - 1))
    x[k - 1, l - 1] = 1.0
    np.testing.assert_allclose(jdeconv.conv2d(x, h, "valid"), h, atol=1e-14)
    np.testing.assert_array_equal(jdeconv.conv2d(x, h, "valid", method="direct"), h)
    # In 'full' mode a delta anywhere places the kernel there.
    x = np.zeros((9, 9))
    x[2, 3] = 1.0
    np.testing.assert_allclose(jdeconv.conv2d(x, h, "full")[2:2 + k, 3:3 + l], h, atol=1e-15)


@pytest.mark.parametrize("mode", MODES)
def test_not_commutative_and_kernel_larger_than_image(mode):
    x = np.random.default_rng(2).random((6, 7))
    h = np.random.default_rng(3).random((3, 2))
    y = jdeconv.conv2d(x, h, mode)
    assert y.shape == {"valid": (4, 6), "same": (6, 7), "full": (8, 8), "circular": (6, 7)}[mode]
    if mode in ("same", "full"):  # allowed: kernel larger than the image
        big = jdeconv.conv2d(h, x, mode)
        np.testing.assert_allclose(big, scipy.signal.convolve2d(h, x, mode=mode), atol=1e-12)


def test_same_mode_even_kernel_follows_scipy_and_matlab_is_one_pixel_later():
    """The module docstring's claim: scipy's centre; MATLAB's 'same' is full[k//2:, l//2:]."""
    rng = np.random.default_rng(8)
    x, h = rng.random((7, 6)), rng.random((4, 2))
    same = np.asarray(jdeconv.conv2d(x, h, "same"))
    full = np.asarray(jdeconv.conv2d(x, h, "full"))
    np.testing.assert_allclose(same, scipy.signal.convolve2d(x, h, mode="same"), atol=1e-12)
    np.testing.assert_allclose(same, full[(4 - 1) // 2:(4 - 1) // 2 + 7, 0:6], atol=1e-12)
    matlab = full[4 // 2:4 // 2 + 7, 2 // 2:2 // 2 + 6]
    assert not np.allclose(same, matlab)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_vmap_equals_loop_and_jit_equals_nojit(mode, method):
    rng = np.random.default_rng(4)
    xs, hs = rng.standard_normal((5, 9, 8)), rng.standard_normal((5, 3, 4))

    def f(x, h):
        return jdeconv.conv2d(x, h, mode, method=method)

    batched = jax.vmap(f)(xs, hs)
    looped = np.stack([f(x, h) for x, h in zip(xs, hs)])
    np.testing.assert_allclose(batched, looped, atol=1e-12)
    np.testing.assert_allclose(jax.jit(f)(xs[0], hs[0]), f(xs[0], hs[0]), atol=1e-12)
    r = rng.standard_normal((5,) + looped.shape[1:])
    adj = jax.vmap(lambda x, r: jdeconv.conv2d_adjoint_kernel(x, r, (3, 4), mode, method=method))(xs, r)
    np.testing.assert_allclose(
        adj, np.stack([jdeconv.conv2d_adjoint_kernel(x, q, (3, 4), mode) for x, q in zip(xs, r)]),
        atol=1e-11)


def test_integer_images_are_converted_without_overflow():
    x = np.full((5, 5), 255, dtype=np.uint8)
    h = np.full((3, 3), 200, dtype=np.uint8)
    y = jdeconv.conv2d(x, h)
    assert jnp.issubdtype(y.dtype, jnp.floating)
    np.testing.assert_allclose(y, 255.0 * 200.0 * 9.0)


def test_float32_stays_float32():
    x = np.ones((5, 5), np.float32)
    assert jdeconv.conv2d(x, np.ones((2, 2), np.float32)).dtype == np.float32
    assert jdeconv.conv2d_adjoint_kernel(x, np.ones((4, 4), np.float32), 2).dtype == np.float32
    assert jdeconv.conv2d_adjoint_image(np.ones((2, 2), np.float32), np.ones((4, 4), np.float32),
                                        (5, 5)).dtype == np.float32


@pytest.mark.parametrize("call, match", [
    (lambda: jdeconv.conv2d(np.ones((4, 4, 3)), np.ones((2, 2))), "2-D array"),
    (lambda: jdeconv.conv2d(np.ones((4, 4)), np.ones(3)), "2-D array"),
    (lambda: jdeconv.conv2d(np.ones((4, 4)), np.ones((5, 2))), r"larger than the image shape \(4, 4\)"),
    (lambda: jdeconv.conv2d(np.ones((4, 4)), np.ones((2, 5)), "circular"), "larger than the image"),
    (lambda: jdeconv.conv2d(np.ones((0, 4)), np.ones((1, 1))), "empty"),
    (lambda: jdeconv.conv2d(np.full((4, 4), np.nan), np.ones((2, 2))), "NaN or infinite"),
    (lambda: jdeconv.conv2d(np.ones((4, 4)), np.array([[np.inf]])), "NaN or infinite"),
    (lambda: jdeconv.conv2d(np.ones((4, 4)), np.ones((2, 2)), "vaild"), "Did you mean 'valid'"),
    (lambda: jdeconv.conv2d(np.ones((4, 4)), np.ones((2, 2)), method="fast"), "unknown method"),
    (lambda: jdeconv.conv2d_adjoint_kernel(np.ones((4, 4)), np.ones((2, 2)), 2), r"r has shape \(2, 2\)"),
    (lambda: jdeconv.conv2d_adjoint_kernel(np.ones((4, 4)), np.ones((3, 3)), 0), "non-positive"),
    (lambda: jdeconv.conv2d_adjoint_image(np.ones((2, 2)), np.ones((2, 2)), (4, 4)), r"expected|has shape"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call", [
    lambda: jdeconv.conv2d(np.ones((4, 4), complex), np.ones((2, 2))),
    lambda: jdeconv.conv2d(np.array([["a", "b"], ["c", "d"]]), np.ones((1, 1))),
    lambda: jdeconv.conv2d_adjoint_kernel(np.ones((4, 4)), np.ones((3, 3)), "3x3"),
])
def test_bad_types_raise_type_error(call):
    with pytest.raises(TypeError):
        call()


def test_fast_len_is_the_smallest_even_5_smooth_length():
    from jdeconv._conv import fast_len
    assert [fast_len(n) for n in (1, 2, 7, 263, 269, 526)] == [1, 2, 8, 270, 270, 540]


@pytest.mark.parametrize("mode", MODES)
def test_fft_at_lengths_with_large_prime_factors_matches_scipy(mode):
    # 37 + 7 - 1 = 43 and 29 + 3 - 1 = 31 are prime: the transform is padded to 48 x 32
    rng = np.random.default_rng(7)
    x, h = rng.standard_normal((37, 29)), rng.standard_normal((7, 3))
    y = jdeconv.conv2d(x, h, mode, method="fft")
    np.testing.assert_allclose(y, scipy_conv(x, h, mode), atol=1e-12)
    r = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        jdeconv.conv2d_adjoint_kernel(x, r, h.shape, mode, method="fft"),
        jdeconv.conv2d_adjoint_kernel(x, r, h.shape, mode, method="direct"), atol=1e-11)
